"""A "predict the agent" quiz, after the VisionMask paper's user study: a student sees a state
with one explanation of the agent's choice (or none, the control), guesses which action the agent
takes, and at the end sees how often each kind of explanation led to the right answer.

The questions (which state, which method) are drawn from a seed, so a class can share one quiz and
the answer key is reproducible. :meth:`Quiz.answer` scores a guess and :meth:`Quiz.results` sums
them up; :meth:`Quiz.widget` shows the questions with one button per action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from xrlkit import plotting
from xrlkit.agents.base import Agent, greedy_actions
from xrlkit.evaluation import Rollout
from xrlkit.explainers.base import Explainer

#: the method name of questions shown without an explanation
CONTROL = "none"


@dataclass(frozen=True)
class Question:
    """State ``state`` of the rollout, shown with method ``method``; the agent's action is ``answer``."""

    state: int
    method: str
    answer: int


class Quiz:
    """``n_questions`` questions on states of ``rollout``, the methods (the ``explainers``, plus the
    no-explanation control unless ``control=False``) spread evenly over them in a seeded random
    order; each state appears at most once. The explanation shown is the map of the agent's
    preferred (argmax) action, which is the answer."""

    def __init__(self, agent: Agent, rollout: Rollout, explainers: Mapping[str, Explainer], n_questions: int,
                 seed: int = 0, control: bool = True) -> None:
        methods = list(explainers) + ([CONTROL] if control else [])
        if not methods:
            raise ValueError("need at least one explainer or the control")
        if CONTROL in explainers:
            raise ValueError(f"{CONTROL!r} is the name of the control; rename that explainer")
        if not 1 <= n_questions <= len(rollout.states):
            raise ValueError(f"n_questions must be in [1, {len(rollout.states)}] (one per state), got {n_questions}")
        rng = np.random.default_rng(seed)
        states = np.sort(rng.choice(len(rollout.states), n_questions, replace=False))
        assigned = rng.permutation(np.resize(np.arange(len(methods)), n_questions))
        actions = greedy_actions(agent, rollout.states[states])
        self.agent, self.rollout, self.explainers = agent, rollout, dict(explainers)
        self.questions = [Question(int(s), methods[m], int(a)) for s, m, a in zip(states, assigned, actions)]
        self.responses: dict[int, int] = {}

    def figure(self, number: int) -> Figure:
        """Question ``number`` (0-based): the screen, with the explanation over it unless control."""
        q = self.questions[number]
        saliency = None
        if q.method != CONTROL:
            x = torch.as_tensor(self.rollout.states[q.state : q.state + 1]).float()
            saliency = self.explainers[q.method].explain(x, torch.tensor([q.answer]))[0]
        fig, ax = plt.subplots(figsize=(3.6, 4.4))
        shown = "no explanation" if q.method == CONTROL else f"explanation: {q.method}"
        plotting.overlay(ax, self.rollout.frames[q.state], saliency,
                         title=f"question {number + 1} of {len(self.questions)} ({shown})\nwhich action does the agent take?")
        fig.tight_layout()
        return fig

    def answer(self, number: int, action: int) -> bool:
        """Record the guess ``action`` for question ``number``; whether it is the agent's action."""
        if not 0 <= number < len(self.questions):
            raise ValueError(f"question {number} outside [0, {len(self.questions)})")
        if not 0 <= action < self.agent.n_actions:
            raise ValueError(f"action {action} outside [0, {self.agent.n_actions})")
        self.responses[number] = int(action)
        return self.questions[number].answer == action

    def answer_all(self, guesses: Sequence[int]) -> None:
        """Record one guess per question, in order (a scripted student)."""
        if len(guesses) != len(self.questions):
            raise ValueError(f"need {len(self.questions)} guesses, got {len(guesses)}")
        for number, guess in enumerate(guesses):
            self.answer(number, int(guess))

    def results(self) -> pd.DataFrame:
        """Per method: questions answered, right answers and accuracy; plus the chance level
        (1 / number of actions), the accuracy of guessing."""
        rows = []
        for method in dict.fromkeys(q.method for q in self.questions):
            asked = [n for n, q in enumerate(self.questions) if q.method == method and n in self.responses]
            right = sum(self.responses[n] == self.questions[n].answer for n in asked)
            rows.append({"method": method, "answered": len(asked), "right": right,
                         "accuracy": right / len(asked) if asked else float("nan")})
        table = pd.DataFrame(rows)
        table["chance"] = 1.0 / self.agent.n_actions
        return table

    def widget(self) -> Any:
        """One question at a time with a button per action; after the last, the results."""
        import ipywidgets as w
        from IPython.display import display

        out = w.Output()
        feedback = w.Label()
        buttons = [w.Button(description=name) for name in self.agent.action_meanings]
        current = {"number": 0}

        def show() -> None:
            out.clear_output(wait=True)
            with out:
                if current["number"] < len(self.questions):
                    fig = self.figure(current["number"])
                    display(fig)
                    plt.close(fig)
                else:
                    display(self.results())

        def pressed(button: Any) -> None:
            number = current["number"]
            if number >= len(self.questions):
                return
            right = self.answer(number, buttons.index(button))
            truth = self.agent.action_meanings[self.questions[number].answer]
            feedback.value = f"question {number + 1}: {'right' if right else 'wrong'}, the agent took {truth}"
            current["number"] += 1
            show()

        for b in buttons:
            b.on_click(pressed)
        show()
        box = w.VBox([out, w.HBox(buttons), feedback])
        box.buttons = buttons  # for tests and scripting
        return box
