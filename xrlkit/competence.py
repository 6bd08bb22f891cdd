"""Is an agent competent enough for explanations of it to mean something?

An explanation says why an agent chose its action. When the agent plays no better than random,
or picks the same action whatever the screen shows, there is no "why": every explainer, random
included, then scores alike and any map is as good as noise. :func:`assess_competence` measures
what tells such an agent apart, the study records it (notebook 1 writes
``results/competence.json``), and :func:`competence_note` gives the warning every later report
and figure carries for it.

An agent is **not competent** when its mean score is not clearly above the random policy's
(HNS below :data:`MIN_HNS`, with the reference scores of :data:`xrlkit.games.REFERENCE_SCORES`;
a few evaluation episodes of a random-like agent land a little above random by chance) or when
one action is its preferred (argmax) action in at least :data:`TOP_ACTION_LIMIT` of the states.
Where random play scores above zero, :data:`MIN_RANDOM_MULTIPLE` times its score also counts as
clearly above it: a few games have a human reference hundreds of times random's (Seaquest: 42,055
against 68), where 5% of the way to human (2,167 points) asks for far more than play that is
plainly not random (the expert-zoo target for Seaquest is 800, 12x random).
A world other than Atari has no human reference: there the yardstick is random play measured on
the same seeds (:func:`random_play`, at least 2 episodes), and the agent's mean must lie
:data:`MIN_RANDOM_SES` standard errors above random play's mean (its spread can be wide: ViZDoom
Basic's random episodes range from -375 to +95).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xrlkit.agents.base import Agent, RandomAgent, greedy_actions
from xrlkit.evaluation import EvalResult, evaluate
from xrlkit.games import REFERENCE_SCORES

#: share of states with one and the same preferred action from which an agent is degenerate
TOP_ACTION_LIMIT = 0.95
#: human-normalized score below which an agent plays no better than random: 5% of the way to human
MIN_HNS = 0.05
#: or, where random play scores above zero, this many times its score (see the module docstring)
MIN_RANDOM_MULTIPLE = 10.0
#: worlds without a human score: how many standard errors of random play's mean score the
#: agent's mean must lie above it
MIN_RANDOM_SES = 2.0


@dataclass(frozen=True)
class Competence:
    """What the agent scored and how it chose its actions over a set of states."""

    game: str
    score: float
    """mean unclipped score of the evaluation episodes"""
    episodes: int
    random_score: float
    human_score: float
    hns: float
    action_entropy: float
    """entropy of the preferred actions' frequencies over the states, divided by log(n_actions): 0 = one action, 1 = all equally often"""
    top_action: str
    top_action_share: float
    n_states: int
    random_se: float = float("nan")
    """standard error of random play's mean score (worlds without a human score)"""

    @property
    def beats_random(self) -> bool:
        """Is the score clearly above random play's, by the module docstring's rules: with a human
        reference, HNS of at least :data:`MIN_HNS` or :data:`MIN_RANDOM_MULTIPLE` times a positive
        random score; without one, :data:`MIN_RANDOM_SES` standard errors above random play."""
        if np.isnan(self.human_score):
            return self.score > self.random_score + MIN_RANDOM_SES * self.random_se
        return self.hns >= MIN_HNS or (self.random_score > 0 and self.score >= MIN_RANDOM_MULTIPLE * self.random_score)

    @property
    def reasons(self) -> list[str]:
        """Why the agent is not competent (empty when it is)."""
        out = []
        if not self.beats_random and np.isnan(self.human_score):
            out.append(f"scores {self.score:.1f}, not clearly above random play ({self.random_score:.1f} "
                       f"+- {self.random_se:.1f} s.e.)")
        elif not self.beats_random:
            multiple = f", under {MIN_RANDOM_MULTIPLE:g}x random" if self.random_score > 0 else ""
            out.append(f"scores {self.score:.1f}, no better than random ({self.random_score:.1f}; "
                       f"HNS {self.hns:.2f} < {MIN_HNS}{multiple})")
        if self.top_action_share >= TOP_ACTION_LIMIT:
            out.append(f"chooses {self.top_action} in {self.top_action_share:.0%} of states")
        return out

    @property
    def competent(self) -> bool:
        return not self.reasons

    def note(self) -> str:
        """The warning for reports and figure titles ("" for a competent agent)."""
        return _note("; ".join(self.reasons))

    def to_dict(self) -> dict:
        return {**asdict(self), "competent": self.competent, "reasons": "; ".join(self.reasons)}


