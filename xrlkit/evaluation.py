"""Playing episodes with an agent: scores (unclipped game returns) and human-normalized scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import math

import numpy as np
from tqdm.auto import tqdm

from xrlkit.agents.base import Agent
from xrlkit.envs import Protocol, make_env, make_vector_env, rgb_frame
from xrlkit.games import human_normalized_score, resolve_game
from xrlkit.worlds import EPISODE_STATS, FIXED_EPISODE_STEPS


@dataclass
class EvalResult:
    """Unclipped returns of finished episodes, with mean and HNS of the mean; for the worlds of
    :data:`xrlkit.worlds.EPISODE_STATS`, ``stats`` holds their per-episode numbers too (e.g.
    ``{"crashed": [...], "speed": [...]}``, one value per episode, in the order of ``returns``)."""

    game: str
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)

    def stat_means(self) -> dict[str, float]:
        """Each of :attr:`stats` averaged over the episodes."""
        return {k: float(np.mean(v)) for k, v in self.stats.items() if v}

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def hns(self) -> float:
        return human_normalized_score(self.game, self.mean)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "hns": self.hns, "stat_means": self.stat_means()}


def evaluate(
    agent: Agent,
    game: str,
    n_episodes: int = 10,
    *,
    protocol: str | Protocol = "ifepaper",
    epsilon: float = 0.0,
    seed: int = 0,
    n_envs: int = 4,
    max_steps: int = 27_000,
    progress: bool = False,
) -> EvalResult:
    """Play ``n_episodes`` full (evaluation) episodes; returns are the game's own score.

    Episodes are split evenly over ``n_envs`` envs, each playing its share to the end, so short
    episodes are not favoured. Agents with a ``session(n_envs)`` method (recurrent policies) act
    through it, carrying their memory within each episode. ``max_steps`` agent steps (27k = the 108k-frame limit at
    frame-skip 4) bound an episode; one cut there counts with its return so far and ends that
    env's share.
    """
    game = resolve_game(game)
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    n_envs = min(n_envs, n_episodes)
    todo = np.array([n_episodes // n_envs + (i < n_episodes % n_envs) for i in range(n_envs)])
    env = make_vector_env(game, n_envs, protocol, train=False, seed=seed)
    obs, _ = env.reset(seed=seed)
    stat_kinds = EPISODE_STATS.get(game, {})
    result = EvalResult(game, stats={k: [] for k in stat_kinds})
    ret, length, start = np.zeros(n_envs), np.zeros(n_envs, dtype=int), np.ones(n_envs, dtype=bool)
    summed = {k: np.zeros(n_envs) for k in stat_kinds}
    session = agent.session(n_envs) if hasattr(agent, "session") else None
    bar = tqdm(total=n_episodes, desc=f"eval {game}", disable=not progress)
    while todo.any():
        actions = session.act(obs, start, epsilon=epsilon) if session else agent.act(obs, epsilon=epsilon)
        obs, reward, term, trunc, info = env.step(actions)
        ended = term | trunc
        ret += reward
        length += 1
        # an ended episode's last info is in final_info (info already belongs to the next episode,
        # whose reset info may lack the key)
        last = info.get("final_info", {})
        now = {k: np.where(ended, last.get(k, 0.0), info.get(k, 0.0)) for k in stat_kinds}
        for k in stat_kinds:
            summed[k] += now[k]
        cut = length >= max_steps
        for i in np.flatnonzero((ended | cut) & (todo > 0)):
            result.returns.append(float(ret[i]))
            result.lengths.append(int(length[i]))
            for k, kind in stat_kinds.items():
                result.stats[k].append(float(now[k][i] if kind == "last" else summed[k][i] / length[i]))
            todo[i] = 0 if cut[i] else todo[i] - 1
            bar.update(1)
        start = ended
        ret[start] = 0.0
        length[start] = 0
        for k in stat_kinds:
            summed[k][start] = 0.0
    bar.close()
    env.close()
    return result


@dataclass
class Rollout:
    """States an agent met while playing, with what it did. ``states uint8 [N, 4, 84, 84]``,
    ``frames uint8 [N, 210, 160, 3]`` (raw screen at each state), ``actions int64 [N]``,
    ``rewards float [N]`` (unclipped), ``episode int [N]`` (index of the episode each came from),
    ``step int [N]`` (agent steps into that episode: 0 is its first state)."""

    states: np.ndarray
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode: np.ndarray
    step: np.ndarray


def spread_every(game: str, every: int) -> int:
    """The stride :func:`rollout` keeps states at: ``every``, except in a world whose episodes all
    last the same number of steps (:data:`xrlkit.worlds.FIXED_EPISODE_STEPS`), where it is the
    smallest stride >= ``every`` with no factor in common with that length. Every 30th step of
    highway-fast-v0's 30-step episodes would be the first step of each; every 31st walks through
    all 30 points of an episode."""
    length = FIXED_EPISODE_STEPS.get(resolve_game(game))
    while length is not None and math.gcd(every, length) != 1:
        every += 1
    return every


def rollout(
    agent: Agent,
    game: str,
    n_states: int,
    *,
    protocol: str | Protocol = "ifepaper",
    seed: int = 0,
    epsilon: float = 0.0,
    every: int = 1,
) -> Rollout:
    """Play ``agent`` (epsilon-greedy) on an evaluation env and keep every ``every``-th state until
    ``n_states`` are kept (``every > 1`` avoids near-duplicate states). Episodes restart when
    they end; the step count runs on across them, with the stride of :func:`spread_every`, so
    the states come from every point of an episode. Seeded: the same arguments give the same
    states."""
    if n_states < 1 or every < 1:
        raise ValueError(f"need n_states >= 1 and every >= 1, got {n_states} and {every}")
    every = spread_every(game, every)
    env = make_env(game, protocol, seed=seed)
    obs, _ = env.reset(seed=seed)
    keep: dict[str, list] = {"states": [], "frames": [], "actions": [], "rewards": [], "episode": [], "step": []}
    step, episode, episode_start = 0, 0, 0
    try:
        while len(keep["states"]) < n_states:
            action = int(agent.act(np.asarray(obs)[None], epsilon=epsilon)[0])
            if step % every == 0:
                keep["states"].append(np.asarray(obs, dtype=np.uint8))
                keep["frames"].append(rgb_frame(env))
                keep["actions"].append(action)
                keep["episode"].append(episode)
                keep["step"].append(step - episode_start)
            obs, reward, term, trunc, _ = env.step(action)
            if step % every == 0:
                keep["rewards"].append(float(reward))
            step += 1
            if term or trunc:
                obs, _ = env.reset()
                episode, episode_start = episode + 1, step
    finally:
        env.close()
    return Rollout(**{k: np.asarray(v) for k, v in keep.items()})
