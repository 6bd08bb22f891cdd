"""Atari environments for the Atari-57 games, in named evaluation protocols.

Observations are ``uint8 [4, 84, 84]`` (four stacked gray frames, channels first); a vector env
gives ``uint8 [N, 4, 84, 84]``. Two protocols:

* ``ifepaper`` -- as the IFE / Fast Rainbow code: no sticky actions, up to 30 no-op starts,
  frame-skip 4 with max-pool over the last two frames, 84x84 gray, 4-frame stack, 108k-frame
  (30 min) episode limit; during training, a lost life ends the episode for bootstrapping
  (the game itself goes on) and rewards are sign-clipped.
* ``machado`` -- Machado et al. (2018), ALE v5 defaults: sticky actions with p = 0.25, no no-op
  starts, full episodes (no life-loss signal) also during training; sign-clipped training rewards.
* ``rlzoo`` -- what RL-Zoo / Stable-Baselines3 Atari agents see: ``{Game}NoFrameskip-v4`` with
  SB3's ``AtariWrapper`` defaults (30 no-op starts, frame-skip 4 with max-pool, life loss is
  terminal, FIRE on reset, 84x84 gray, clipped rewards) and a zero-padded 4-frame stack, as
  ``VecFrameStack`` builds it; see :func:`make_rlzoo_env`.

Evaluation envs (``train=False``) never clip rewards or cut episodes at a life loss, so an
episode's summed reward is the game score. Raw RGB frames stay reachable via :func:`rgb_frame`.

:func:`make_env`, :func:`make_vector_env`, :func:`action_meanings` and :func:`rgb_frame` also take
the other worlds of :mod:`xrlkit.worlds` by name (``"highway-fast-v0"``, ``"VizdoomBasic-v1"``),
with the same observations; the Atari protocols do not apply to them.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any, SupportsFloat

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.atari_wrappers import AtariWrapper, ClipRewardEnv, EpisodicLifeEnv

from xrlkit.games import is_atari, resolve_game
from xrlkit.registry import choose
from xrlkit.shapes import FRAME_STACK, OBS_SHAPE, SCREEN_SIZE
from xrlkit.worlds import SUBPROCESS_WORLDS, make_world_env, world_action_meanings, world_frame, world_kind

gym.register_envs(ale_py)



@dataclass(frozen=True)
class Protocol:
    """An Atari evaluation protocol (what the agent sees and how episodes end)."""

    name: str
    repeat_action_probability: float
    noop_max: int
    episodic_life: bool  # only applies to training envs
    clip_rewards: bool  # only applies to training envs
    frame_skip: int = 4
    max_episode_frames: int = 108_000
    reward_scale: float = 1.0  # learning rewards are reward * scale where they are not sign-clipped

    def learning_reward(self, reward: np.ndarray) -> np.ndarray:
        """What a learner trains on from the raw game rewards ``[N]``: their sign where the
        protocol clips, else the rewards times :attr:`reward_scale`."""
        return np.sign(reward) if self.clip_rewards else reward * self.reward_scale


PROTOCOLS: dict[str, Protocol] = {
    "ifepaper": Protocol("ifepaper", repeat_action_probability=0.0, noop_max=30, episodic_life=True, clip_rewards=True),
    "machado": Protocol("machado", repeat_action_probability=0.25, noop_max=0, episodic_life=False, clip_rewards=True),
    "rlzoo": Protocol("rlzoo", repeat_action_probability=0.0, noop_max=30, episodic_life=True, clip_rewards=True),
    # ViZDoom: a kill is worth +101 against -1 a tic, which sign-clipping flattens to +1 against -1 a
    # step (PPO on VizdoomBasic-v1 did not learn in 200k steps that way); scaled instead.
    "doom": Protocol("doom", repeat_action_probability=0.0, noop_max=0, episodic_life=False, clip_rewards=False,
                     reward_scale=0.01),
    # highway-env: its reward is already in [0, 1] a step (speed and right lane, 0 at a crash);
    # sign-clipping would pay every step the same and drop the incentive to drive fast. One
    # decision a simulated second, so a "frame" here is a step.
    # Super Mario Bros: its reward (progress to the right, a time penalty, -15 at death; each
    # frame's clipped to [-15, 15], summed over 4) keeps its sign and size, scaled to about [-1, 1]
    "mario": Protocol("mario", repeat_action_probability=0.0, noop_max=0, episodic_life=False, clip_rewards=False,
                      reward_scale=1 / 15),
    "highway": Protocol("highway", repeat_action_probability=0.0, noop_max=0, episodic_life=False,
                        clip_rewards=False, frame_skip=1),
}


def default_protocol(game: str, algo: str = "ppo") -> str:
    """The protocol ``algo`` trains ``game`` under unless told: ``doom`` for the ViZDoom worlds,
    ``highway`` for highway-env, ``mario`` for Super Mario Bros, ``rlzoo`` for the Stable-Baselines3 learners (``sb3-*``,
    ``dqn``, ...), else ``ifepaper``."""
    name = resolve_game(game)
    if not is_atari(name):  # each family of worlds trains under the protocol named after it
        return world_kind(name)
    return "ifepaper" if algo in ("ppo", "rainbow") else "rlzoo"


def get_protocol(name: str | Protocol) -> Protocol:
    """Look a protocol up by name; raises ``ValueError`` listing the known ones."""
    if isinstance(name, Protocol):
        return name
    choose("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def ale_id(game: str) -> str:
    """The gymnasium id of a game's ALE v5 environment, e.g. ``ALE/Pong-v5``."""
    return f"ALE/{resolve_game(game)}-v5"