def random_play(agent: Agent, game: str, episodes: int, *, protocol: str, seed: int,
                max_steps: int = 27_000) -> EvalResult:
    """Episodes of a uniformly random policy over ``agent``'s actions, on the seeds ``agent``'s
    evaluation used: the yardstick of a world without reference scores. ``max_steps`` as
    :func:`xrlkit.evaluation.evaluate`'s (27k: the 108k-frame limit)."""
    policy = RandomAgent(agent.n_actions, agent.action_meanings, seed=seed)
    return evaluate(policy, game, episodes, protocol=protocol, seed=seed, max_steps=max_steps)


def assess_competence(agent: Agent, result: EvalResult, states: np.ndarray, batch_size: int = 256,
                      random_result: EvalResult | None = None) -> Competence:
    """Competence of ``agent`` from its evaluation ``result`` (full episodes of ``result.game``)
    and its preferred actions on ``states uint8 [N, 4, 84, 84]`` (states of its own play, spread
    over whole episodes). A world without reference scores needs ``random_result``
    (:func:`random_play`)."""
    if not result.returns:
        raise ValueError("the evaluation result holds no finished episode")
    if result.game not in REFERENCE_SCORES and (random_result is None or len(random_result.returns) < 2):
        raise ValueError(f"{result.game} has no reference scores: pass random_result=random_play(...) "
                         "with at least 2 episodes")
    if len(states) == 0:
        raise ValueError("need at least one state to measure how the agent chooses its actions")
    actions = greedy_actions(agent, states, batch_size)
    counts = np.bincount(actions, minlength=agent.n_actions)
    freq = counts / counts.sum()
    nonzero = freq[freq > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / np.log(agent.n_actions)) if agent.n_actions > 1 else 0.0
    top = int(counts.argmax())
    random_se = float("nan")
    if result.game in REFERENCE_SCORES:
        random_score, human_score = REFERENCE_SCORES[result.game]
    else:
        random_score, human_score = random_result.mean, float("nan")
        random_se = float(np.std(random_result.returns, ddof=1) / np.sqrt(len(random_result.returns)))
    return Competence(
        game=result.game, score=result.mean, episodes=len(result.returns), random_score=random_score,
        human_score=human_score, hns=result.hns, action_entropy=entropy, top_action=agent.action_meanings[top],
        top_action_share=float(freq[top]), n_states=len(states), random_se=random_se,
    )


def record_competence(out_dir: str | Path, competence: Competence) -> Path:
    """Write ``out_dir/results/competence.json`` (a study result row, see :func:`xrlkit.study.record`)."""
    from xrlkit.study import record

    return record(out_dir, "competence", competence.to_dict())


def read_competence(out_dir: str | Path) -> dict | None:
    """The competence row recorded in ``out_dir`` by notebook 1, or ``None`` when there is none."""
    path = Path(out_dir) / "results" / "competence.json"
    return json.loads(path.read_text())[0] if path.is_file() else None


def competence_note(out_dir: str | Path) -> str:
    """The warning recorded for the agent of ``out_dir`` ("" when competent or not assessed)."""
    row = read_competence(out_dir)
    return "" if row is None else _note(row["reasons"])


def _note(reasons: str) -> str:
    return f"AGENT NOT COMPETENT, explanations are not meaningful: {reasons}" if reasons else ""
