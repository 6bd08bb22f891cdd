"""Value-based agents: a Q-network (dueling, optional noisy layers and C51) on any encoder.

``QAgent.logits`` returns Q-values ``[B, A]`` (the distribution's mean under C51).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xrlkit.agents.base import TorchAgent
from xrlkit.agents.encoders import make_encoder


class NoisyLinear(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018), noise resampled by
    :meth:`reset_noise`; in eval mode it uses the mean weights only."""

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.reset_noise()

    @staticmethod
    def _f(x: torch.Tensor) -> torch.Tensor:
        return x.sign() * x.abs().sqrt()

    @torch.no_grad()
    def reset_noise(self) -> None:
        self.eps_in.copy_(self._f(torch.randn_like(self.eps_in)))
        self.eps_out.copy_(self._f(torch.randn_like(self.eps_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * self.eps_out)


@dataclass
class QNetConfig:
    """Everything needed to rebuild a :class:`QAgent` (stored in checkpoints)."""

    encoder: str = "nature"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden: int = 256
    dueling: bool = True
    noisy: bool = False
    atoms: int = 1  # 1: plain Q-values; > 1: C51 distribution over [v_min, v_max]
    v_min: float = -10.0
    v_max: float = 10.0


class QAgent(TorchAgent):
    """Encoder + (dueling) Q head. ``forward(x in [0,1]) -> Q [B, A]``;
    :meth:`dist_logits` gives ``[B, A, atoms]`` for C51."""

    def __init__(
        self,
        n_actions: int,
        config: QNetConfig | None = None,
        action_meanings: tuple[str, ...] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(n_actions, action_meanings, seed)
        torch.manual_seed(seed)
        self.config = config or QNetConfig()
        c = self.config
        self.encoder = make_encoder(c.encoder, **c.encoder_kwargs)
        n_in = self.encoder.out_features
        linear = NoisyLinear if c.noisy else nn.Linear
        self.advantage = nn.Sequential(linear(n_in, c.hidden), nn.ReLU(), linear(c.hidden, n_actions * c.atoms))
        self.value = (
            nn.Sequential(linear(n_in, c.hidden), nn.ReLU(), linear(c.hidden, c.atoms)) if c.dueling else None
        )
        self.register_buffer("support", torch.linspace(c.v_min, c.v_max, c.atoms))

    def dist_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised per-action outputs ``[B, A, atoms]`` for input in [0, 1]."""
        f = self.encoder(x)
        adv = self.advantage(f).view(-1, self.n_actions, self.config.atoms)
        if self.value is None:
            return adv
        return self.value(f).view(-1, 1, self.config.atoms) + adv - adv.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dist_logits(x)
        if self.config.atoms == 1:
            return out.squeeze(-1)
        return (out.softmax(-1) * self.support).sum(-1)

    def reset_noise(self) -> None:
        for m in self.modules():
            if isinstance(m, NoisyLinear):
                m.reset_noise()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
