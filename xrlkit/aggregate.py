"""Aggregates of training runs over seeds and games, computed with rliable (Agarwal et al., 2021).

A *score table* is tidy: one row per run, with columns ``game``, ``seed``, ``score`` (the run's
final evaluation, mean game score) and a method column (``encoder`` by default). rliable wants
one ``[runs, games]`` matrix per method, so every method must have run the same games with the
same number of seeds each; :func:`score_matrices` checks that and builds them.

Scores are human-normalised (``(score - random) / (human - random)``, :mod:`xrlkit.games`) before
they are aggregated over games, as in the paper; with one game the raw score is kept by default,
since normalising changes nothing there but the unit. :func:`interval_estimates` gives the
interquartile mean (IQM: the mean of the middle 50% of all runs x games), mean and median with
stratified-bootstrap 95% intervals (runs resampled within each game).

Why rliable and not :func:`xrlkit.metrics.bootstrap_ci`: over a handful of seeds the interval has to
come from resampling runs per game (stratified), and the IQM is the robust aggregate the field
reports; rliable is the reference implementation of both.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from rliable import metrics

from xrlkit.games import human_normalized_score
from xrlkit.registry import choose

#: measure name -> rliable aggregate of a ``[runs, games]`` matrix
MEASURES: dict[str, Callable[[np.ndarray], float]] = {
    "iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean, "median": metrics.aggregate_median}


def _normalise(table: pd.DataFrame, normalise: bool | None) -> bool:
    """The default of ``normalise``: human-normalise where the table has more than one game."""
    return table["game"].nunique() > 1 if normalise is None else normalise


def score_matrices(table: pd.DataFrame, *, method: str = "encoder", normalise: bool | None = None) -> dict[str, np.ndarray]:
    """``{method value: scores [runs, games]}`` from a score table (games in sorted order, runs in
    seed order). ``normalise``: human-normalise the scores (default: when there is more than one
    game). Raises ``ValueError`` on missing columns, a method without a game another method has,
    or a game run with a different number of seeds than the others."""
    missing = [c for c in ("game", "seed", "score", method) if c not in table.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("score table is empty: no finished runs")
    games = sorted(table["game"].unique())
    normalise = _normalise(table, normalise)
    out: dict[str, np.ndarray] = {}
    for name, rows in table.groupby(method, sort=False):
        counts = rows.groupby("game")["seed"].nunique().reindex(games, fill_value=0)
        if (counts == 0).any():
            raise ValueError(f"{method} {name!r} has no run of {', '.join(counts[counts == 0].index)}")
        if counts.nunique() > 1:
            raise ValueError(f"{method} {name!r} has different seed counts per game ({counts.to_dict()}); "
                             "rliable needs the same number of runs on every game")
        columns = []
        for game in games:
            scores = rows[rows["game"] == game].sort_values("seed")["score"].to_numpy(dtype=float)
            columns.append([human_normalized_score(game, s) for s in scores] if normalise else scores)
        out[str(name)] = np.array(columns, dtype=float).T
    runs = {k: v.shape[0] for k, v in out.items()}
    if len(set(runs.values())) > 1:
        raise ValueError(f"runs per game differ between {method}s ({runs}); compare like with like")
    return out


def interval_estimates(table: pd.DataFrame, *, method: str = "encoder", measures: Sequence[str] = ("iqm", "mean", "median"),
                       normalise: bool | None = None, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Point estimate and stratified-bootstrap 95% interval of each aggregate ``measures`` for each
    method of a score table: columns ``method``, ``measure``, ``value``, ``ci_low``, ``ci_high``,
    ``n_runs``, ``n_games``, ``normalised``."""
    from rliable import library  # imports arch (slow): only where intervals are drawn

    for m in measures:
        choose("measure", m, MEASURES)
    matrices = score_matrices(table, method=method, normalise=normalise)
    normalised = _normalise(table, normalise)

    def aggregate(scores: np.ndarray) -> np.ndarray:
        return np.array([MEASURES[m](scores) for m in measures])

    with warnings.catch_warnings():  # arch 7 warns that rliable 1.2 passes random_state (its only seed option)
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = library.get_interval_estimates(matrices, aggregate, reps=reps,
                                                           random_state=np.random.RandomState(seed))
    rows = []
    for name, scores in matrices.items():
        for i, m in enumerate(measures):
            rows.append({"method": name, "measure": m, "value": float(points[name][i]),
                         "ci_low": float(intervals[name][0, i]), "ci_high": float(intervals[name][1, i]),
                         "n_runs": scores.shape[0], "n_games": scores.shape[1], "normalised": normalised})
    return pd.DataFrame(rows)
