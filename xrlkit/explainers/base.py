"""The ``Explainer`` protocol, input validation and the shared frame-reduction rule.

An explainer maps a batch of states and the actions to explain to one saliency map per state:

* ``states``: ``[B, 4, 84, 84]``, numpy or torch, ``uint8`` or float, values in [0, 255];
* ``actions``: ``int [B]``, each in ``[0, agent.n_actions)`` (captum's ``target``);
* returns ``float32 [B, 84, 84]``, non-negative, on the agent's device. The scale is
  explainer-specific; metrics normalise where they need to.

Frame reduction: input-space attributions have one value per frame pixel ``[B, 4, 84, 84]``; they
are reduced to ``[B, 84, 84]`` by summing the absolute value over the 4 stacked frames
(:func:`reduce_frames`), so a pixel matters when it matters in any frame, with either sign.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from xrlkit.agents.base import Agent, as_obs_tensor
from xrlkit.shapes import FRAME_SHAPE, OBS_SHAPE


@runtime_checkable
class Explainer(Protocol):
    """Anything with a ``name`` and ``explain(states, actions) -> float [B, 84, 84] >= 0``."""

    name: str

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Saliency ``float [B, 84, 84] >= 0`` of ``actions [B]`` in ``states [B, 4, 84, 84]``."""
        ...


def prepare_inputs(
    states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor | list[int], n_actions: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert: ``states`` -> float32 ``[B, 4, 84, 84]`` in [0, 255] (detached) and
    ``actions`` -> int64 ``[B]``, both on ``device``. Raises ``ValueError`` on bad shapes or
    out-of-range actions."""
    x = as_obs_tensor(states, device).detach()
    a = torch.as_tensor(np.asarray(actions) if isinstance(actions, list) else actions, device=device)
    if a.ndim != 1 or len(a) != len(x):
        raise ValueError(f"expected actions of shape [{len(x)}] (one per state), got {tuple(a.shape)}")
    if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
        raise ValueError(f"actions must be integers, got dtype {a.dtype}")
    a = a.long()
    if len(a) and (a.min() < 0 or a.max() >= n_actions):
        raise ValueError(f"actions must lie in [0, {n_actions}), got range [{int(a.min())}, {int(a.max())}]")
    return x, a


def perturbed_batches(
    start: torch.Tensor, towards: torch.Tensor, masks: torch.Tensor, batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every (state, mask) pair of ``start [B, 4, 84, 84]`` and ``masks [K, 84, 84]`` in [0, 1],
    ``batch_size`` pairs at a time over a flat index (so each forward pass is full even for few
    states). Yields ``(pairs, b, k, states)``: the flat indices ``pairs = b * K + k``, the state and
    mask index of each, and ``start[b] + masks[k] * towards[b]`` ``[n, 4, 84, 84]``, i.e.
    ``start * (1 - m) + target * m`` for ``towards = target - start``, in one fused op."""
    n_masks = len(masks)
    for pairs in torch.arange(len(start) * n_masks, device=start.device).split(batch_size):
        b, k = pairs // n_masks, pairs % n_masks
        yield pairs, b, k, torch.addcmul(start[b], masks[k].unsqueeze(1), towards[b])


def reduce_frames(attr: torch.Tensor) -> torch.Tensor:
    """``[B, 4, 84, 84]`` attributions -> ``[B, 84, 84]`` saliency: sum of ``|attr|`` over frames."""
    return attr.detach().abs().sum(dim=1).float()


def logits_fn(agent: Agent) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward function captum differentiates: float states in [0, 255] -> logits ``[B, A]``."""
    return lambda x: agent.logits(x)


def torch_modules(agent: Agent) -> list[nn.Module]:
    """The torch modules that make up ``agent``: the agent itself when it is an ``nn.Module``,
    otherwise its attributes that are modules (e.g. a wrapped SB3 policy), in attribute order."""
    if isinstance(agent, nn.Module):
        return [agent]
    return [v for v in vars(agent).values() if isinstance(v, nn.Module)]


def last_conv_layer(agent: Agent) -> nn.Conv2d:
    """The last ``nn.Conv2d`` that computing the agent's logits runs through, the usual Grad-CAM
    layer: found by one forward pass on a black state with hooks on every conv layer of the
    agent's modules, so layers off the logits' path (an SB3 DQN's target network, a separate
    value encoder) are never picked. Raises ``ValueError`` when the forward pass uses none."""
    convs = [m for root in torch_modules(agent) for m in root.modules() if isinstance(m, nn.Conv2d)]
    ran: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda module, inputs, output: ran.append(module)) for m in convs]
    try:
        with torch.no_grad():
            agent.logits(torch.zeros(1, *OBS_SHAPE, device=agent.device))
    finally:
        for h in hooks:
            h.remove()
    if not ran:
        raise ValueError(f"{type(agent).__name__} computes its logits through no nn.Conv2d layer; "
                         "pass layer= to Grad-CAM explicitly")
    return ran[-1]
