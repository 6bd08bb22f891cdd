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
                               stacked by highway-env, transposed (its rows run along the
                               road); :func:`world_frame` renders the same view in colour.
                               ~20 steps/s here, bound by its pure-Python traffic model
                               (see SUBPROCESS_WORLDS).
``SuperMarioBros-1-1-v0``      gym-super-mario-bros 7.4 on nes-py 8.2 (old ``gym`` API, bridged
                               here): world 1-1 until Mario dies or reaches the flag; the
                               screen (240x256 RGB) to gray, resized, every 4th frame (the reward
                               summed), 4 stacked; the seven actions of ``SIMPLE_MOVEMENT``;
                               on numpy 2 through the fixes below.
``VizdoomBasic-v1``,           ViZDoom 1.3 scenarios through its gymnasium wrapper: the screen
``VizdoomDefendCenter-v1``,    (240x320 RGB) to gray, resized, every 4th frame (frame skip 4,
``VizdoomHealthGathering-v1``  the reward summed), 4 stacked. Actions are the wrapper's discrete
                               button combinations, named by their buttons ("NOOP" for none).
=============================  ============================================================

On Python 3.11 only gym-super-mario-bros 7.4 with nes-py 8.2 installs (nes-py 9, on gymnasium,
needs Python 3.13), written for numpy 1: under numpy 2 (NEP 50) ``uint8`` bytes of the ROM header
and of the RAM times a Python int too large for ``uint8`` raise ``OverflowError`` (``16 * 2**10``,
``x_page * 0x100``). :func:`_fix_nes_py_for_numpy2` makes those reads Python ints, which is what
numpy 1's value-based casting computed; :class:`_OldGymToGymnasium` bridges the old API (shimmy's
bridge needs gym's own ``np.bool8``-era checks; nes-py's env needs none of them).
Worlds have no human reference score, so their HNS is NaN (:func:`xrlkit.games.human_normalized_score`).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import cv2
import gymnasium as gym
import numpy as np

from xrlkit.games import WORLDS, resolve_game
from xrlkit.shapes import FRAME_STACK, SCREEN_SIZE

DOOM_FRAME_SKIP = 4
MARIO_FRAME_SKIP = 4
#: agent steps before a Mario episode is truncated: 4,000 x 4 frames is longer than the game's
#: own 400-tick timer (~9,600 frames), which kills a Mario who never reaches the flag
MARIO_MAX_STEPS = 4_000
#: worlds whose simulation is the bottleneck (highway-env: its pure-Python traffic model's
#: neighbour search, not its rendering, takes most of a step; Mario: the NES emulator, four
#: frames per agent step): :func:`xrlkit.envs.make_vector_env` steps them in one process per env,
#: so they use every core. Measured on the 2-core Zen 5 CPU, PPO-Nature on Mario with 8 envs:
#: 166 agent steps/s in one process, 255 with one process per env.
SUBPROCESS_WORLDS = frozenset({"highway-fast-v0", "SuperMarioBros-1-1-v0"})


#: worlds whose every episode lasts the same number of agent steps unless it ends early
#: (highway-fast-v0: its ``duration`` of 30 s at one decision a second)
FIXED_EPISODE_STEPS: dict[str, int] = {"highway-fast-v0": 30}


#: what a world reports of an episode beside its return (:func:`xrlkit.evaluation.evaluate`):
#: info key -> how the episode's steps reduce to one number, its ``"last"`` value or the ``"mean"``
#: over its steps. highway: whether the ego car crashed, its mean speed (m/s); Mario: the
#: distance travelled (x position at the end, pixels) and whether he reached the flag.
EPISODE_STATS: dict[str, dict[str, str]] = {
    "highway-fast-v0": {"crashed": "last", "speed": "mean"},
    "SuperMarioBros-1-1-v0": {"x_pos": "last", "flag_get": "last"},
}


