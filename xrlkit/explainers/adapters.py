"""Adapters to explanations that models produce themselves: IFE attention and VisionMask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xrlkit.explainers.base import prepare_inputs
from xrlkit.shapes import FRAME_SHAPE


class AttentionExplainer:
    """The agent's own attention map, for agents exposing ``attention(obs, size)`` (the IFE
    encoder's HUE attention on :class:`~xrlkit.agents.QAgent`; ``has_attention`` is honoured
    when present). The map is upsampled to 84x84 by the agent (each 14x14 cell covers a 6x6
    patch) and sums to 1 per state. It is computed before the Q head, so it is the same for
    every action: ``actions`` are only validated."""

    name = "ife"

    def __init__(self, agent: Any) -> None:
        if not callable(getattr(agent, "attention", None)) or not getattr(agent, "has_attention", True):
            raise ValueError(
                f"{type(agent).__name__} has no attention map; the 'ife' explainer needs an agent with "
                "attention(obs, size), e.g. a QAgent with the 'ife' encoder"
            )
        self.agent = agent

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, _ = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        att = torch.as_tensor(self.agent.attention(x, size=FRAME_SHAPE)).float()
        if att.shape != (len(x), *FRAME_SHAPE):
            raise ValueError(f"agent.attention returned shape {tuple(att.shape)}, expected {(len(x), *FRAME_SHAPE)}")
        return att.clamp_min(0)


class VisionMaskExplainer:
    """Adapter to a trained VisionMask model (or anything duck-typed like it): ``model`` needs
    ``n_actions`` and ``explain(states [B, 4, 84, 84], actions=None) -> masks float [B, K, 84, 84]``
    in [0, 1], one mask per action (``K == n_actions``). The saliency is the mask of the explained
    action. States are passed to the model as float32 tensors on the device of ``device``
    (default: CPU), and maps come back on that device."""

    name = "visionmask"

    def __init__(self, model: Any, device: torch.device | str = "cpu") -> None:
        if not callable(getattr(model, "explain", None)) or not hasattr(model, "n_actions"):
            raise ValueError("VisionMaskExplainer needs a model with n_actions and explain(states, actions=None)")
        self.model, self.device = model, torch.device(device)

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, int(self.model.n_actions), self.device)
        masks = torch.as_tensor(self.model.explain(x, a)).float().to(self.device)
        expected = (len(x), int(self.model.n_actions), *FRAME_SHAPE)
        if tuple(masks.shape) != expected:
            raise ValueError(f"VisionMask model returned masks of shape {tuple(masks.shape)}, expected {expected}")
        return masks[torch.arange(len(x), device=self.device), a].clamp_min(0)
