"""Agent competence: the thresholds, and the study's `degenerate` status and warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_study import _notebook

from xrlkit.agents import TorchAgent
from xrlkit.competence import (
    MIN_HNS, MIN_RANDOM_MULTIPLE, TOP_ACTION_LIMIT, assess_competence, competence_note, read_competence, record_competence,
)
from xrlkit.evaluation import EvalResult
from xrlkit.games import REFERENCE_SCORES
from xrlkit.study import run_study


class ChoiceAgent(TorchAgent):
    """Six Pong actions; prefers action ``fixed`` in every state, or else the action given by the
    brightness of the state's first pixel (so states choose different actions)."""

    def __init__(self, fixed: int | None = None) -> None:
        super().__init__(6, ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"))
        self.fixed = fixed
        self.dummy = torch.nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.full((len(x),), self.fixed) if self.fixed is not None else (x[:, 0, 0, 0] * 5.999).long()
        return torch.nn.functional.one_hot(idx, 6).float()


@pytest.fixture(scope="module")
def varied_states() -> np.ndarray:
    s = np.zeros((60, 4, 84, 84), dtype=np.uint8)
    s[:, 0, 0, 0] = np.arange(60) * 255 // 59
    return s


def test_thresholds(varied_states):
    random_score, human_score = REFERENCE_SCORES["Pong"]
    good, poor = EvalResult("Pong", [10.0, 12.0]), EvalResult("Pong", [random_score - 0.5] * 3)
    ok = assess_competence(ChoiceAgent(), good, varied_states)
    assert ok.competent and ok.note() == "" and ok.hns > MIN_HNS
    assert ok.action_entropy > 0.95 and ok.top_action_share < 0.2 and ok.n_states == 60 and ok.episodes == 2
    stuck = assess_competence(ChoiceAgent(fixed=3), good, varied_states)
    assert not stuck.competent and stuck.top_action == "LEFT" and stuck.top_action_share == 1.0
    assert stuck.action_entropy == 0.0 and "LEFT in 100% of states" in stuck.note()
    weak = assess_competence(ChoiceAgent(), poor, varied_states)
    assert not weak.competent and "no better than random" in weak.note()
    barely = random_score + 0.04 * (human_score - random_score)  # above random, within chance
    assert not assess_competence(ChoiceAgent(), EvalResult("Pong", [barely]), varied_states).competent
    # just under the limit is still competent; at the limit it is not
    n = 100
    mixed = np.zeros((n, 4, 84, 84), dtype=np.uint8)
    mixed[: int(n * (1 - TOP_ACTION_LIMIT)) + 1, 0, 0, 0] = 255
    assert assess_competence(ChoiceAgent(), good, mixed).competent
    mixed[0, 0, 0, 0] = 0
    assert not assess_competence(ChoiceAgent(), good, mixed).competent
    with pytest.raises(ValueError, match="no finished episode"):
        assess_competence(ChoiceAgent(), EvalResult("Pong"), varied_states)


def test_a_game_with_a_far_human_reference_counts_ten_times_random(varied_states):
    """Seaquest's human score is 615x random's: 800 points (HNS 0.017) is plainly not random play."""
    random_score, _ = REFERENCE_SCORES["Seaquest"]
    good = assess_competence(ChoiceAgent(), EvalResult("Seaquest", [700.0, 900.0]), varied_states)
    assert good.hns < MIN_HNS and good.score >= MIN_RANDOM_MULTIPLE * random_score and good.beats_random and good.competent
    weak = assess_competence(ChoiceAgent(), EvalResult("Seaquest", [500.0, 600.0]), varied_states)
    assert not weak.beats_random and not weak.competent and "HNS 0.01 < 0.05, under 10x random" in weak.note()
    # Pong's random score is negative: only HNS counts there, and the note does not mention a multiple
    poor = assess_competence(ChoiceAgent(), EvalResult("Pong", [-20.0]), varied_states)
    assert not poor.competent and "x random" not in poor.note()


def test_a_world_is_measured_against_random_play(varied_states):
    """highway-env has no human score: the agent must beat random play on the same seeds by two
    standard errors of random play's mean."""
    rand = EvalResult("highway-fast-v0", [2.0, 6.0, 10.0, 6.0])  # mean 6, s.e. 1.63
    good = assess_competence(ChoiceAgent(), EvalResult("highway-fast-v0", [21.0]), varied_states, random_result=rand)
    assert good.competent and good.random_score == 6.0 and good.random_se == pytest.approx(1.633, abs=1e-3)
    close = assess_competence(ChoiceAgent(), EvalResult("highway-fast-v0", [9.0]), varied_states, random_result=rand)
    assert not close.competent and "not clearly above random play (6.0 +- 1.6 s.e.)" in close.note()
    with pytest.raises(ValueError, match="random_play"):
        assess_competence(ChoiceAgent(), EvalResult("highway-fast-v0", [21.0]), varied_states)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        assess_competence(ChoiceAgent(), EvalResult("highway-fast-v0", [21.0]), varied_states,
                          random_result=EvalResult("highway-fast-v0", [6.0]))


def test_random_play_is_seeded_on_the_agents_actions():
    from xrlkit.competence import random_play

    agent = ChoiceAgent()
    a = random_play(agent, "Pong", 1, protocol="ifepaper", seed=3, max_steps=50)
    b = random_play(agent, "Pong", 1, protocol="ifepaper", seed=3, max_steps=50)
    assert a.returns == b.returns and a.lengths == [50]


def test_recorded_competence_round_trips(tmp_path, varied_states):
    assert read_competence(tmp_path) is None and competence_note(tmp_path) == ""
    c = assess_competence(ChoiceAgent(fixed=0), EvalResult("Pong", [5.0]), varied_states)
    record_competence(tmp_path, c)
    assert read_competence(tmp_path)["competent"] is False and competence_note(tmp_path) == c.note()


@pytest.mark.parametrize("fixed", [None, 1])
def test_study_marks_a_degenerate_agent(tmp_path, fixed):
    """The first notebook records the agent's competence; the second saves a figure and prints the
    note, as the study notebooks do."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_agent.ipynb", f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy as np
from test_competence import ChoiceAgent
from xrlkit.competence import assess_competence, record_competence
from xrlkit.evaluation import EvalResult
states = np.zeros((20, 4, 84, 84), dtype=np.uint8)
states[:, 0, 0, 0] = np.arange(20) * 13
record_competence(out_dir, assess_competence(ChoiceAgent({fixed}), EvalResult(game, [3.0]), states))
""")
    _notebook(nbs / "02_figure.ipynb", """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from xrlkit.competence import competence_note
from xrlkit.study import save_figure
print(competence_note(out_dir) or "competent")
fig, ax = plt.subplots()
ax.set_title("a map")
save_figure(fig, out_dir, "map.png")
""")
    out = tmp_path / "study"
    index = run_study("Pong", out, notebook_dir=nbs)
    report = (out / "Pong" / "02_figure.ipynb").read_text()
    text = (out / "index.md").read_text()
    assert (out / "Pong" / "figures" / "map.png").is_file()
    if fixed is None:
        assert set(index.status) == {"done"} and "NOT COMPETENT" not in text and "NOT COMPETENT" not in report
    else:
        assert set(index.status) == {"degenerate"}
        assert "Pong: AGENT NOT COMPETENT" in text and "FIRE in 100% of states" in text
        assert "AGENT NOT COMPETENT" in report
        again = run_study("Pong", out, notebook_dir=nbs)  # finished notebooks are skipped, still marked
        assert set(again.status) == {"degenerate"}
