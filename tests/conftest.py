"""Shared fixtures: real Atari states and a small seeded agent, built once per session. How the
suite splits over pytest-xdist workers is in the repository's root ``conftest.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from xrlkit.agents import QAgent, QNetConfig
from xrlkit.envs import action_meanings, make_env, rgb_frame
from xrlkit.runtime import usable_cores

torch.set_num_threads(min(2, usable_cores()))


def rollout_states(game: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` consecutive states ``uint8 [n, 4, 84, 84]`` and RGB frames ``[n, 210, 160, 3]`` of a
    seeded random policy (episodes restart when they end)."""
    env = make_env(game, seed=seed)
    obs, _ = env.reset(seed=seed)
    states, frames = [], []
    for _ in range(n):
        states.append(obs)
        frames.append(rgb_frame(env))
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return np.stack(states), np.stack(frames)


@pytest.fixture
def whole_machine() -> Iterator[list[int]]:
    """Every core this process is allowed (sorted), its affinity widened to them for the test,
    also inside a pinned xdist worker, and restored after: for tests of how work is spread over
    cores. Skips where the platform has no CPU affinity."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    yield sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, before)


@pytest.fixture(scope="session")
def breakout_states() -> np.ndarray:
    """64 real Breakout states ``uint8 [64, 4, 84, 84]`` (random play, seed 0)."""
    return rollout_states("Breakout", 64)[0]


@pytest.fixture(scope="session")
def tiny_agent() -> QAgent:
    """A seeded, untrained Nature-CNN Q agent for Breakout (4 actions), in eval mode."""
    return QAgent(4, QNetConfig(encoder="nature"), action_meanings("Breakout"), seed=0).eval()
