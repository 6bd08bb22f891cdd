"""The episode explorer: its numbers, its figure, and the widget callbacks driven headlessly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_explainers import COLS, ROWS, RegionAgent  # noqa: E402

from xrlkit.evaluation import Rollout  # noqa: E402
from xrlkit.explainers import make_explainer  # noqa: E402
from xrlkit.widgets import Explorer  # noqa: E402


@pytest.fixture()
def explorer() -> Explorer:
    """Three states: the region the agent reads lit at 255, 120 and 0 (REGION, REGION, tie)."""
    states = np.zeros((3, 4, 84, 84), dtype=np.uint8)
    for i, level in enumerate((255, 120, 0)):
        states[i, :, ROWS, COLS] = level
    frames = np.zeros((3, 210, 160, 3), dtype=np.uint8)
    rollout = Rollout(states, frames, np.zeros(3, int), np.zeros(3), np.zeros(3, int), np.arange(3))
    agent = RegionAgent()
    return Explorer(agent, rollout, {"grad": make_explainer("grad", agent), "random": make_explainer("random", agent)})


def test_removing_the_salient_region_changes_the_choice(explorer):
    v = explorer.compute(0, "grad")
    assert v.action == 0 and v.probs.argmax() == 0 and v.probs[0] > 0.99
    r, c = np.unravel_index(v.saliency.argmax(), v.saliency.shape)
    assert ROWS.start <= r < ROWS.stop and COLS.start <= c < COLS.stop
    assert v.action_removed == 0 and v.probs_removed[0] < v.probs[0]  # 5% of the pixels hold the region (3.4%)
    whole = Explorer(explorer.agent, explorer.rollout, explorer.explainers, removed_share=0.04)
    assert whole.compute(0, "grad").probs_removed[0] == pytest.approx(0.5, abs=1e-6)  # region gone: a tie
    assert explorer.compute(0, "grad", action=1).action == 1
    assert explorer.compute(0, "grad") is explorer.compute(0, "grad")  # cached


def test_view_figure_names_the_choice(explorer):
    fig, v = explorer.view(1, "random")
    left, right = fig.axes
    assert left.get_title() == "state 1: random for REGION"
    assert right.get_title().startswith("agent picks REGION; without the region:")
    assert [b.get_height() for b in right.patches[:2]] == pytest.approx(v.probs.tolist())


def test_widget_callbacks_redraw(explorer):
    box = explorer.widget()
    controls = box.controls
    assert controls["state"].max == 2 and list(controls["explainer"].options) == ["grad", "random"]
    controls["state"].value = 2
    controls["explainer"].value = "random"
    controls["action"].value = 1
    assert (2, "random", 1) in explorer._cache and (0, "grad", 0) in explorer._cache


def test_bad_choices_are_clear(explorer):
    with pytest.raises(ValueError, match="outside"):
        explorer.compute(3, "grad")
    with pytest.raises(ValueError, match="unknown explainer"):
        explorer.compute(0, "lime")
    with pytest.raises(ValueError, match="action 5"):
        explorer.compute(0, "grad", action=5)
    with pytest.raises(ValueError, match="removed_share"):
        Explorer(explorer.agent, explorer.rollout, explorer.explainers, removed_share=1.5)
