"""The model-parameter randomisation test of Adebayo et al. (2018, "Sanity Checks for Saliency
Maps"): an explanation of an agent must change when the agent's weights are replaced by random
ones. A map that stays the same explains the input (its edges, its bright objects), not the
agent, however well it scores on other checks.

:func:`model_randomisation` compares, per state, the map an explainer gives for the agent with the
map it gives for :func:`randomised_copy` of the agent (every layer re-initialised at once, the
test's "independent" form, not the layer-by-layer cascade), by Spearman rank correlation over the
84x84 pixels. :func:`randomisation_table` runs it for several explainers and says which pass.

Explainers that do not read the agent's weights fail by construction, and that is the point of
showing them: ``random`` (the same seed draws the same map) and ``visionmask`` (a VisionMask model
is trained against one frozen agent and must be retrained for another).
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from xrlkit.agents.base import Agent, greedy_actions
from xrlkit.explainers.base import Explainer, torch_modules
from xrlkit.metrics import mean_ci

#: an explainer passes when the upper end of the 95% interval of its mean rank correlation
#: between trained-agent and random-agent maps lies below this
PASS_BELOW = 0.5


def randomised_copy(agent: Agent, seed: int = 0) -> Agent:
    """A deep copy of ``agent`` whose every layer is re-initialised by its own
    ``reset_parameters`` (the initialiser it was built with), drawn from ``seed``; the
    original is untouched. ``ValueError`` for an agent without weights (a scripted agent)."""
    # An encoder keeps its last attention map (IFE); after a gradient explainer it is part of an
    # autograd graph, which deepcopy refuses: copy it detached.
    memo = {id(v): v.detach().clone() for module in torch_modules(agent) for m in module.modules()
            for v in vars(m).values() if isinstance(v, torch.Tensor) and not v.is_leaf}
    twin = copy.deepcopy(agent, memo)
    modules = torch_modules(twin)
    layers = [m for module in modules for m in module.modules() if hasattr(m, "reset_parameters")]
    if not layers:
        raise ValueError(f"{type(agent).__name__} has no layers with weights to randomise")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for layer in layers:
            layer.reset_parameters()
    return twin


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation ``float64 [B]`` between maps ``a`` and ``b`` ``[B, 84, 84]``
    (ties share their mean rank); NaN where either map is constant."""
    x, y = a.detach().flatten(1).double().cpu().numpy(), b.detach().flatten(1).double().cpu().numpy()
    if x.shape != y.shape:
        raise ValueError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    out = np.full(len(x), np.nan)
    for i, (u, v) in enumerate(zip(x, y)):
        if np.ptp(u) > 0 and np.ptp(v) > 0:
            out[i] = spearmanr(u, v).statistic
    return out


def model_randomisation(agent: Agent, build: Callable[[Agent], Explainer], states: np.ndarray | torch.Tensor,
                        actions: np.ndarray | torch.Tensor | None = None, seed: int = 0) -> np.ndarray:
    """Per-state rank correlation ``float64 [B]`` between ``build(agent)``'s maps and
    ``build(randomised_copy(agent, seed))``'s maps of the same ``states [B, 4, 84, 84]`` and
    ``actions [B]`` (default: the trained agent's greedy actions). Near 1: the explanation ignores
    the agent's weights."""
    actions = greedy_actions(agent, states) if actions is None else actions
    trained = build(agent).explain(states, actions)
    random = build(randomised_copy(agent, seed)).explain(states, actions)
    return rank_correlation(trained, random)


def randomisation_table(agent: Agent, builders: Mapping[str, Callable[[Agent], Explainer]],
                        states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """:func:`model_randomisation` for each named explainer builder: one row per explainer with
    ``spearman`` (mean over states with a defined correlation), its bootstrap 95% interval
    ``ci_low`` / ``ci_high``, ``n_states`` and ``passes`` (``ci_high <`` :data:`PASS_BELOW`)."""
    actions = greedy_actions(agent, states) if actions is None else actions
    rows = []
    for name, build in builders.items():
        rho = model_randomisation(agent, build, states, actions, seed)
        rho = rho[~np.isnan(rho)]
        if len(rho) == 0:  # every map constant: nothing to rank, so nothing depends on the agent
            rows.append({"explainer": name, "spearman": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                         "n_states": 0, "passes": False})
            continue
        low, high = mean_ci(rho, seed=seed)
        rows.append({"explainer": name, "spearman": float(rho.mean()), "ci_low": low, "ci_high": high,
                     "n_states": len(rho), "passes": bool(high < PASS_BELOW)})
    return pd.DataFrame(rows)
