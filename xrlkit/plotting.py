"""Figures: saliency overlays on game frames, per-action masks, learning curves, metric bars,
aggregates over seeds.

Every function draws with matplotlib and returns the ``Figure`` (or draws into a given ``Axes``),
so notebooks show it and the study runner saves it. Saliency maps are ``[84, 84]`` (the agent's
input grid); they are resized to the frame they are drawn on, which may be the 84x84 gray input
or the raw 210x160 RGB screen (the 84x84 input is a resize of the whole screen, so the two
align).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

def frame_image(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """An RGB screen ``[210, 160, 3]`` as is, or the newest frame of a state ``[4, 84, 84]`` /
    a gray frame ``[84, 84]``, as an image array."""
    f = _to_numpy(frame)
    if f.ndim == 3 and f.shape[0] == 4:
        f = f[-1]
    if f.ndim == 2 or (f.ndim == 3 and f.shape[-1] == 3):
        return f
    raise ValueError(f"expected an RGB frame [H, W, 3], a state [4, 84, 84] or a frame [84, 84], got {f.shape}")

def resize_map(saliency: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map ``[h, w]`` to ``size``."""
    t = torch.as_tensor(_to_numpy(saliency), dtype=torch.float32)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()

def overlay(
    ax: Axes,
    frame: np.ndarray | torch.Tensor,
    saliency: np.ndarray | torch.Tensor | None = None,
    *,
    title: str | None = None,
    alpha: float = 0.55,
    cmap: str = "inferno",
) -> Axes:
    """Draw ``frame`` with ``saliency [84, 84]`` (min-max scaled) over it; no ticks."""
    img = frame_image(frame)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    if saliency is not None:
        s = resize_map(saliency, img.shape[:2])
        s = (s - s.min()) / (s.max() - s.min() + 1e-12)
        ax.imshow(s, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax

def place_label(episode: int, step: int) -> str:
    """Where a state was met, for a figure's label: ``"game 2, step 1360"`` (games counted from 1,
    ``step`` agent steps into that game), from a :class:`~xrlkit.evaluation.Rollout`'s ``episode`` /
    ``step`` or a VisionMask dataset's ``episodes`` / ``steps``."""
    return f"game {int(episode) + 1}, step {int(step)}"


def saliency_grid(
    frames: Sequence[np.ndarray] | np.ndarray,
    maps: Mapping[str, np.ndarray | torch.Tensor],
    *,
    row_labels: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """States in rows, explainers in columns: frame ``i`` with ``maps[name][i]`` over it.

    ``frames``: RGB screens or states; ``maps``: name -> ``[N, 84, 84]``.
    """
    names = list(maps)
    n = len(frames)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.9 * (len(names) + 1), 2.3 * n), squeeze=False)
    for i in range(n):
        overlay(axes[i, 0], frames[i], title="frame" if i == 0 else None)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j, name in enumerate(names):
            overlay(axes[i, j + 1], frames[i], _to_numpy(maps[name])[i], title=name if i == 0 else None)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig

def _mask_panel(ax: Axes, img: np.ndarray, mask: np.ndarray | torch.Tensor, title: str, chosen: bool) -> Any:
    """One action's mask ``[84, 84]`` (values in [0, 1], not rescaled) over the image ``img``."""
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    im = ax.imshow(resize_map(mask, img.shape[:2]), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    ax.set_title(title + (" (chosen)" if chosen else ""), fontsize=8, fontweight="bold" if chosen else None,
                 color="tab:red" if chosen else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


#: most mask panels in one row of :func:`mask_rows`
MASK_COLUMNS = 9


def mask_rows(
    frames: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    action_meanings: Sequence[str],
    chosen: Sequence[int],
    *,
    row_labels: Sequence[str] | None = None,
    probs: np.ndarray | torch.Tensor | None = None,
    suptitle: str | None = None,
) -> Figure:
    """One row per state: its screen ``frames[i]`` (any world's ``[H, W, 3]``, or a state), then
    every action's mask ``masks[i, k] [84, 84]`` (values in [0, 1], not rescaled) over it, the
    agent's ``chosen[i]`` marked in red; ``probs [N, K]``, the agent's action probabilities, adds
    each action's under its name. Panels keep the screen's aspect ratio. A game with more than
    :data:`MASK_COLUMNS` actions (Seaquest: 18) wraps each state's masks onto more rows."""
    m = _to_numpy(masks)
    if m.ndim != 4 or m.shape[1] != len(action_meanings) or len(m) != len(frames) or len(chosen) != len(m):
        raise ValueError(f"masks {m.shape} do not match {len(frames)} frames, {len(chosen)} choices and "
                         f"{len(action_meanings)} actions")
    p = _to_numpy(probs) if probs is not None else None
    if p is not None and p.shape != m.shape[:2]:
        raise ValueError(f"probs {p.shape} do not match masks {m.shape[:2]}")
    img0 = frame_image(frames[0])
    panel_h = 1.8 * img0.shape[0] / img0.shape[1]
    k = len(action_meanings)
    cols = min(k, MASK_COLUMNS)
    lines = -(-k // cols)  # rows of masks per state
    title_h = 0.45 if p is None else 0.6
    fig, axes = plt.subplots(len(m) * lines, cols + 1, squeeze=False, layout="constrained",
                             figsize=(1.8 * (cols + 1) + 0.8, (panel_h + title_h) * len(m) * lines + 0.4))
    for row in range(len(m)):
        img = frame_image(frames[row])
        label = row_labels[row] if row_labels is not None else f"state {row}"
        top = row * lines
        overlay(axes[top, 0], img, title=f"{label}\nagent: {action_meanings[chosen[row]]}")
        for ax in axes[top + 1:top + lines, 0]:
            ax.axis("off")
        for a in range(lines * cols):
            ax = axes[top + a // cols, 1 + a % cols]
            if a >= k:
                ax.axis("off")
                continue
            name = action_meanings[a] + (f"\np={p[row, a]:.2f}" if p is not None else "")
            im = _mask_panel(ax, img, m[row, a], name, a == chosen[row])
    fig.colorbar(im, ax=axes, fraction=0.02, label="mask value (1 = kept)")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


def learning_curve(
    frames: Sequence[float], returns: Sequence[float], *, label: str | None = None, ax: Axes | None = None,
    random_score: float | None = None, human_score: float | None = None,
) -> Axes:
    """Evaluation score against environment frames, with optional random / human reference lines."""
    if ax is None:
        ax = plt.subplots(figsize=(5, 3.2))[1]
    ax.plot(frames, returns, marker="o", label=label)
    reference_lines(ax, returns, random_score, human_score)
    ax.set_xlabel("environment frames")
    ax.set_ylabel("evaluation score (unclipped)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


#: a reference score further from the plotted scores than this many times their range is named in
#: the legend instead of drawn (drawn, it would flatten the curves to a line along the axis)
REFERENCE_REACH = 3.0


def reference_lines(ax: Axes, scores: Sequence[float], random_score: float | None = None,
                    human_score: float | None = None) -> None:
    """Random play's (dotted) and the human's (dashed) score as horizontal lines over ``scores``
    (the plotted scores; NaN ignored). A human score more than :data:`REFERENCE_REACH` times the
    range of the scores and random play's away from them (Seaquest's 42,055 over scores below
    1,000) is named in the legend, "off the scale", and not drawn. A reference the axes already
    show (several runs drawn on one axes, each with the game's references) is not added again."""
    shown = [str(line.get_label()) for line in ax.get_lines()]
    if random_score is not None and "random play" not in shown:
        ax.axhline(random_score, color="gray", linestyle=":", label="random play")
    if human_score is None or any(label.startswith("human") for label in shown):
        return
    plotted = [float(v) for v in scores if v == v] + ([random_score] if random_score is not None else [])
    low, high = min(plotted, default=human_score), max(plotted, default=human_score)
    reach = REFERENCE_REACH * (high - low)
    if low - reach <= human_score <= high + reach:
        ax.axhline(human_score, color="gray", linestyle="--", label="human")
    else:
        ax.plot([], [], color="gray", linestyle="--", label=f"human: {human_score:,.0f} (off the scale)")


def training_runs(runs: Mapping[str, str | Path], *, title: str | None = None, evaluations: bool = True,
                  max_frames: float | None = None, references: Mapping[str, float] | None = None) -> Figure:
    """Learning curves of training runs (``{label: run folder}``, each with the ``metrics.csv`` of
    :mod:`xrlkit.agents.ppo`): the mean score of the last 100 training games (a line per run) and
    evaluation scores (markers), against frames in millions, with the game's random and human
    reference scores when all runs are of one game, and ``references`` (``{label: score}``, e.g.
    the expert a student was fine-tuned towards) as dash-dotted lines. ``max_frames`` cuts the
    x-axis (to compare a shorter run with the start of a longer one). The legend sits below the
    axes, so it never hides a point."""
    from matplotlib.ticker import FuncFormatter

    from xrlkit.checkpoint import read_meta
    from xrlkit.games import REFERENCE_SCORES
    from xrlkit.runlog import read_curve

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    games, plotted = set(), []
    for i, (label, folder) in enumerate(runs.items()):
        folder = Path(folder)
        meta = next((read_meta(folder / n) for n in ("agent.safetensors", "resume.safetensors")
                     if (folder / n).is_file()), {})
        games.add(meta.get("game"))
        curve = read_curve(folder)
        color = f"C{i}"
        ax.plot(curve["frames"], curve["train_return_recent"], color=color, alpha=0.8,
                label=f"{label}: training games (last 100)")
        plotted += list(curve["train_return_recent"])
        ev = [(f, m, n) for f, m, n in zip(curve["frames"], curve.get("eval_mean", []), curve.get("eval_episodes", []))
              if m == m]  # NaN: no evaluation at that row
        if evaluations and ev:
            ax.plot([f for f, _, _ in ev], [m for _, m, _ in ev], "o", color=color,
                    label=f"{label}: evaluation (mean of {int(ev[-1][2])} games)")
            plotted += [m for _, m, _ in ev]
    for k, (label, score) in enumerate((references or {}).items()):
        ax.axhline(score, color=f"C{len(runs) + k}", linestyle="-.", lw=1.2, label=f"{label}: {score:,.1f}")
        plotted.append(score)
    if len(games) == 1 and next(iter(games)) in REFERENCE_SCORES:
        reference_lines(ax, plotted, *REFERENCE_SCORES[next(iter(games))])
    if max_frames:
        ax.set_xlim(0, max_frames)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:g}M"))
    ax.set_xlabel("environment frames")
    ax.set_ylabel("game score (unclipped)")
    ax.set_title(title or " vs ".join(runs))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def method_curves(table, *, title: str | None = None) -> Figure:
    """Evaluation score against frames for the runs of a :func:`xrlkit.sweep.score_table` (one
    panel per game; one colour per encoder): a thin line per seed and a thick line for the mean
    over seeds at the frames every seed evaluated at."""
    import pandas as pd

    from xrlkit.games import REFERENCE_SCORES
    from xrlkit.runlog import read_curve

    df = pd.DataFrame(table)
    games = sorted(df["game"].unique())
    fig, axes = plt.subplots(1, len(games), figsize=(5.2 * len(games), 3.6), squeeze=False)
    for ax, game in zip(axes.flat, games):
        for i, (encoder, runs) in enumerate(df[df["game"] == game].groupby("encoder", sort=False)):
            evals = []
            for run in runs.itertuples():
                curve = read_curve(run.run, as_pandas=True).dropna(subset=["eval_mean"])
                evals.append(curve.set_index("frames")["eval_mean"])
                ax.plot(curve["frames"], curve["eval_mean"], color=f"C{i}", lw=0.8, alpha=0.45)
            mean = pd.concat(evals, axis=1).dropna().mean(axis=1)
            ax.plot(mean.index, mean.to_numpy(), color=f"C{i}", lw=2.2, marker="o",
                    label=f"{encoder} ({len(evals)} seed)" if len(evals) == 1 else f"{encoder} (mean of {len(evals)} seeds)")
        if game in REFERENCE_SCORES:
            ax.axhline(REFERENCE_SCORES[game][0], color="gray", linestyle=":", label="random play")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1e6:g}M")
        ax.set_xlabel("environment frames")
        ax.set_ylabel("evaluation score (unclipped)")
        ax.set_title(game)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def interval_estimates(estimates, *, title: str | None = None, xlabel: str | None = None) -> Figure:
    """rliable's interval plot of an :func:`xrlkit.aggregate.interval_estimates` table: one panel
    per measure (IQM, mean, median), one row per method, the point estimate with its 95% interval."""
    import pandas as pd
    from rliable import plot_utils

    df = pd.DataFrame(estimates)
    measures = list(df["measure"].unique())
    methods = list(df["method"].unique())
    points, intervals = {}, {}
    for method in methods:
        sub = df[df["method"] == method].set_index("measure").reindex(measures)
        points[method] = sub["value"].to_numpy()
        intervals[method] = sub[["ci_low", "ci_high"]].to_numpy().T
    if xlabel is None:
        xlabel = "human-normalised score" if bool(df["normalised"].iloc[0]) else "game score"
    names = {"iqm": "IQM", "mean": "mean", "median": "median"}
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, [names.get(m, m) for m in measures],
                                                algorithms=methods, xlabel=xlabel, xlabel_y_coordinate=-0.55,
                                                subfigure_width=3.6, row_height=0.5)
    if title:  # above rliable's large panel titles
        fig.suptitle(title, fontsize=11, y=1.0 + 0.5 / fig.get_figheight())
    return fig


def metric_bars(table, *, metrics: Sequence[str] | None = None, title: str | None = None, ncols: int = 5,
                marks: Mapping[str, str] | None = None, panel_width: float = 3.2) -> Figure:
    """Bar plot per metric of a tidy table of :func:`xrlkit.metrics.evaluate_explainers`
    (columns ``explainer``, ``metric``, ``value``; one panel per metric, explainers on the
    x-axis). With several games in a ``game`` column, one row of panels per game; otherwise the
    panels wrap after ``ncols``. Panel titles say which way is better; ``marks`` maps a game to a
    short warning shown in red in its panel titles. Where the table has them, 95% intervals are
    drawn as error bars (``ci_low`` / ``ci_high``), the random explainer is red and an explainer
    that does not beat random (``beats_random`` False) is drawn hatched and pale. ``panel_width``:
    inches per panel (widen it for many explainers)."""
    import pandas as pd

    df = pd.DataFrame(table)
    metrics = list(metrics or df["metric"].unique())
    games = list(df["game"].unique()) if "game" in df and df["game"].nunique() > 1 else [None]
    if games != [None]:
        nrows, ncols = len(games), len(metrics)
        panels = [(g, m) for g in games for m in metrics]
    else:
        ncols = min(ncols, len(metrics))
        nrows = -(-len(metrics) // ncols)
        panels = [(None, m) for m in metrics]
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 3.6 * nrows), squeeze=False)
    for ax, (game, metric) in zip(axes.flat, panels):
        rows = df[(df["metric"] == metric) & ((df["game"] == game) if game is not None else True)]
        sub = rows.groupby("explainer", sort=False).agg(
            value=("value", "mean"), **({"low": ("ci_low", "mean"), "high": ("ci_high", "mean")}
                                        if "ci_low" in df else {}))
        beats = (rows.groupby("explainer", sort=False)["beats_random"].agg(
                     lambda b: bool(b.astype("boolean").fillna(True).all()))  # undecided (NaN) counts as beating
                 if "beats_random" in df else pd.Series(True, index=sub.index))
        colours = ["tab:red" if e == "random" else "tab:blue" if beats.get(e, True) else "lightsteelblue"
                   for e in sub.index]
        err = (np.stack([sub["value"] - sub["low"], sub["high"] - sub["value"]]).clip(min=0)
               if "low" in sub else None)
        bars = ax.bar(sub.index, sub["value"], color=colours, yerr=err, capsize=2, error_kw={"lw": 0.8})
        for bar, e in zip(bars, sub.index):
            if not beats.get(e, True):
                bar.set_hatch("//")
        better = rows["higher_is_better"].iloc[0] if "higher_is_better" in rows and len(rows) else None
        arrow = "" if better is None else " (higher is better)" if better else " (lower is better)"
        mark = (marks or {}).get(game, "")
        ax.set_title((f"{game}: " if game else "") + metric + arrow + (f"\n{mark}" if mark else ""), fontsize=9,
                     color="red" if mark else "black")
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")  # each label ends under its bar
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title + ("\nred: random explainer; hatched: not better than random (95% CI)"
                              if "beats_random" in df else ""))
    fig.tight_layout()
    return fig


