"""The VisionMask paper's worlds beyond Atari, behind the same observation contract.

Every world gives what every xrlkit agent, explainer and metric reads from an Atari game:
observations ``uint8 [4, 84, 84]`` (four stacked gray frames, oldest first), a discrete action
space with names, seeded resets, and the raw RGB screen for figures (:func:`world_frame`). 84x84
for every world keeps one contract, so nothing downstream has a per-world branch; it is also what
the paper's agents saw of the Atari games, and enough to show the car ahead or a Doom monster
(``benchmarks`` will say what it costs).

=============================  ============================================================
``highway-fast-v0``            highway-env (pure Python): the ego car on a multi-lane road;
                               actions LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER; the
                               observation is highway-env's own ego-centred gray render,
                               stacked by highway-env. ~20 steps/s here, bound by its
                               pure-Python traffic model (see SUBPROCESS_WORLDS).
``VizdoomBasic-v1``,           ViZDoom 1.3 scenarios through its gymnasium wrapper: the screen
``VizdoomDefendCenter-v1``,    (240x320 RGB) to gray, resized, every 4th frame (frame skip 4,
``VizdoomHealthGathering-v1``  the reward summed), 4 stacked. Actions are the wrapper's discrete
                               button combinations, named by their buttons ("NOOP" for none).
=============================  ============================================================

Super Mario Bros is not here yet: on Python 3.11 only gym-super-mario-bros 7.4 with nes-py 8.2
installs, on the old ``gym`` API, and nes-py's ROM parsing fails under numpy 2.
Worlds have no human reference score, so their HNS is NaN (:func:`xrlkit.games.human_normalized_score`).
"""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from xrlkit.games import WORLDS, resolve_game
from xrlkit.shapes import FRAME_STACK, SCREEN_SIZE

DOOM_FRAME_SKIP = 4
#: worlds whose pure-Python simulation is the bottleneck (highway-env: its traffic model's
#: neighbour search, not its rendering, takes most of a step): :func:`xrlkit.envs.make_vector_env`
#: steps them in one process per env, so they use every core
SUBPROCESS_WORLDS = frozenset({"highway-fast-v0"})


def _highway(render_mode: str | None) -> gym.Env:
    import highway_env

    gym.register_envs(highway_env)
    return gym.make("highway-fast-v0", render_mode="rgb_array", config={
        "observation": {"type": "GrayscaleObservation", "observation_shape": (SCREEN_SIZE, SCREEN_SIZE),
                        "stack_size": FRAME_STACK, "weights": [0.2989, 0.5870, 0.1140], "scaling": 1.75},
    })


class _DoomFrames(gym.Wrapper):
    """ViZDoom's ``{"screen": uint8 [240, 320, 3], ...}`` -> ``uint8 [4, 84, 84]``: gray,
    area-resized, the last four kept (the stack starts as four copies of the first frame)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (FRAME_STACK, SCREEN_SIZE, SCREEN_SIZE), np.uint8)
        self._frames = np.zeros(self.observation_space.shape, np.uint8)

    @staticmethod
    def _gray(obs: dict[str, Any]) -> np.ndarray:
        gray = cv2.cvtColor(obs["screen"], cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (SCREEN_SIZE, SCREEN_SIZE), interpolation=cv2.INTER_AREA)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._frames[:] = self._gray(obs)
        return self._frames.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames[:-1] = self._frames[1:]
        if "screen" in obs:  # the wrapper sends an empty screen on the terminal step: keep the last
            self._frames[-1] = self._gray(obs)
        return self._frames.copy(), float(reward), terminated, truncated, info


def _doom(name: str, render_mode: str | None) -> gym.Env:
    from vizdoom import gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)

    return _DoomFrames(gym.make(name, render_mode="rgb_array", frame_skip=DOOM_FRAME_SKIP))


def make_world_env(name: str, *, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One env of a non-Atari world (see the module docstring); observations ``uint8 [4, 84, 84]``.
    ``ValueError`` with the closest names for an unknown world; ``ImportError`` saying which
    package to install when the world's package is missing."""
    name = resolve_game(name)
    if name not in WORLDS:
        raise ValueError(f"{name} is an Atari game, not another world; use xrlkit.envs.make_env")
    try:
        env = _highway(render_mode) if name.startswith("highway") else _doom(name, render_mode)
    except ImportError as err:
        package = "highway-env" if name.startswith("highway") else "vizdoom"
        raise ImportError(f"{name} needs {package}: pip install 'xrlkit[worlds]' (the README's set-up installs it)") from err
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def world_action_meanings(env: gym.Env) -> tuple[str, ...]:
    """Names of a world env's discrete actions, in action order."""
    base = env.unwrapped
    if hasattr(base, "action_type"):  # highway-env
        return tuple(base.action_type.actions[i] for i in range(base.action_space.n))
    buttons = [b.name for b in base.game.get_available_buttons()]
    names = []
    for combo in base.button_map:  # the wrapper's discrete action i presses button_map[i]
        pressed = [b for b, on in zip(buttons, combo) if on]
        names.append("+".join(pressed) if pressed else "NOOP")
    return tuple(names)


def world_frame(env: gym.Env) -> np.ndarray:
    """The world's current RGB screen ``uint8 [H, W, 3]`` (highway 150x600, ViZDoom 240x320)."""
    return np.asarray(env.unwrapped.render(), dtype=np.uint8)
