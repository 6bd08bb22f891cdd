"""Stability of explanations: do agents trained alike, from different seeds, get the same maps?

The VisionMask paper names "stability of explanations across agent seeds" as a next check. Two
agents that play equally well may attend to different things; an explainer whose maps differ
across such agents as much as its maps of one agent differ between two of its own runs cannot
tell the two apart, and one whose maps differ *more* across seeds reflects the agents, not noise.

:func:`map_agreement` compares two sets of maps state by state; :func:`stability_table` gives,
per explainer, the agreement across every pair of agents and, as the yardstick, the agreement
of two runs of the explainer (seeds 0 and 1) on the first agent (1 for deterministic ones).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from xrlkit.agents.base import Agent, greedy_actions
from xrlkit.explainers.base import Explainer
from xrlkit.metrics import top_pixels


def map_agreement(a: torch.Tensor, b: torch.Tensor, top: float = 0.1) -> dict[str, np.ndarray]:
    """Per state, for maps ``a, b float [B, 84, 84]``: ``spearman``, the rank correlation of the
    two maps' pixels (ties ranked by their mean rank; 0 where a map is constant), and ``top_iou``,
    the intersection over union of their ``top`` most salient pixels. Both ``float64 [B]``."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two sets of maps of one shape [B, H, W], got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0 < top <= 1:
        raise ValueError(f"top must lie in (0, 1], got {top}")
    from scipy.stats import rankdata

    fa, fb = a.detach().flatten(1).double().cpu(), b.detach().flatten(1).double().cpu()
    ra = torch.from_numpy(rankdata(fa.numpy(), axis=1))
    rb = torch.from_numpy(rankdata(fb.numpy(), axis=1))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    spearman = torch.where(den > 0, (ra * rb).sum(dim=1) / den.clamp_min(1e-300), torch.zeros_like(den))
    ta, tb = top_pixels(fa, top), top_pixels(fb, top)
    iou = (ta & tb).sum(dim=1).double() / (ta | tb).sum(dim=1).double()
    return {"spearman": spearman.numpy(), "top_iou": iou.numpy()}


#: the measures of :func:`map_agreement`, as named in :func:`stability_table`
MEASURES = ("spearman", "top_iou")
#: the two comparisons of :func:`stability_table`
ACROSS, AGAIN = "across agents", "same agent, two runs"


def stability_table(
    agents: Sequence[Agent], states: np.ndarray | torch.Tensor, make: Callable[[str, Agent, int], Explainer],
    explainers: Sequence[str], top: float = 0.1, batch_size: int = 16, seed: int = 0,
) -> pd.DataFrame:
    """Agreement of explanations of ``states [N, 4, 84, 84]`` across ``agents`` (>= 2, e.g. seeds
    of one recipe), per explainer; ``make(name, agent, seed)`` builds an explainer. Each map
    explains the first agent's preferred action, so every agent is asked about the same action.

    One row per (explainer, comparison, measure): ``comparison`` is :data:`ACROSS` (per state,
    the mean over agent pairs) or :data:`AGAIN` (the explainer with seeds 0 and 1 on the first
    agent: 1 for a deterministic explainer, its own noise for a stochastic one); ``measure`` one of
    :data:`MEASURES`; ``mean`` over states with its 95% bootstrap interval ``ci_low``, ``ci_high``
    (:func:`xrlkit.metrics.mean_ci`, seeded by ``seed``) and ``n_states``."""
    from xrlkit.metrics import mean_ci

    if len(agents) < 2:
        raise ValueError("need at least two agents to compare")
    x = torch.as_tensor(states)
    actions = torch.as_tensor(greedy_actions(agents[0], x, batch_size))

    def maps(explainer: Explainer) -> torch.Tensor:
        return torch.cat([explainer.explain(xb, ab).detach().cpu()
                          for xb, ab in zip(x.split(batch_size), actions.split(batch_size))])

    rows = []
    for name in explainers:
        per_agent = [maps(make(name, agent, 0)) for agent in agents]
        pairs = [map_agreement(per_agent[i], per_agent[j], top) for i, j in itertools.combinations(range(len(agents)), 2)]
        again = map_agreement(per_agent[0], maps(make(name, agents[0], 1)), top)
        for comparison, scores in ((ACROSS, pairs), (AGAIN, [again])):
            for measure in MEASURES:
                per_state = np.mean([s[measure] for s in scores], axis=0)
                low, high = mean_ci(per_state, seed=seed)
                rows.append({"explainer": name, "comparison": comparison, "measure": measure,
                             "mean": float(per_state.mean()), "ci_low": low, "ci_high": high, "n_states": len(x)})
    return pd.DataFrame(rows)