#: highway-env's pixels per metre in the agent's 84x84 view (it sees 48 m of road around its car)
HIGHWAY_SCALING = 1.75
#: the RGB frame for figures shows the agent's view at this many times its resolution
HIGHWAY_FRAME_ZOOM = 4


def _highway(render_mode: str | None) -> gym.Env:
    # highway-env draws with pygame, and SDL's default signal handlers turn SIGINT and SIGTERM into
    # quit events that nobody reads: a process that had rendered a highway frame could then be
    # stopped by SIGKILL only, and a trainer's checkpoint on SIGTERM never ran. Set before pygame's
    # first init; a user's own setting is kept.
    os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")
    import highway_env

    gym.register_envs(highway_env)
    zoom = HIGHWAY_FRAME_ZOOM
    return gym.make("highway-fast-v0", render_mode="rgb_array", config={
        "observation": {"type": "GrayscaleObservation", "observation_shape": (SCREEN_SIZE, SCREEN_SIZE),
                        "stack_size": FRAME_STACK, "weights": [0.2989, 0.5870, 0.1140], "scaling": HIGHWAY_SCALING},
        # render() draws the observation's viewport (same centre, same metres) at zoom x its pixels
        "screen_width": zoom * SCREEN_SIZE, "screen_height": zoom * SCREEN_SIZE, "scaling": zoom * HIGHWAY_SCALING,
    })


class _GrayFrames(gym.Wrapper):
    """A world's RGB screen -> ``uint8 [4, 84, 84]``: gray, area-resized, the last four kept
    (the stack starts as four copies of the first frame). ``screen(obs)`` picks the screen out
    of the world's observation; a step whose observation has none keeps the last frame."""

    def __init__(self, env: gym.Env, screen: Callable[[Any], np.ndarray | None]) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (FRAME_STACK, SCREEN_SIZE, SCREEN_SIZE), np.uint8)
        self._frames = np.zeros(self.observation_space.shape, np.uint8)
        self._screen = screen

    def _gray(self, obs: Any) -> np.ndarray | None:
        rgb = self._screen(obs)
        if rgb is None:
            return None
        return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (SCREEN_SIZE, SCREEN_SIZE), interpolation=cv2.INTER_AREA)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._frames[:] = self._gray(obs)
        return self._frames.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames[:-1] = self._frames[1:]
        gray = self._gray(obs)
        if gray is not None:
            self._frames[-1] = gray
        return self._frames.copy(), float(reward), terminated, truncated, info


def _doom(name: str, render_mode: str | None) -> gym.Env:
    from vizdoom import gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)

    # the wrapper sends an empty observation on the terminal step: the last frame is kept
    return _GrayFrames(gym.make(name, render_mode="rgb_array", frame_skip=DOOM_FRAME_SKIP), lambda obs: obs.get("screen"))


class _IntRAM(np.ndarray):
    """nes-py's live view of the NES RAM whose single-byte reads are Python ints (see the
    module docstring); slices and writes behave as before."""

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        return int(value) if np.ndim(value) == 0 else value


def _fix_nes_py_for_numpy2() -> None:
    """Make nes-py's ROM header and RAM reads Python ints (idempotent)."""
    from nes_py import _rom, nes_env

    if getattr(nes_env.NESEnv, "_xrlkit_fixed", False):
        return
    _rom.ROM.header = property(lambda self: self.raw_data[:16].astype(np.int64))
    ram_buffer = nes_env.NESEnv._ram_buffer
    nes_env.NESEnv._ram_buffer = lambda self: ram_buffer(self).view(_IntRAM)
    nes_env.NESEnv._xrlkit_fixed = True


