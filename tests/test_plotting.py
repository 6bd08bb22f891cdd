"""xrlkit.plotting: reference lines that keep a learning curve readable."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xrlkit.plotting import learning_curve, place_label, reference_lines  # noqa: E402


def _lines(ax) -> dict[str, list[float]]:
    """Legend label -> the y values of that line (empty for a legend-only entry)."""
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_a_human_score_within_reach_is_drawn_and_a_far_one_only_named():
    _, ax = plt.subplots()
    reference_lines(ax, [-21.0, 5.0, 20.0], random_score=-20.7, human_score=14.6)  # Pong
    assert _lines(ax) == {"random play": [-20.7, -20.7], "human": [14.6, 14.6]}
    _, ax = plt.subplots()
    reference_lines(ax, [400.0, 680.0, 874.0], random_score=68.4, human_score=42054.7)  # Seaquest
    lines = _lines(ax)
    assert lines["human: 42,055 (off the scale)"] == [] and lines["random play"] == [68.4, 68.4]
    assert ax.get_ylim()[1] < 2000  # the curve keeps the height of the axes
    _, ax = plt.subplots()
    reference_lines(ax, [float("nan")], human_score=10.0)  # nothing plotted yet: the line is drawn
    assert _lines(ax) == {"human": [10.0, 10.0]}
    plt.close("all")


def test_learning_curve_names_a_far_human_score_in_its_legend():
    ax = learning_curve([2.5e6, 5e6, 1e7], [680.0, 828.0, 850.0], label="PPO", random_score=68.4, human_score=42054.7)
    assert "human: 42,055 (off the scale)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")


def test_runs_drawn_on_one_axes_share_one_line_per_reference():
    _, ax = plt.subplots()
    for label, scores in (("IFE", [0.0, 10.0]), ("IMPALA", [5.0, 20.0])):
        learning_curve([1e5, 2e5], scores, label=label, ax=ax, random_score=1.7, human_score=30.5)  # Breakout
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["IFE", "IMPALA", "human", "random play"], legend
    plt.close("all")


def test_a_state_is_placed_by_its_game_counted_from_one_and_its_step():
    assert place_label(0, 1360) == "game 1, step 1360" and place_label(3, 0) == "game 4, step 0"