def make_env(
    game: str,
    protocol: str | Protocol = "ifepaper",
    *,
    train: bool = False,
    seed: int | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """One preprocessed Atari env. Observations ``uint8 [4, 84, 84]``.

    Built from gymnasium's ``AtariPreprocessing`` (no-op starts, frame-skip with max-pool,
    resize, gray) and Stable-Baselines3's ``EpisodicLifeEnv`` / ``ClipRewardEnv``: the SB3
    life-loss wrapper is used because gymnasium's ``terminal_on_life_loss`` resets the whole
    game at a life loss, whereas the DQN convention keeps playing the same game.

    A world other than Atari (:mod:`xrlkit.worlds`) is built by :func:`xrlkit.worlds.make_world_env`
    (``protocol`` and ``train`` do not apply to it).
    """
    if not is_atari(resolve_game(game)):
        return make_world_env(game, seed=seed, render_mode=render_mode)
    proto = get_protocol(protocol)
    if proto.name == "rlzoo":
        return make_rlzoo_env(game, train=train, seed=seed, render_mode=render_mode)
    env = gym.make(
        ale_id(game),
        frameskip=1,
        repeat_action_probability=proto.repeat_action_probability,
        full_action_space=False,
        max_num_frames_per_episode=proto.max_episode_frames,
        render_mode=render_mode,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=proto.noop_max, frame_skip=proto.frame_skip, screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
    )
    if train and proto.episodic_life:
        env = EpisodicLifeEnv(env)
    if train and proto.clip_rewards:
        env = ClipRewardEnv(env)
    env = gym.wrappers.FrameStackObservation(env, FRAME_STACK)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector_env(
    game: str,
    n_envs: int,
    protocol: str | Protocol = "ifepaper",
    *,
    train: bool = False,
    seed: int = 0,
    backend: str = "auto",
    threads: int = 0,
) -> gym.vector.VectorEnv:
    """``n_envs`` envs stepping together; observations ``uint8 [n_envs, 4, 84, 84]``.

    Autoreset mode is ``SAME_STEP`` for every backend: the observation returned with
    ``terminated | truncated`` is already the next episode's first one, and the last one of
    the ended episode is in ``info["final_obs"]``.

    ``backend="ale"`` uses ale-py's C++ ``AtariVectorEnv`` (multi-threaded, much faster). Its
    defaults differ from :func:`make_env` and are overridden here: it clips rewards and presses
    FIRE on reset by default (we do neither unless the protocol asks). ``backend="gym"`` steps
    :func:`make_env` copies in one process, exactly as the single env. ``backend="auto"`` (the
    default) picks ``gym`` where ale-py's env cannot reproduce the protocol and ``ale`` elsewhere:

    * training envs with the life-loss signal: ale-py's ``episodic_life`` restarts the whole game
      at a life loss (lives back to full), unlike the DQN convention of playing on;
    * the ``rlzoo`` protocol: SB3's ``AtariWrapper`` (FIRE on reset, its own no-op and max-pool
      wrappers) has no ale-py equivalent.

    The two backends pad the first stack of an episode differently (ale: zeros; gym: the first
    frame repeated). ``threads`` sets the ale backend's worker threads (0: one per core).
    ``backend="async"`` steps :func:`make_env` copies in one process each (gymnasium's
    ``AsyncVectorEnv``); ``auto`` picks it for the worlds of
    :data:`xrlkit.worlds.SUBPROCESS_WORLDS` and ``gym`` for the other worlds. Every backend
    offers ale-py's ``send(actions)`` / ``recv()`` as well as ``step``.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    proto = get_protocol(protocol)
    name = resolve_game(game)
    if not is_atari(name):  # other worlds: in-process copies, or one process each where slow
        if backend == "ale":
            raise ValueError(f"{name} is not an Atari game; the ale backend runs Atari only (use backend='gym')")
        if backend == "auto":
            backend = "async" if name in SUBPROCESS_WORLDS and n_envs > 1 else "gym"
    if backend == "auto":
        backend = "gym" if proto.name == "rlzoo" or (train and proto.episodic_life) else "ale"
    elif backend == "ale" and (proto.name == "rlzoo" or (train and proto.episodic_life)):
        raise ValueError(f"the ale backend cannot reproduce protocol {proto.name!r} for training; use backend='gym'")
    if backend == "ale":
        from ale_py.vector_env import AtariVectorEnv

        snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
        env: gym.vector.VectorEnv = AtariVectorEnv(
            game=snake, num_envs=n_envs, num_threads=threads,
            repeat_action_probability=proto.repeat_action_probability,
            noop_max=proto.noop_max, frameskip=proto.frame_skip,
            max_num_frames_per_episode=proto.max_episode_frames,
            img_height=SCREEN_SIZE, img_width=SCREEN_SIZE, stack_num=FRAME_STACK,
            grayscale=True, maxpool=True,
            reward_clipping=train and proto.clip_rewards,
            use_fire_reset=False,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    elif backend == "gym":
        env = _SyncVectorEnv(
            [lambda: make_env(name, proto, train=train) for _ in range(n_envs)],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    elif backend == "async":
        env = _AsyncVectorEnv(
            [functools.partial(_worker_env, name, proto, train) for _ in range(n_envs)],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    else:
        choose("backend", backend, ("ale", "gym", "async"))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


class _SyncVectorEnv(gym.vector.SyncVectorEnv):
    """gymnasium's in-process vector env with ale-py's ``send(actions)`` / ``recv()`` pair, so a
    loop that overlaps stepping with inference runs on both backends (here ``recv`` steps)."""

    _actions: Any = None

    def send(self, actions: Any) -> None:
        self._actions = actions

    def recv(self) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._actions is None:
            raise RuntimeError("recv() before send()")
        actions, self._actions = self._actions, None
        return self.step(actions)


def _worker_env(name: str, proto: Protocol, train: bool) -> gym.Env:
    """An env built inside a worker process of the ``async`` backend, which first leaves the
    trainer's process group: Ctrl-C and ``timeout`` signal the whole group, and a worker killed
    by that signal would leave the trainer unable to finish the step it waits on and write its
    checkpoint. The trainer handles the signal and closes its workers; a worker whose trainer was
    killed outright exits when its pipe closes. (gymnasium also calls this once in the trainer's
    own process, for the spaces: that call leaves the process group alone.)"""
    if multiprocessing.parent_process() is not None:
        os.setpgid(0, 0)
    return make_env(name, proto, train=train)


class _AsyncVectorEnv(gym.vector.AsyncVectorEnv):
    """gymnasium's vector env with one process per env, with ale-py's ``send`` / ``recv`` pair:
    the envs step on every core while the policy picks another group's actions."""

    def send(self, actions: Any) -> None:
        self.step_async(actions)

    def recv(self) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        return self.step_wait()


class _ScoreTally(gym.Wrapper):
    """Sums every raw game reward that passes through it, also those of steps taken in resets."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.total = 0.0

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total += float(reward)
        return obs, reward, terminated, truncated, info


class _RLZooFrameStack(gym.Wrapper):
    """Zero-padded 4-frame stack of ``WarpFrame`` output ``[84, 84, 1]``, channels first.

    Restarts (zeros + newest frame) at every reset, as SB3's ``VecFrameStack`` does when an
    episode ends. With ``continue_on_life_loss`` a life loss reported by ``EpisodicLifeEnv`` is
    not passed on: the wrapper performs the reset RL-Zoo's VecEnv would do (a no-op step, then
    FIRE), restarts the stack and continues the same episode until the game is over; the reward
    is then the raw game reward counted by ``tally`` (including the reset's steps).
    """

    def __init__(self, env: gym.Env, tally: _ScoreTally, continue_on_life_loss: bool) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8)
        self._tally = tally
        self._continue = continue_on_life_loss
        self._frames = np.zeros(OBS_SHAPE, np.uint8)
        lives_env = env
        while not isinstance(lives_env, EpisodicLifeEnv):
            lives_env = lives_env.env  # type: ignore[attr-defined]
        self._lives_env = lives_env

    def _restart(self, frame: np.ndarray) -> np.ndarray:
        self._frames[:] = 0
        self._frames[-1] = frame[..., 0]
        return self._frames.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new game when ``seed`` is given or life losses are handled inside (evaluation);
        otherwise SB3's behaviour: after a life loss, continue the same game (no-op + FIRE)."""
        if seed is not None or self._continue:
            self._lives_env.was_real_done = True
        obs, info = self.env.reset(seed=seed, options=options)
        return self._restart(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        before = self._tally.total
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self._continue:
            self._frames[:-1] = self._frames[1:]
            self._frames[-1] = obs[..., 0]
            return self._frames.copy(), reward, terminated, truncated, info
        if terminated and not truncated and not self._lives_env.was_real_done:
            obs, info = self.env.reset()
            info = {**info, "life_lost": True}
            stacked, terminated = self._restart(obs), False
        else:
            self._frames[:-1] = self._frames[1:]
            self._frames[-1] = obs[..., 0]
            stacked = self._frames.copy()
        return stacked, self._tally.total - before, terminated, truncated, info


def make_rlzoo_env(
    game: str, *, train: bool = False, seed: int | None = None, render_mode: str | None = None
) -> gym.Env:
    """One env as RL-Zoo builds it for Atari; observations ``uint8 [4, 84, 84]``, oldest frame first.

    ``{Game}NoFrameskip-v4`` + SB3 ``AtariWrapper`` with the defaults RL-Zoo's ``atari`` presets
    use + a zero-padded 4-frame stack (as ``VecFrameStack``), transposed to channels first as
    SB3's ``VecTransposeImage`` does before the policy sees it.

    * ``train=True``: exactly RL-Zoo's training env: a lost life terminates the episode (the
      following ``reset()`` continues the same game with a no-op step and FIRE; ``reset(seed=...)``
      always starts a new game) and rewards are sign-clipped.
    * ``train=False``: the same observations as RL-Zoo's evaluation (which keeps the wrapper and
      its life-loss resets, scoring with ``Monitor``): a lost life is handled inside the env
      (no-op + FIRE, frame stack restarted, ``info["life_lost"] = True``) and the episode ends
      at game over; rewards are the unclipped game score, so returns are comparable to RL-Zoo's
      reported scores.
    """
    env = gym.make(f"{resolve_game(game)}NoFrameskip-v4", render_mode=render_mode)
    tally = _ScoreTally(env)
    wrapped = AtariWrapper(tally, terminal_on_life_loss=True, clip_reward=train)
    out: gym.Env = _RLZooFrameStack(wrapped, tally, continue_on_life_loss=not train)
    if seed is not None:
        out.reset(seed=seed)
        out.action_space.seed(seed)
    return out


def rgb_frame(env: gym.Env) -> np.ndarray:
    """The current raw screen: ALE's ``uint8 [210, 160, 3]``, another world's own size."""
    if not hasattr(env.unwrapped, "ale"):
        return world_frame(env)
    return env.unwrapped.ale.getScreenRGB()  # type: ignore[attr-defined]


def action_meanings(game: str) -> tuple[str, ...]:
    """Names of the minimal action set of ``game`` ("NOOP", "FIRE", ...), in action order."""
    if not is_atari(resolve_game(game)):
        env = make_world_env(game)
        try:
            return world_action_meanings(env)
        finally:
            env.close()
    env = gym.make(ale_id(game))
    try:
        return tuple(env.unwrapped.get_action_meanings())  # type: ignore[attr-defined]
    finally:
        env.close()


def check_obs(obs: Any) -> None:
    """Raise ``ValueError`` unless ``obs`` has shape ``[B, 4, 84, 84]``."""
    shape = tuple(getattr(obs, "shape", ()))
    if len(shape) != 4 or shape[1:] != OBS_SHAPE:
        raise ValueError(f"expected a batch of stacked frames of shape [B, 4, 84, 84], got {shape}")
