"""Actor-critic agents: any registered encoder, a 512-unit layer, a policy head and a value head.

The network of CleanRL's ``ppo_atari.py`` and SB3's ``CnnPolicy`` (Nature CNN -> Linear(3136,
512) -> ReLU -> policy logits / value), with the encoder replaceable by any one in
:data:`xrlkit.agents.encoders.ENCODERS` (IFE, IMPALA, ...). Orthogonal initialisation as in
those codes: gain sqrt(2) for hidden layers, 0.01 for the policy head, 1 for the value head; an
encoder with an initialisation of its own (IFE's HUE) keeps it.

``logits(obs) -> float [B, A]`` are the policy logits; ``act`` draws from their softmax when
``act_mode == "sample"`` (how RL-Zoo scores Atari PPO agents) and takes the argmax when
``"greedy"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xrlkit.agents.base import ActMode, TorchAgent, choose_actions
from xrlkit.agents.encoders import IFE, make_encoder


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a :class:`PolicyAgent` (stored in checkpoints)."""

    encoder: str = "nature"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden: int = 512


def _orthogonal(module: nn.Module, gain: float) -> None:
    nn.init.orthogonal_(module.weight, gain)
    nn.init.zeros_(module.bias)


class PolicyAgent(ActMode, TorchAgent):
    """Encoder + ``Linear(out_features, hidden)`` + ReLU, then policy and value heads.

    ``forward(x float [B, 4, 84, 84] in [0, 1]) -> logits [B, A]``; :meth:`policy_value` gives
    ``(logits [B, A], value [B])`` in one pass.
    """

    kind = "policy"

    def __init__(self, n_actions: int, config: PolicyConfig | None = None,
                 action_meanings: tuple[str, ...] | None = None, seed: int = 0, act_mode: str = "greedy") -> None:
        super().__init__(n_actions, action_meanings, seed)
        torch.manual_seed(seed)
        self.config = config or PolicyConfig()
        self.encoder = make_encoder(self.config.encoder, **self.config.encoder_kwargs)
        self.body = nn.Sequential(nn.Linear(self.encoder.out_features, self.config.hidden), nn.ReLU())
        self.actor = nn.Linear(self.config.hidden, n_actions)
        self.critic = nn.Linear(self.config.hidden, 1)
        if not isinstance(self.encoder, IFE):
            for m in self.encoder.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    _orthogonal(m, math.sqrt(2))
        _orthogonal(self.body[0], math.sqrt(2))
        _orthogonal(self.actor, 0.01)
        _orthogonal(self.critic, 1.0)
        self.act_mode = act_mode

    def policy_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits ``[B, A]`` and state values ``[B]`` for input in [0, 1]."""
        h = self.body(self.encoder(x))
        return self.actor(h), self.critic(h).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(self.body(self.encoder(x)))

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float = 0.0) -> np.ndarray:
        return choose_actions(self.logits(obs), epsilon, self._rng, self.act_mode)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def warm_start(path: str | Path, game: str, encoder: str, protocol: str) -> tuple[PolicyAgent, dict[str, Any]]:
    """The trained policy a PPO or distillation run starts from (``init_from``) and its identity for
    the run's metadata: ``{"file", "sha256", "frames", "origin", "value_trained"}`` (``frames``: its
    own experience, 0 for a distilled student). It must be an actor-critic :class:`PolicyAgent` (of
    xrlkit's PPO or distillation) of ``game`` with ``encoder``, trained under ``protocol`` (its
    policy is tied to the observations and rewards it learnt on); else ``ValueError`` naming what
    differs."""
    from xrlkit.agents.load import load_any_agent
    from xrlkit.checkpoint import file_sha256

    parent = load_any_agent(path, game=game)  # checks the game, hence the action count
    if not isinstance(parent, PolicyAgent):
        raise ValueError(f"--init-from {path}: a {type(parent).__name__} cannot start a run; it needs an "
                         "actor-critic agent of xrlkit's PPO or distillation (a .safetensors file)")
    meta = parent.meta  # type: ignore[attr-defined]
    found = {"encoder": parent.config.encoder, "protocol": meta.get("protocol")}
    diff = [f"{k} {v!r}, not {asked!r}" for (k, v), asked in zip(found.items(), (encoder, protocol)) if v != asked]
    if diff:
        raise ValueError(f"--init-from {path} was trained with {'; '.join(diff)}; pass the same encoder and "
                         "protocol to continue it")
    return parent, {"file": Path(path).name, "sha256": file_sha256(path), "frames": int(meta.get("frames") or 0),
                    "origin": meta.get("origin", "rl"), "value_trained": bool(meta.get("value_trained", True))}
