"""The "predict the agent" quiz: a seeded answer key, balanced methods, scoring, the widget."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_explainers import COLS, ROWS, RegionAgent  # noqa: E402

from xrlkit.evaluation import Rollout  # noqa: E402
from xrlkit.explainers import make_explainer  # noqa: E402
from xrlkit.quiz import CONTROL, Quiz  # noqa: E402


@pytest.fixture(scope="module")
def setting():
    """Twelve states; the region the agent reads is lit in the even ones and dark in the odd
    ones (the agent prefers REGION in both: its logits tie at 0 there and argmax takes the first)."""
    states = np.zeros((12, 4, 84, 84), dtype=np.uint8)
    states[::2, :, ROWS, COLS] = 200
    rollout = Rollout(states, np.zeros((12, 210, 160, 3), np.uint8), np.zeros(12, int), np.zeros(12), np.zeros(12, int), np.arange(12))
    agent = RegionAgent()
    return agent, rollout, {"grad": make_explainer("grad", agent), "random": make_explainer("random", agent)}


def test_answer_key_is_seeded_and_methods_balanced(setting):
    agent, rollout, explainers = setting
    a, b = Quiz(agent, rollout, explainers, 9, seed=3), Quiz(agent, rollout, explainers, 9, seed=3)
    assert a.questions == b.questions
    assert a.questions != Quiz(agent, rollout, explainers, 9, seed=4).questions
    methods = [q.method for q in a.questions]
    assert sorted(set(methods)) == sorted(["grad", "random", CONTROL])
    assert all(methods.count(m) == 3 for m in set(methods))
    assert len({q.state for q in a.questions}) == 9
    assert all(q.answer == int(agent.logits(rollout.states[q.state:q.state + 1]).argmax()) for q in a.questions)


def test_scoring_per_method(setting):
    agent, rollout, explainers = setting
    quiz = Quiz(agent, rollout, explainers, 6, seed=0)
    truth = [q.answer for q in quiz.questions]
    guesses = [a if n % 2 == 0 else 1 - a for n, a in enumerate(truth)]  # every other one wrong
    quiz.answer_all(guesses)
    res = quiz.results().set_index("method")
    assert res["answered"].sum() == 6 and res["right"].sum() == 3
    for method, row in res.iterrows():
        picked = [n for n, q in enumerate(quiz.questions) if q.method == method]
        assert row["right"] == sum(guesses[n] == truth[n] for n in picked)
    assert (res["chance"] == 0.5).all()
    with pytest.raises(ValueError, match="need 6 guesses"):
        quiz.answer_all([0])
    with pytest.raises(ValueError, match="action 2"):
        quiz.answer(0, 2)


def test_figures_and_widget(setting):
    agent, rollout, explainers = setting
    quiz = Quiz(agent, rollout, explainers, 3, seed=1)
    shown = {q.method: quiz.figure(n).axes[0].get_title() for n, q in enumerate(quiz.questions)}
    assert any("no explanation" in t for t in shown.values()) and all("question" in t for t in shown.values())
    box = quiz.widget()
    for n in range(3):
        box.buttons[quiz.questions[n].answer].click()  # a perfect student
    res = quiz.results()
    assert (res["accuracy"] == 1.0).all() and res["answered"].sum() == 3
    box.buttons[0].click()  # after the last question, clicks change nothing
    assert quiz.results()["answered"].sum() == 3


def test_bad_setups(setting):
    agent, rollout, explainers = setting
    with pytest.raises(ValueError, match="n_questions"):
        Quiz(agent, rollout, explainers, 13)
    with pytest.raises(ValueError, match="control"):
        Quiz(agent, rollout, {CONTROL: explainers["grad"]}, 3)
    with pytest.raises(ValueError, match="at least one"):
        Quiz(agent, rollout, {}, 3, control=False)
