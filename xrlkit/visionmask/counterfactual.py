"""Counterfactual tests with per-action masks.

For a state ``s`` with the agent's action ``a*`` and an alternative ``a'``:

1. *keep* ``m_{a'}``: ``x = m_{a'} * s + (1 - m_{a'}) * r`` -- only what the mask of ``a'``
   keeps survives; if the mask captures the evidence for ``a'``, the agent should now pick ``a'``;
2. *remove* ``m_{a*}``: ``x = (1 - m_{a*}) * s + m_{a*} * r`` -- the evidence for ``a*`` is
   replaced by the reference; the agent should no longer pick ``a*``.

``explainer`` is anything with ``explain(states) -> masks [B, K, 84, 84]`` in [0, 1] (a
:class:`~xrlkit.visionmask.model.VisionMask`); the reference defaults to the explainer's own
(``explainer.reference``), else ``black``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xrlkit.references import make_reference


@dataclass
class Counterfactual:
    """Results for a batch of B states (probabilities are softmaxes of the agent's logits)."""

    action: np.ndarray  # int64 [B], a* on the original state
    alternative: np.ndarray  # int64 [B], a'
    probs: np.ndarray  # float [B, A] on s
    probs_keep_alt: np.ndarray  # float [B, A] on s with only m_{a'} kept
    probs_remove_action: np.ndarray  # float [B, A] on s with m_{a*} removed
    action_keep_alt: np.ndarray  # int64 [B], argmax after keeping m_{a'}
    action_remove_action: np.ndarray  # int64 [B], argmax after removing m_{a*}

    @property
    def flipped_to_alt(self) -> np.ndarray:
        """bool [B]: keeping only ``m_{a'}`` makes the agent pick ``a'``."""
        return self.action_keep_alt == self.alternative

    @property
    def flipped_away(self) -> np.ndarray:
        """bool [B]: removing ``m_{a*}`` makes the agent pick something other than ``a*``."""
        return self.action_remove_action != self.action


def _reference(explainer: Any, states: torch.Tensor, reference: str | None, background: torch.Tensor | None) -> torch.Tensor:
    if reference is None and hasattr(explainer, "reference"):
        return explainer.reference(states)
    return make_reference(states, reference or "black", background)


@torch.no_grad()
def counterfactual(
    agent: Any,
    explainer: Any,
    states: np.ndarray | torch.Tensor,
    alternatives: np.ndarray | torch.Tensor,
    reference: str | None = None,
    background: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Counterfactual:
    """Both counterfactuals for ``states [B, 4, 84, 84]`` (uint8 / float in [0, 255]) and
    alternative actions ``alternatives int [B]``; ``masks [B, K, 84, 84]``, if given, are used
    instead of ``explainer.explain(states)``."""
    s = torch.as_tensor(states, device=agent.device).float()
    alt = torch.as_tensor(alternatives, device=s.device).long().reshape(-1)
    if s.ndim != 4 or alt.shape != (len(s),):
        raise ValueError(f"need states [B, 4, 84, 84] and alternatives [B]; got {tuple(s.shape)} and {tuple(alt.shape)}")
    if alt.min() < 0 or alt.max() >= agent.n_actions:
        raise ValueError(f"alternative actions must lie in [0, {agent.n_actions})")
    masks = torch.as_tensor(explainer.explain(s) if masks is None else masks).to(s.device).float()
    if masks.shape != (len(s), agent.n_actions, *s.shape[-2:]):
        raise ValueError(f"explainer gave masks {tuple(masks.shape)}; expected [B, {agent.n_actions}, 84, 84]")
    r = _reference(explainer, s, reference, background).to(s.device)
    idx = torch.arange(len(s), device=s.device)
    probs = agent.logits(s).float().softmax(-1)
    a_star = probs.argmax(-1)
    m_alt = masks[idx, alt].unsqueeze(1)
    m_act = masks[idx, a_star].unsqueeze(1)
    p_keep = agent.logits(m_alt * s + (1 - m_alt) * r).float().softmax(-1)
    p_remove = agent.logits((1 - m_act) * s + m_act * r).float().softmax(-1)
    return Counterfactual(
        a_star.cpu().numpy(), alt.cpu().numpy(), probs.cpu().numpy(), p_keep.cpu().numpy(), p_remove.cpu().numpy(),
        p_keep.argmax(-1).cpu().numpy(), p_remove.argmax(-1).cpu().numpy(),
    )


def flip_rates(
    agent: Any,
    explainer: Any,
    states: np.ndarray | torch.Tensor,
    batch_size: int = 64,
    reference: str | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, float]:
    """Flip rates over ``states [N, 4, 84, 84]``, with every alternative ``a' != a*`` of each state.

    * ``to_alt``: share of (state, a') pairs where keeping only ``m_{a'}`` makes the agent pick a';
    * ``away``: share of states where removing ``m_{a*}`` changes the agent's action;
    * ``n_states``, ``n_pairs``: the counts behind them.
    """
    n_actions = int(agent.n_actions)
    to_alt = pairs = away = n = 0
    for i in range(0, len(states), batch_size):
        s = torch.as_tensor(states[i : i + batch_size], device=agent.device).float()
        with torch.no_grad():
            a_star = agent.logits(s).argmax(-1)
            masks = explainer.explain(s)
        for shift in range(1, n_actions):
            cf = counterfactual(agent, explainer, s, (a_star + shift) % n_actions, reference, background, masks)
            to_alt += int(cf.flipped_to_alt.sum())
            pairs += len(s)
            if shift == 1:
                away += int(cf.flipped_away.sum())
        n += len(s)
    if n == 0:
        raise ValueError("flip_rates needs at least one state")
    return {"to_alt": to_alt / pairs, "away": away / n, "n_states": float(n), "n_pairs": float(pairs)}
