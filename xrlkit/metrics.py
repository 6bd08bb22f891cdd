"""Faithfulness, robustness and complexity metrics for saliency explainers, Quantus-style:
the constructor holds the parameters, ``metric(agent, states, actions, saliency, explainer)``
returns one score per state (``float64 [B]`` numpy), deterministic given the seeds.

Inputs: ``states [B, 4, 84, 84]`` in [0, 255] (uint8 or float), ``actions int [B]`` (the
explained actions, normally the agent's greedy ones), ``saliency float [B, 84, 84] >= 0``.
Probabilities are the softmax of ``agent.logits`` (Q-values for value-based agents).
"Removed" pixels are replaced by a reference :func:`xrlkit.references.make_reference`
(mode ``reference``, black by default), on all 4 frames.

=============  =====  =====================================================================
name           best   score per state
=============  =====  =====================================================================
accuracy       high   1 if argmax on ``m*s + (1-m)*r`` equals the action, with ``m`` the
                      saliency divided by its max (VisionMask's definition), else 0
top_accuracy   high   the same with ``m`` the binary mask of the 10% most salient pixels: a
                      flat or random map keeps a random tenth of the screen
insertion      high   AUC of P(action) as pixels of s are inserted into r, most salient first
deletion       low    AUC of P(action) as pixels of s are replaced by r, most salient first
road_morf      low    ROAD (Rong et al. 2022): mean P(action) with the most salient 10..90%
                      of pixels filled by noisy linear imputation instead of r
road_lerf      high   the same, least salient first
lle            low    local Lipschitz estimate of the explainer (Alvarez-Melis & Jaakkola 2018)
sparseness     high   Gini index of the saliency (Chalasani et al. 2020, as in Quantus)
srg            high   insertion - deletion, per state (derived, :data:`DERIVED_METRICS`)
road           high   road_lerf - road_morf, per state (derived)
=============  =====  =====================================================================

:func:`evaluate_explainers` runs explainers x metrics into a tidy table with bootstrap
intervals and a comparison with the random explainer (real states come from
:func:`xrlkit.evaluation.rollout`); :func:`metric_sanity` says which metrics tell real
explainers from random.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from xrlkit.agents.base import Agent, batched_logits, greedy_actions
from xrlkit.explainers.base import Explainer, prepare_inputs
from xrlkit.references import impute_linear, make_reference
from xrlkit.registry import choose
from xrlkit.shapes import FRAME_SHAPE

N_PIXELS = FRAME_SHAPE[0] * FRAME_SHAPE[1]


class Metric(Protocol):
    """A metric: ``name``, ``higher_is_better`` and a per-state scoring ``__call__``."""

    name: str
    higher_is_better: bool

    def __call__(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        """Scores ``float64 [B]``."""
        ...


def _check_saliency(saliency: np.ndarray | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    sal = torch.as_tensor(saliency).detach().to(device, torch.float32)
    if tuple(sal.shape) != (n, *FRAME_SHAPE):
        raise ValueError(f"expected saliency of shape [{n}, 84, 84], got {tuple(sal.shape)}")
    if (sal < 0).any():
        raise ValueError("saliency must be non-negative")
    return sal


def normalise_by_max(saliency: torch.Tensor) -> torch.Tensor:
    """Each map ``[B, 84, 84] >= 0`` divided by its maximum, so it lies in [0, 1] (all-zero maps
    stay zero)."""
    peak = saliency.flatten(1).max(dim=1).values.clamp_min(torch.finfo(saliency.dtype).tiny)
    return saliency / peak[:, None, None]


class Accuracy:
    """Share of states whose action survives keeping only the explanation (VisionMask's
    accuracy): ``x = m * s + (1 - m) * r`` with ``m`` the saliency divided by its max (soft map in
    [0, 1]), or with ``top_q`` the binary mask of the ``top_q`` fraction of most salient pixels.
    Score per state: 1.0 if ``argmax logits(x) == action`` else 0.0."""

    name = "accuracy"
    higher_is_better = True

    def __init__(
        self, reference: str = "black", background: torch.Tensor | None = None, top_q: float | None = None,
        batch_size: int = 64,
    ) -> None:
        if top_q is not None and not 0 < top_q <= 1:
            raise ValueError(f"top_q must lie in (0, 1], got {top_q}")
        self.reference, self.background, self.top_q, self.batch_size = reference, background, top_q, batch_size

    def mask(self, saliency: torch.Tensor) -> torch.Tensor:
        """The kept-pixel mask ``[B, 84, 84]`` in [0, 1] for ``saliency [B, 84, 84]``."""
        if self.top_q is None:
            return normalise_by_max(saliency)
        return top_pixels(saliency, self.top_q).float()

    def __call__(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        x, a = prepare_inputs(states, actions, agent.n_actions, agent.device)
        m = self.mask(_check_saliency(saliency, len(x), x.device)).unsqueeze(1)
        kept = m * x + (1 - m) * make_reference(x, self.reference, self.background)
        pred = batched_logits(agent, kept, self.batch_size).argmax(dim=1)
        return (pred == a).double().cpu().numpy()


class TopAccuracy(Accuracy):
    """:class:`Accuracy` with a binary mask: keep only the ``top_q`` most salient pixels (10% by
    default), the reference elsewhere. The soft mask of the VisionMask paper keeps most of the
    state wherever a map is nearly flat (RISE's maps: max/min ~1.3), so a flat map scores as well
    as the best one; with a binary mask a flat or random map keeps a random tenth of the screen
    and loses the action wherever the decision rests on a few objects."""

    name = "top_accuracy"

    def __init__(
        self, reference: str = "black", background: torch.Tensor | None = None, top_q: float = 0.1,
        batch_size: int = 64,
    ) -> None:
        super().__init__(reference, background, top_q, batch_size)


#: metrics that remove pixels and put a reference image in their place (``reference``,
#: ``background``)
REFERENCE_METRICS: tuple[str, ...] = ("accuracy", "top_accuracy", "insertion", "deletion")

#: seed of the fixed pseudo-random pixel order that breaks ties between equal saliency values
TIE_BREAK_SEED = 0


def _ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of each pixel ``[B, 7056]`` by decreasing saliency (0 = most salient). Equal values
    are ordered by one fixed pseudo-random permutation of the pixels (seed
    :data:`TIE_BREAK_SEED`), not by raster order: many maps are mostly ties (occlusion ~95%,
    integrated gradients ~64%, Grad-CAM ~61% on the shipped Breakout expert), and raster order
    would remove the top of the screen first, crediting whatever lies there."""
    flat = saliency.flatten(1)
    n = flat.shape[1]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(TIE_BREAK_SEED)).to(flat.device)
    order = perm[torch.argsort(-flat[:, perm], dim=1, stable=True)]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=flat.device).expand_as(order))
    return rank