class _OldGymToGymnasium(gym.Env):
    """An old-``gym`` env (``reset() -> obs``, ``step() -> obs, reward, done, info``) as a
    gymnasium env, with ``frame_skip`` frames a step (rewards summed, the last screen kept) and
    episodes truncated after ``max_steps`` steps. Truncation is the only time limit: the old env
    ends an episode itself (``done``) only for real (Mario died or reached the flag)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env: Any, frame_skip: int, max_steps: int) -> None:
        self.env, self.frame_skip, self.max_steps = env, frame_skip, max_steps
        self.observation_space = gym.spaces.Box(0, 255, env.observation_space.shape, np.uint8)
        self.action_space = gym.spaces.Discrete(env.action_space.n)
        self.render_mode = "rgb_array"
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._steps = 0
        return np.asarray(self.env.reset()).copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        total, done = 0.0, False
        for _ in range(self.frame_skip):
            obs, reward, done, info = self.env.step(int(action))
            total += float(reward)
            if done:
                break
        self._steps += 1
        return np.asarray(obs).copy(), total, bool(done), not done and self._steps >= self.max_steps, dict(info)

    def render(self) -> np.ndarray:
        return np.asarray(self.env.screen).copy()

    def close(self) -> None:
        self.env.close()


def _mario(name: str) -> gym.Env:
    _fix_nes_py_for_numpy2()  # (the old gym nes-py imports was imported quietly by xrlkit/__init__)
    from gym_super_mario_bros.actions import SIMPLE_MOVEMENT
    from gym_super_mario_bros.smb_env import SuperMarioBrosEnv
    from nes_py.wrappers import JoypadSpace

    world, stage = (int(x) for x in name.split("-")[1:3])
    env = JoypadSpace(SuperMarioBrosEnv(rom_mode="vanilla", target=(world, stage)), SIMPLE_MOVEMENT)
    return _GrayFrames(_OldGymToGymnasium(env, MARIO_FRAME_SKIP, MARIO_MAX_STEPS), lambda obs: obs)


def world_kind(name: str) -> str:
    """Which family a world (already resolved) belongs to: ``"highway"``, ``"mario"`` or
    ``"doom"``; each has its own builder here and its own protocol in :mod:`xrlkit.envs`."""
    if name not in WORLDS:
        raise ValueError(f"{name} is an Atari game, not another world; use xrlkit.envs.make_env")
    return "highway" if name.startswith("highway") else "mario" if name.startswith("SuperMario") else "doom"


def make_world_env(name: str, *, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One env of a non-Atari world (see the module docstring); observations ``uint8 [4, 84, 84]``.
    ``ValueError`` with the closest names for an unknown world; ``ImportError`` saying which
    package to install when the world's package is missing."""
    name = resolve_game(name)
    kind = world_kind(name)
    try:
        env = {"highway": lambda: _highway(render_mode), "mario": lambda: _mario(name),
               "doom": lambda: _doom(name, render_mode)}[kind]()
    except ImportError as err:
        package = {"highway": "highway-env", "mario": "gym-super-mario-bros", "doom": "vizdoom"}[kind]
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
    if isinstance(base, _OldGymToGymnasium):  # Super Mario Bros: nes-py's joypad combinations
        return tuple(meaning.upper().replace(" ", "+") for meaning in base.env.get_action_meanings())
    buttons = [b.name for b in base.game.get_available_buttons()]
    names = []
    for combo in base.button_map:  # the wrapper's discrete action i presses button_map[i]
        pressed = [b for b, on in zip(buttons, combo) if on]
        names.append("+".join(pressed) if pressed else "NOOP")
    return tuple(names)


def world_frame(env: gym.Env) -> np.ndarray:
    """The world's current RGB screen ``uint8 [H, W, 3]`` (Mario 240x256, ViZDoom 240x320), laid
    out as the agent's observation, so a map over the observation overlays it: highway-env's
    observation is its render transposed (rows along the road), so its frame is the render of the
    observation's viewport, transposed (336x336, the road running down the screen)."""
    frame = np.asarray(env.unwrapped.render(), dtype=np.uint8)
    spec = env.unwrapped.spec
    if spec is not None and spec.id in WORLDS and world_kind(spec.id) == "highway":
        frame = np.ascontiguousarray(frame.transpose(1, 0, 2))
    return frame
