"""Perturbation explainers that need no gradients: Greydanus et al. (2018), SARFA (Puri et al.
2020) on the same perturbation, RISE, and random.

Not built on captum: captum has no Greydanus-style blur perturbation (nor SARFA's score on it)
nor RISE, and the random baseline needs no attribution machinery.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xrlkit.agents.base import Agent
from xrlkit.explainers.base import perturbed_batches, prepare_inputs
from xrlkit.references import make_reference
from xrlkit.shapes import FRAME_SHAPE

H, W = FRAME_SHAPE


class GreydanusExplainer:
    """Perturbation saliency of Greydanus et al. (2018), "Visualizing and Understanding Atari
    Agents".

    For each grid point ``(i, j)`` (every ``stride`` px from 0, as the paper's ``d``), the state is
    blended with its blurred copy under a Gaussian mask ``M(i, j)`` (peak 1, std ``mask_sigma``
    px): ``s' = s * (1 - M) + blur(s) * M`` on all 4 frames, with ``blur`` the
    :func:`~xrlkit.references.make_reference` ``"blur"`` reference of std ``blur_sigma``.
    Score ``S(i, j) = 1/2 ||pi(s) - pi(s')||^2``; the grid of scores is bilinearly upsampled
    to 84x84.

    Defaults follow the paper: mask std 5 px and image blur std 3 px (the paper's
    ``A(I, sigma_A=3)``; the "Gaussian blur sigma=3" of the project issue is this image blur),
    stride 5. ``output="logits"`` compares the raw logits as the paper's code does (Q-values for
    value-based agents); ``output="probs"`` compares softmax policies. The score is over the whole
    action vector, so the map does not depend on ``actions`` (only validated).
    ``batch_size`` perturbed states are scored per forward pass.
    """

    name = "greydanus"

    def __init__(
        self, agent: Agent, stride: int = 5, mask_sigma: float = 5.0, blur_sigma: float = 3.0,
        output: str = "logits", batch_size: int = 256,
    ) -> None:
        if stride < 1 or mask_sigma <= 0 or blur_sigma <= 0:
            raise ValueError("stride must be >= 1 and the sigmas > 0")
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
        self.agent, self.stride, self.output, self.batch_size = agent, stride, output, batch_size
        self.mask_sigma, self.blur_sigma = mask_sigma, blur_sigma
        centres = torch.arange(0, H, stride, dtype=torch.float32)
        rows = torch.arange(H, dtype=torch.float32)
        g = torch.exp(-((rows[None, :] - centres[:, None]) ** 2) / (2 * mask_sigma**2))  # [n, 84]
        # masks[k] for grid point k = (i, j): outer product of the 1-d Gaussians -> [n*n, 84, 84]
        self.n_grid = len(centres)
        self.masks = (g[:, None, :, None] * g[None, :, None, :]).reshape(-1, H, W)

    def _policy(self, x: torch.Tensor) -> torch.Tensor:
        out = self.agent.logits(x).float()
        return out if self.output == "logits" else out.softmax(dim=1)

    @torch.no_grad()
    def perturbed_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent outputs on ``x float [B, 4, 84, 84]`` and on its blur-perturbed copies:
        ``(base [B, A], perturbed [B, n_grid**2, A])``, logits or probabilities as ``output``
        says, grid points in raster order."""
        masks = self.masks.to(x.device)
        base = self._policy(x)
        out = torch.empty(len(x), len(masks), base.shape[1], device=x.device)
        towards_blur = make_reference(x, "blur", sigma=self.blur_sigma) - x  # s' = s * (1 - M) + blur(s) * M
        for _, b, k, perturbed in perturbed_batches(x, towards_blur, masks, self.batch_size):
            out[b, k] = self._policy(perturbed)
        return base, out

    def scores(self, base: torch.Tensor, perturbed: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Score of each grid point ``[B, n_grid**2]``: ``1/2 ||pi(s) - pi(s')||^2``."""
        return 0.5 * (perturbed - base[:, None]).pow(2).sum(dim=2)

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        grid = self.scores(*self.perturbed_outputs(x), a).view(len(x), 1, self.n_grid, self.n_grid)
        return F.interpolate(grid, size=FRAME_SHAPE, mode="bilinear", align_corners=False).squeeze(1).clamp_min(0)


class SARFAExplainer(GreydanusExplainer):
    """SARFA, "Specific and Relevant Feature Attribution" (Puri et al. 2020, "Explain Your
    Move"): the perturbation of :class:`GreydanusExplainer` (same grid, masks and blur), scored
    for the explained action ``a`` only, from the softmax policy ``P`` of the agent's outputs
    (Q-values or logits):

    * specificity ``dP = P(a | s) - P(a | s')``: how much the perturbation lowers the action;
    * relevance ``K = 1 / (1 + KL(P_rem(s) || P_rem(s')))``, ``P_rem`` the softmax over the
      *other* actions' outputs: high when the perturbation leaves the alternatives alone;
    * ``S = 2 K dP / (K + dP)`` (their harmonic mean) where ``dP > 0``, else 0.

    So a region scores high when removing it hurts this action specifically, not when it
    reshuffles the whole policy (which Greydanus' score rewards). Unlike Greydanus, the map
    depends on ``actions``. Agents with a single action get all-zero maps (``K`` is undefined).
    """

    name = "sarfa"

    def __init__(self, agent: Agent, stride: int = 5, mask_sigma: float = 5.0, blur_sigma: float = 3.0,
                 batch_size: int = 256) -> None:
        super().__init__(agent, stride, mask_sigma, blur_sigma, output="logits", batch_size=batch_size)

    def scores(self, base: torch.Tensor, perturbed: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """SARFA score of each grid point ``[B, n_grid**2]`` from logits ``base [B, A]`` and
        ``perturbed [B, K, A]``."""
        n_actions = base.shape[1]
        if n_actions < 2:
            return torch.zeros(perturbed.shape[:2], device=base.device)
        a = actions.view(-1, 1)
        p_a = base.softmax(dim=1).gather(1, a)  # [B, 1]
        p_a_new = perturbed.softmax(dim=2).gather(2, a[:, :, None].expand(-1, perturbed.shape[1], 1)).squeeze(2)
        d_p = p_a - p_a_new  # [B, K]
        keep = torch.ones_like(base, dtype=torch.bool).scatter_(1, a, False)  # the other actions
        rem = base[keep].view(len(base), 1, n_actions - 1).log_softmax(dim=2)
        rem_new = perturbed[keep[:, None].expand_as(perturbed)].view(*perturbed.shape[:2], n_actions - 1)
        rem_new = rem_new.log_softmax(dim=2)
        kl = (rem.exp() * (rem - rem_new)).sum(dim=2)
        k = 1.0 / (1.0 + kl)
        s = 2 * k * d_p / (k + d_p)
        return torch.where(d_p > 0, s, torch.zeros_like(s))


class RISEExplainer:
    """RISE (Petsiuk et al. 2018): randomised input sampling.

    ``n_masks`` binary ``grid x grid`` masks (each cell kept with probability ``p_keep``) are
    bilinearly upsampled to ``(grid + 1) * cell`` px (``cell = ceil(84 / grid)``) and cropped at a
    random shift in ``[0, cell)``, giving smooth masks ``m_i`` in [0, 1]. Each state is shown as
    ``m_i * s + (1 - m_i) * r`` (``r`` from :func:`~xrlkit.references.make_reference`, black by
    default, as RISE's zero masking) and the saliency is
    ``sum_i P(a | x_i) m_i / (n_masks * p_keep)`` with ``P`` the softmax of the logits.
    The masks are drawn once, at construction, from ``seed``: the explainer is deterministic.
    """

    name = "rise"

    def __init__(
        self, agent: Agent, n_masks: int = 1000, grid: int = 8, p_keep: float = 0.5, seed: int = 0,
        reference: str = "black", background: torch.Tensor | None = None, batch_size: int = 256,
    ) -> None:
        if n_masks < 1 or grid < 1 or not 0 < p_keep <= 1:
            raise ValueError("need n_masks >= 1, grid >= 1 and 0 < p_keep <= 1")
        self.agent, self.n_masks, self.p_keep = agent, n_masks, p_keep
        self.reference, self.background, self.batch_size = reference, background, batch_size
        gen = torch.Generator().manual_seed(seed)
        cell = -(-H // grid)
        big = (grid + 1) * cell
        low = (torch.rand(n_masks, 1, grid, grid, generator=gen) < p_keep).float()
        up = F.interpolate(low, size=(big, big), mode="bilinear", align_corners=False).squeeze(1)
        shifts = torch.randint(0, cell, (n_masks, 2), generator=gen)
        self.masks = torch.stack([up[i, dy : dy + H, dx : dx + W] for i, (dy, dx) in enumerate(shifts.tolist())])

    @torch.no_grad()
    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        ref = make_reference(x, self.reference, self.background)
        masks = self.masks.to(x.device)
        sal = torch.zeros(len(x), H, W, device=x.device)
        for _, b, k, shown in perturbed_batches(ref, x - ref, masks, self.batch_size):  # m * x + (1 - m) * r
            p = self.agent.logits(shown).float().softmax(dim=1)
            p_a = p.gather(1, a[b].unsqueeze(1)).squeeze(1)
            sal.index_add_(0, b, p_a[:, None, None] * masks[k])
        return sal / (self.n_masks * self.p_keep)


class RandomExplainer:
    """Uniform random saliency in [0, 1): the sanity floor every explainer must beat.

    The explainer owns a generator seeded with ``seed``: each call draws fresh maps (so a
    perturbed input gets a different map, as an explainer blind to the input should), and the
    sequence of maps is reproducible from the seed. Maps are drawn on the CPU, then moved to the
    agent's device.
    """

    name = "random"

    def __init__(self, agent: Agent, seed: int = 0) -> None:
        self.agent = agent
        self._gen = torch.Generator().manual_seed(seed)

    def explain(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        x, _ = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        return torch.rand(len(x), H, W, generator=self._gen).to(x.device)
