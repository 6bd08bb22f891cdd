"""Atari vector-env throughput of the backends the PPO trainer could step: ale-py's C++
``AtariVectorEnv`` (what xrlkit uses) and EnvPool, when it is importable. Random actions,
8 envs of Pong, 1 and 2 worker threads. Appends one JSON record per (backend, threads) to
``benchmarks/results/vector-envs-cpu.json``.

EnvPool is not an xrlkit dependency; to compare, run this script from a separate environment
that has it (it needs only numpy, ale-py and envpool):

    python3 -m venv /tmp/ep && /tmp/ep/bin/pip install envpool ale-py numpy gymnasium
    /tmp/ep/bin/python benchmarks/bench_vector_envs.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "vector-envs-cpu.json"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def make(backend: str, n_envs: int, threads: int) -> Any:
    """8 Pong envs with the ``ifepaper`` protocol's settings (no sticky actions, 30 no-ops, raw rewards)."""
    if backend == "envpool":
        import envpool

        return envpool.make("Pong-v5", env_type="gymnasium", num_envs=n_envs, num_threads=threads,
                            episodic_life=False, reward_clip=False, noop_max=30, repeat_action_probability=0.0,
                            seed=0)
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(game="pong", num_envs=n_envs, num_threads=threads, repeat_action_probability=0.0,
                          noop_max=30, reward_clipping=False, use_fire_reset=False)


def steps_per_s(backend: str, n_envs: int, threads: int, steps: int) -> float:
    env = make(backend, n_envs, threads)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        env.step(rng.integers(0, 6, n_envs))
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, 6, n_envs))
    elapsed = time.perf_counter() - start
    env.close()
    return steps * n_envs / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="vector steps per measurement")
    p.add_argument("--note", default="")
    args = p.parse_args()
    backends = ["ale"]
    try:
        import envpool  # noqa: F401

        backends.append("envpool")
    except ImportError:
        print("envpool is not installed here: timing ale-py only")
    records = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    for threads in (1, 2):
        for backend in backends:
            rate = steps_per_s(backend, 8, threads, args.steps)
            rec = {"backend": backend, "threads": threads, "n_envs": 8, "steps_per_s": round(rate, 1),
                   "cpu": cpu_name(), "note": args.note,
                   "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            records.append(rec)
            print(json.dumps(rec))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