def top_pixels(saliency: torch.Tensor, share: float) -> torch.Tensor:
    """Boolean mask, shaped as ``saliency [B, ...]``, of the ``share`` most salient pixels of each
    map (``round(share * pixels)``, at least one; ties broken as :func:`_ranks` says)."""
    k = max(1, int(round(share * saliency[0].numel())))
    return (_ranks(saliency) < k).view_as(saliency)


def pixels_per_step(n_steps: int) -> list[int]:
    """How many pixels are inserted / deleted at step ``k = 0..n_steps``: ``round(k * 7056 / n_steps)``."""
    return [int(round(k * N_PIXELS / n_steps)) for k in range(n_steps + 1)]


#: pixel orders of the removal metrics: most- and least-relevant first
ORDERS = ("morf", "lerf")


def _order_ranks(saliency: torch.Tensor, order: str) -> torch.Tensor:
    """Pixel ranks ``[B, 7056]`` in the removal order (one of :data:`ORDERS`): ``"morf"`` most
    relevant first (see :func:`_ranks`), ``"lerf"`` least relevant first (the reverse)."""
    rank = _ranks(saliency)
    return rank if order == "morf" else N_PIXELS - 1 - rank


class _PixelCurve:
    """Shared code of :class:`Insertion` and :class:`Deletion`."""

    name = ""
    higher_is_better = True
    _insert = True

    def __init__(
        self, n_steps: int = 20, reference: str = "black", background: torch.Tensor | None = None,
        batch_size: int = 64,
    ) -> None:
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps, self.reference, self.background, self.batch_size = n_steps, reference, background, batch_size

    @torch.no_grad()
    def curves(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor,
    ) -> np.ndarray:
        """``P(action)`` after each step, ``float64 [B, n_steps + 1]``; the x axis is
        ``linspace(0, 1, n_steps + 1)``, the share of pixels moved (see :func:`pixels_per_step`)."""
        x, a = prepare_inputs(states, actions, agent.n_actions, agent.device)
        rank = _ranks(_check_saliency(saliency, len(x), x.device)).view(len(x), 1, *FRAME_SHAPE)
        ref = make_reference(x, self.reference, self.background)
        counts = torch.tensor(pixels_per_step(self.n_steps), device=x.device)
        n_k = len(counts)
        probs = torch.empty(len(x) * n_k, device=x.device)
        pairs = torch.arange(len(x) * n_k, device=x.device)
        for chunk in pairs.split(self.batch_size):
            b, k = chunk // n_k, chunk % n_k
            moved = rank[b] < counts[k].view(-1, 1, 1, 1)
            img = torch.where(moved, x[b], ref[b]) if self._insert else torch.where(moved, ref[b], x[b])
            p = agent.logits(img).float().softmax(dim=1)
            probs[chunk] = p.gather(1, a[b].unsqueeze(1)).squeeze(1)
        return probs.view(len(x), n_k).double().cpu().numpy()

    def __call__(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        """Area under :meth:`curves` (trapezoid rule on [0, 1]) per state, ``float64 [B]``."""
        c = self.curves(agent, states, actions, saliency)
        return ((c[:, 1:] + c[:, :-1]) / 2).mean(axis=1)


class Insertion(_PixelCurve):
    """Insertion AUC (Petsiuk et al. 2018): start from the reference, insert the state's pixels
    (all 4 frames) in decreasing saliency. Higher is better."""

    name = "insertion"
    higher_is_better = True
    _insert = True


class Deletion(_PixelCurve):
    """Deletion AUC (Petsiuk et al. 2018): start from the state, replace its pixels by the
    reference in decreasing saliency. Lower is better.

    Deleting the *least* salient pixels first (LeRF) shows exactly the images that insertion
    shows, in reverse order, so with a fixed reference the LeRF deletion AUC is the insertion
    AUC: the pair insertion / deletion already holds both orders (see ``srg``)."""

    name = "deletion"
    higher_is_better = False
    _insert = False


class LocalLipschitzEstimate:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018):
    ``max_n ||e(x) - e(x_n)||_2 / ||x - x_n||_2`` over ``n_samples`` Gaussian perturbations
    ``x_n = clip(x + sigma * z_n, 0, 255)`` (``sigma`` in pixel units). Quantus computes the same
    ratio without the clip; xrlkit clips by default (``clip=True``) because an agent never sees a
    pixel outside [0, 255], so an unclipped x_n asks the explainer about impossible states (on
    black background pixels half of the noise is negative). The distance in the denominator is to
    the clipped x_n, so the ratio stays a Lipschitz quotient; ``clip=False`` gives Quantus's number. ``z_n`` is drawn as
    ``torch.randn(states.shape, generator=g)`` in order ``n = 0, 1, ...`` from a CPU generator
    seeded with ``seed`` at each call. With ``normalise`` each map is divided by its max first, so
    explainers of different scales are comparable. Lower is better. Needs the explainer."""

    name = "lle"
    higher_is_better = False

    def __init__(self, n_samples: int = 10, sigma: float = 5.0, seed: int = 0, normalise: bool = True,
                 clip: bool = True) -> None:
        if n_samples < 1 or sigma <= 0:
            raise ValueError("need n_samples >= 1 and sigma > 0")
        self.n_samples, self.sigma, self.seed, self.normalise, self.clip = n_samples, sigma, seed, normalise, clip

    def __call__(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        if explainer is None:
            raise ValueError("the lle metric re-explains perturbed states: pass explainer=")
        x, a = prepare_inputs(states, actions, agent.n_actions, agent.device)
        e = _check_saliency(saliency, len(x), x.device)
        e = normalise_by_max(e) if self.normalise else e
        gen = torch.Generator().manual_seed(self.seed)
        best = torch.zeros(len(x), dtype=torch.float64)
        for _ in range(self.n_samples):
            xp = x + self.sigma * torch.randn(x.shape, generator=gen).to(x.device)
            xp = xp.clamp(0, 255) if self.clip else xp
            ep = _check_saliency(explainer.explain(xp, a), len(x), x.device)
            ep = normalise_by_max(ep) if self.normalise else ep
            num = (e - ep).flatten(1).double().norm(dim=1)
            den = (x - xp).flatten(1).double().norm(dim=1) + 1e-10
            best = torch.maximum(best, (num / den).cpu())
        return best.numpy()


class ROAD:
    """ROAD, "Remove And Debias" (Rong et al. 2022): remove the ``fractions`` of pixels most
    (``order="morf"``, name ``road_morf``, lower is better) or least (``"lerf"``, ``road_lerf``,
    higher is better) salient and fill them by noisy linear imputation
    (:func:`xrlkit.references.impute_linear`) instead of a fixed reference, so the *shape* of
    what was removed leaks less and the state stays closer to the data. Score per state: mean of
    ``P(action)`` over the fractions. The imputation noise is drawn from a CPU generator seeded
    with ``seed`` at each call."""

    higher_is_better = False

    def __init__(self, order: str = "morf", fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 noise: float = 0.01, seed: int = 0, batch_size: int = 64) -> None:
        choose("order", order, ORDERS)
        if not fractions or not all(0 < f < 1 for f in fractions):
            raise ValueError(f"fractions must lie in (0, 1), got {tuple(fractions)}")
        self.order, self.fractions, self.noise, self.seed, self.batch_size = order, tuple(fractions), noise, seed, batch_size
        self.name = f"road_{order}"
        self.higher_is_better = order == "lerf"

    @torch.no_grad()
    def curves(self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
               saliency: torch.Tensor) -> np.ndarray:
        """``P(action)`` after removing each fraction, ``float64 [B, len(fractions)]``."""
        x, a = prepare_inputs(states, actions, agent.n_actions, agent.device)
        rank = _order_ranks(_check_saliency(saliency, len(x), x.device), self.order).view(len(x), *FRAME_SHAPE)
        gen = torch.Generator().manual_seed(self.seed)
        probs = []
        for f in self.fractions:
            imputed = impute_linear(x, rank < int(round(f * N_PIXELS)), self.noise, gen)
            p = batched_logits(agent, imputed, self.batch_size).softmax(dim=1)
            probs.append(p.gather(1, a.unsqueeze(1)).squeeze(1))
        return torch.stack(probs, dim=1).double().cpu().numpy()

    def __call__(
        self, agent: Agent, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        return self.curves(agent, states, actions, saliency).mean(axis=1)


class Sparseness:
    """Gini index of the saliency (Chalasani et al. 2020), computed as Quantus does: on
    ``|saliency| + 1e-7`` flattened and sorted ascending,
    ``sum_i (2i - n - 1) a_i / (n sum_i a_i)``. 0 = uniform, -> 1 = one pixel. Higher is sparser."""

    name = "sparseness"
    higher_is_better = True

    def __call__(
        self, agent: Agent | None, states: np.ndarray | torch.Tensor | None, actions: np.ndarray | torch.Tensor | None,
        saliency: torch.Tensor, explainer: Explainer | None = None,
    ) -> np.ndarray:
        sal = torch.as_tensor(saliency).detach().double()
        if sal.ndim != 3 or tuple(sal.shape[1:]) != FRAME_SHAPE:
            raise ValueError(f"expected saliency of shape [B, 84, 84], got {tuple(sal.shape)}")
        a = torch.sort(sal.abs().flatten(1) + 1e-7, dim=1).values
        n = a.shape[1]
        i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
        return (((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))).cpu().numpy()


_METRICS: dict[str, Any] = {
    "accuracy": Accuracy, "top_accuracy": TopAccuracy, "insertion": Insertion, "deletion": Deletion,
    "road_morf": functools.partial(ROAD, order="morf"), "road_lerf": functools.partial(ROAD, order="lerf"),
    "lle": LocalLipschitzEstimate, "sparseness": Sparseness,
}
#: names accepted by :func:`make_metric`
METRICS: tuple[str, ...] = tuple(_METRICS)
#: metrics that draw random numbers and take a ``seed``
SEEDED_METRICS: tuple[str, ...] = ("lle", "road_morf", "road_lerf")


def make_metric(name: str, **kwargs: Any) -> Metric:
    """Build metric ``name`` (one of :data:`METRICS`); ``kwargs`` go to its constructor."""
    choose("metric", name, _METRICS)
    return _METRICS[name](**kwargs)


#: metrics computed from two others, per state: ``name: (a, b)`` gives ``a - b`` (higher is
#: better). Both are the symmetric relevance gain of Blücher et al. (2024): a good map keeps the
#: action when its least relevant pixels go (LeRF) and loses it when its most relevant go (MoRF),
#: so the gap between the two orders cancels what removal does to the state regardless of order.
#: With a fixed reference the LeRF half is the insertion AUC (see :class:`Deletion`).
DERIVED_METRICS: dict[str, tuple[str, str]] = {"srg": ("insertion", "deletion"), "road": ("road_lerf", "road_morf")}


def mean_ci(scores: np.ndarray, seed: int = 0, n_resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``scores [N]`` (scipy); a
    constant sample gives its value twice."""
    from scipy.stats import bootstrap

    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2 or np.ptp(s) == 0:
        return float(s.mean()), float(s.mean())
    res = bootstrap((s,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate_explainers(
    agent: Agent,
    states: np.ndarray | torch.Tensor,
    explainers: Mapping[str, Explainer] | Sequence[Explainer],
    metrics: Mapping[str, Metric] | Sequence[Metric],
    actions: np.ndarray | torch.Tensor | None = None,
    batch_size: int = 16,
    seed: int = 0,
    compare_with: Sequence[str] = ("random",),
) -> pd.DataFrame:
    """Every explainer x every metric on ``states [N, 4, 84, 84]``; ``actions [N]`` default to the
    agent's greedy actions: :func:`per_state_scores` (``batch_size``), then :func:`score_table`
    (``seed``, ``compare_with``)."""
    named_m = dict(metrics) if isinstance(metrics, Mapping) else {m.name: m for m in metrics}
    scores = per_state_scores(agent, states, explainers, named_m, actions, batch_size)
    return score_table(scores, {name: bool(m.higher_is_better) for name, m in named_m.items()}, seed, compare_with)


def per_state_scores(
    agent: Agent, states: np.ndarray | torch.Tensor,
    explainers: Mapping[str, Explainer] | Sequence[Explainer], metrics: Mapping[str, Metric] | Sequence[Metric],
    actions: np.ndarray | torch.Tensor | None = None, batch_size: int = 16,
    known: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    on_explainer: Callable[[str, dict[str, np.ndarray]], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``{explainer: {metric: float [N]}}``: each metric's score of each explainer's map on each
    of ``states [N, 4, 84, 84]`` (``actions [N]`` default to the agent's greedy actions),
    explaining ``batch_size`` states at a time.

    ``known`` holds scores computed before on the same states and actions (an earlier run's, see
    :mod:`xrlkit.scores`): an explainer with every metric there is not run; one with some is run
    for the missing metrics only. ``on_explainer(name, its scores)`` is called as each explainer
    is done (to save progress).
    """
    named_e = dict(explainers) if isinstance(explainers, Mapping) else {e.name: e for e in explainers}
    named_m = dict(metrics) if isinstance(metrics, Mapping) else {m.name: m for m in metrics}
    if not named_e or not named_m:
        raise ValueError("need at least one explainer and one metric")
    x = torch.as_tensor(states)
    if actions is None:
        actions = greedy_actions(agent, x, batch_size)
    a = torch.as_tensor(actions)
    prepare_inputs(x, a, agent.n_actions, "cpu")  # validate shapes once, up front
    per_state: dict[str, dict[str, np.ndarray]] = {}
    for e_name, explainer in named_e.items():
        done = {m: np.asarray(v) for m, v in (known or {}).get(e_name, {}).items() if m in named_m}
        for m, v in done.items():
            if v.shape != (len(x),):
                raise ValueError(f"known scores of {e_name} / {m} have shape {v.shape}, expected ({len(x)},) "
                                 "(scores of other states?)")
        todo = {m: metric for m, metric in named_m.items() if m not in done}
        scores: dict[str, list[np.ndarray]] = {m: [] for m in todo}
        if todo:
            for xb, ab in zip(x.split(batch_size), a.split(batch_size)):
                sal = explainer.explain(xb, ab)
                for m_name, metric in todo.items():
                    scores[m_name].append(metric(agent, xb, ab, sal, explainer))
        per_state[e_name] = {m: done[m] if m in done else np.concatenate(scores[m]) for m in named_m}
        if todo and on_explainer is not None:
            on_explainer(e_name, per_state[e_name])
    return per_state


def score_table(
    per_state: Mapping[str, Mapping[str, np.ndarray]],
    higher_is_better: Mapping[str, bool],
    seed: int = 0,
    compare_with: Sequence[str] = ("random",),
) -> pd.DataFrame:
    """The tidy table of :func:`per_state_scores`' scores, one row per (explainer, metric):
    columns ``explainer``, ``metric``, ``value`` (mean over states), ``std``, ``n_states``,
    ``higher_is_better`` (from ``higher_is_better``, metric -> bool), ``ci_low`` / ``ci_high``
    (95% bootstrap interval of the mean, seeded with ``seed``). Metrics of
    :data:`DERIVED_METRICS` are added where both their parts are there.

    Each explainer named in ``compare_with`` that is among them is compared with every other one
    on the same states (paired): for ``random``, ``vs_random`` is the mean per-state gain over
    random, signed so that positive is better, ``vs_random_low`` / ``vs_random_high`` its 95%
    bootstrap interval and ``beats_random`` whether that interval lies above 0 (empty for random
    itself); any other name ``c`` (e.g. ``visionmask``) gets ``vs_c``, ``vs_c_low``, ``vs_c_high``
    the same way, so an interval below 0 says that ``c`` beats that explainer on that metric.
    """
    higher = dict(higher_is_better)
    scores = {e: dict(by_metric) for e, by_metric in per_state.items()}
    for by_metric in scores.values():
        for name, (plus, minus) in DERIVED_METRICS.items():
            if plus in by_metric and minus in by_metric:
                by_metric[name] = by_metric[plus] - by_metric[minus]
                higher[name] = True
    rows = []
    for e_name, by_metric in scores.items():
        for m_name, s in by_metric.items():
            low, high = mean_ci(s, seed)
            row: dict[str, Any] = {"explainer": e_name, "metric": m_name, "value": float(s.mean()),
                                   "std": float(s.std()), "n_states": len(s), "higher_is_better": higher[m_name],
                                   "ci_low": low, "ci_high": high}
            for other in (c for c in compare_with if c in scores and c != e_name):
                gain = (s - scores[other][m_name]) * (1 if higher[m_name] else -1)
                g_low, g_high = mean_ci(gain, seed)
                row.update({f"vs_{other}": float(gain.mean()), f"vs_{other}_low": g_low, f"vs_{other}_high": g_high})
                if other == "random":
                    row["beats_random"] = bool(g_low > 0)
            rows.append(row)
    return pd.DataFrame(rows)


def metric_sanity(table: pd.DataFrame) -> pd.DataFrame:
    """Can each metric tell a real explainer from random? From a table of
    :func:`evaluate_explainers` with a ``random`` explainer: one row per metric with
    ``explainers`` (how many were compared), ``beat_random`` (how many of them beat it) and
    ``separates`` (at least one did). A metric that separates no explainer from random on a
    competent agent says nothing about that game."""
    if "beats_random" not in table:
        raise ValueError("the table has no comparison with random: evaluate a 'random' explainer too")
    real = table[table["explainer"] != "random"]
    out = real.groupby("metric", sort=False)["beats_random"].agg(explainers="size", beat_random="sum").reset_index()
    out["beat_random"] = out["beat_random"].astype(int)
    out["separates"] = out["beat_random"] > 0
    return out


def explainer_ranks(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Rank of each explainer (1 = best, ties share the better rank) per metric of a table of
    :func:`evaluate_explainers`, each metric read in its own direction: ``[explainers x metrics]``.
    Put a classic metric beside its robust counterpart (``deletion`` / ``road_morf``,
    ``srg`` / ``road``) to see whether they order the explainers the same way."""
    metrics = list(metrics or table["metric"].unique())
    missing = sorted(set(metrics) - set(table["metric"]))
    if missing:
        raise ValueError(f"the table has no metric {missing}; it has {sorted(table['metric'].unique())}")
    ranks = {}
    for m in metrics:
        rows = table[table["metric"] == m].set_index("explainer")
        ranks[m] = rows["value"].rank(ascending=not bool(rows["higher_is_better"].iloc[0]), method="min").astype(int)
    return pd.DataFrame(ranks)
