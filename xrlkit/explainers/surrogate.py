"""LIME (Ribeiro et al. 2016) for agents: a weighted linear surrogate of ``P(action)`` fit on
random on/off patterns of image cells.

Not captum's ``Lime``: captum builds and scores each perturbed sample in a Python loop (measured
on the 2-core CPU of this project: about 2 s per state for 300 samples of a trivial agent, 6 ms
per sample spent in ``default_from_interp_rep_transform``), which makes LIME on a few hundred
states, and the local Lipschitz metric that re-explains each state ten times, take hours. Here
all samples of a batch of states go through the agent in full batches and the surrogate is a
closed-form weighted ridge regression solved for all states at once. The recipe is that of
the ``lime`` package's image explainer: binary patterns drawn uniformly (the first one all on),
cosine distance to the all-on pattern, kernel ``sqrt(exp(-d^2 / width^2))`` with width 0.25,
ridge with ``alpha = 1`` and an intercept.
"""

from __future__ import annotations

import numpy as np
import torch

from xrlkit.agents.base import Agent
from xrlkit.explainers.base import perturbed_batches, prepare_inputs
from xrlkit.references import make_reference
from xrlkit.shapes import FRAME_SHAPE

H, W = FRAME_SHAPE


def grid_segments(cell: int) -> torch.Tensor:
    """Feature index of each pixel, ``int64 [84, 84]``: square cells of ``cell`` px in raster
    order (the last row / column of cells is cut where ``cell`` does not divide 84)."""
    if not 1 <= cell <= H:
        raise ValueError(f"cell must be in [1, 84], got {cell}")
    per_row = -(-W // cell)
    rows, cols = torch.arange(H) // cell, torch.arange(W) // cell
    return rows[:, None] * per_row + cols[None, :]


class LIMEExplainer:
    """LIME on a grid of square superpixels shared by the 4 stacked frames.

    Superpixels are a grid of ``cell x cell`` px (default 6: 14 x 14 = 196 features, the grid of
    IFE's attention) rather than SLIC segments: Atari objects are a few pixels wide (ball,
    bullets) and SLIC on an 84x84 gray stack merges them into the background segment around
    them; a grid gives every state the same features, so a batch of states shares one set of
    samples. A feature "off" shows the reference (:func:`xrlkit.references.make_reference`,
    black by default) in its cell on all 4 frames.

    ``n_samples`` patterns are drawn once, at construction, from ``seed`` (the first all on),
    so the explainer is deterministic. For each state the surrogate fits ``P(a | x(z))`` (the
    softmax of the agent's outputs) on the patterns ``z``; the saliency of a pixel is
    ``|coefficient|`` of its cell (either sign matters, as :func:`~xrlkit.explainers.base.reduce_frames`).
    ``batch_size`` perturbed states are scored per forward pass.
    """

    name = "lime"

    def __init__(
        self, agent: Agent, cell: int = 6, n_samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0,
        seed: int = 0, reference: str = "black", background: torch.Tensor | None = None, batch_size: int = 256,
    ) -> None:
        if n_samples < 2 or kernel_width <= 0 or alpha < 0:
            raise ValueError("need n_samples >= 2, kernel_width > 0 and alpha >= 0")
        self.agent, self.n_samples, self.alpha = agent, n_samples, alpha
        self.reference, self.background, self.batch_size = reference, background, batch_size
        self.segments = grid_segments(cell)
        n_features = int(self.segments.max()) + 1
        gen = torch.Generator().manual_seed(seed)
        z = torch.randint(0, 2, (n_samples, n_features), generator=gen, dtype=torch.float64)
        z[0] = 1.0
        # cosine distance of each pattern to the all-on pattern, LIME's image kernel
        cos = z.sum(dim=1) / (z.norm(dim=1).clamp_min(1e-12) * n_features**0.5)
        d = 1.0 - cos
        self.patterns = z  # [n_samples, F]
        self.weights = torch.sqrt(torch.exp(-(d**2) / kernel_width**2))  # [n_samples]
        self.masks = z.float()[:, self.segments]  # [n_samples, 84, 84]: 1 where a cell is on

    def _surrogate(self, y: torch.Tensor) -> torch.Tensor:
        """Weighted ridge coefficients ``[B, F]`` for targets ``y [B, n_samples]`` (float64)."""
        z, w = self.patterns, self.weights / self.weights.sum()
        z_c = z - (w[:, None] * z).sum(dim=0)  # centring fits the intercept, unpenalised
        y_c = y - (y * w).sum(dim=1, keepdim=True)
        gram = z_c.T @ (w[:, None] * z_c) + self.alpha / self.weights.sum() * torch.eye(z.shape[1], dtype=z.dtype)
        return torch.linalg.solve(gram, (z_c.T @ (w[:, None] * y_c.T))).T

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        ref = make_reference(x, self.reference, self.background)
        y = torch.empty(len(x) * self.n_samples, device=x.device)
        for pairs, b, _, shown in perturbed_batches(ref, x - ref, self.masks.to(x.device), self.batch_size):
            p = self.agent.logits(shown).float().softmax(dim=1)  # cells on show x, cells off the reference
            y[pairs] = p.gather(1, a[b].unsqueeze(1)).squeeze(1)
        coef = self._surrogate(y.view(len(x), self.n_samples).double().cpu())
        return coef.abs().float()[:, self.segments].to(x.device)