def grounding_bars(table, *, title: str | None = None) -> Figure:
    """:func:`metric_bars` of a :func:`xrlkit.grounding.grounding_table` (columns ``method``,
    ``measure``, ``mean``, ``ci_low``, ``ci_high``, ``beats_random``): one panel per measure, as
    wide as its methods need."""
    import pandas as pd

    bars = pd.DataFrame(table).rename(columns={"method": "explainer", "measure": "metric", "mean": "value"})
    width = max(3.2, 0.42 * bars["explainer"].nunique())
    return metric_bars(bars.assign(higher_is_better=True), ncols=3, title=title, panel_width=width)


def stability_bars(table, *, title: str | None = None, top: float = 0.1) -> Figure:
    """Grouped bars of a :func:`xrlkit.stability.stability_table` (columns ``explainer``,
    ``comparison``, ``measure``, ``mean``, ``ci_low``, ``ci_high``): one panel per measure,
    explainers on the x-axis, one bar per comparison with its 95% interval. ``top`` names the
    share of pixels of the IoU measure in its panel title."""
    import pandas as pd

    df = pd.DataFrame(table)
    labels = {"spearman": "rank correlation of the maps", "top_iou": f"IoU of the top {top:.0%} pixels"}
    measures = list(df["measure"].unique())
    comparisons = list(df["comparison"].unique())
    explainers = list(df["explainer"].unique())
    fig, axes = plt.subplots(1, len(measures), figsize=(0.9 * len(explainers) * len(measures) + 2, 3.8), squeeze=False)
    width = 0.8 / len(comparisons)
    for ax, measure in zip(axes.flat, measures):
        for k, (comparison, colour) in enumerate(zip(comparisons, ["tab:blue", "darkgrey", "tab:orange"])):
            sub = df[(df["measure"] == measure) & (df["comparison"] == comparison)].set_index("explainer").reindex(explainers)
            err = np.stack([sub["mean"] - sub["ci_low"], sub["ci_high"] - sub["mean"]]).clip(min=0)
            ax.bar(np.arange(len(explainers)) + (k - (len(comparisons) - 1) / 2) * width, sub["mean"], width,
                   yerr=err, capsize=2, error_kw={"lw": 0.8}, color=colour, label=comparison)
        ax.set_xticks(np.arange(len(explainers)), explainers, rotation=60, fontsize=8)
        ax.set_title(f"{labels.get(measure, measure)} (higher: more alike)", fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def counterfactual_chart(cf, meanings: Sequence[str], frame: np.ndarray | torch.Tensor,
                         mask: np.ndarray | torch.Tensor) -> Figure:
    """One state's counterfactuals (:class:`xrlkit.visionmask.Counterfactual` of one state
    repeated once per alternative action ``k = 0..A-1``): left, the mask of the chosen action
    ``a*`` over ``frame``; right, ``P(action)`` on the original state (black), with ``m[a*]``
    removed (red), and with only ``m[k]`` kept, one bar group per action."""
    a_star = int(cf.action[0])
    removed_to = int(cf.action_remove_action[0])
    n = len(meanings)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4), gridspec_kw={"width_ratios": [1, 2.3]})
    overlay(axes[0], frame, mask, title=f"mask of the chosen action {meanings[a_star]}")
    x = np.arange(n)
    width = 0.8 / (n + 2)
    ax = axes[1]
    ax.bar(x - 0.4 + width / 2, cf.probs[0], width, label="original state", color="black")
    ax.bar(x - 0.4 + 1.5 * width, cf.probs_remove_action[0], width, label=f"m[{meanings[a_star]}] removed",
           color="tab:red")
    colours = plt.get_cmap("Blues")(np.linspace(0.35, 0.9, n))
    for k in range(n):
        ax.bar(x - 0.4 + width * (k + 2.5), cf.probs_keep_alt[k], width, color=colours[k],
               label=f"only m[{meanings[k]}] kept")
    ax.set_xticks(x, meanings, rotation=30)
    ax.set_ylabel("P(action)")
    ax.set_ylim(0, 1)
    change = "still" if removed_to == a_star else "now"
    ax.set_title(f"chosen: {meanings[a_star]}; with m[{meanings[a_star]}] removed the agent {change} "
                 f"picks {meanings[removed_to]} (red)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def stamp(fig: Figure, note: str) -> Figure:
    """Write ``note`` in bold red above everything in ``fig`` (kept by ``bbox_inches="tight"``);
    an empty note changes nothing."""
    if note:
        import textwrap

        width = max(40, int(fig.get_figwidth() * 11))  # characters of bold 10-pt text per line
        fig.text(0.5, 1.0, textwrap.fill(note, width), ha="center", va="bottom", color="red", fontsize=10,
                 weight="bold")
    return fig
