"""Throughput of the Rainbow learner: gradient updates/s per encoder, and env steps/s of the
training vector env (raw, and with the agent choosing the actions), on CPU and on CUDA when
available. Writes ``benchmarks/results/agents-<device>.json``.

    .venv/bin/python benchmarks/bench_agents.py --batch-size 32 --reps 3 --n-envs 8
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from xrlkit.agents.rainbow import PRESETS, RainbowLearner, make_config
from xrlkit.agents.replay import Batch
from xrlkit.envs import make_vector_env
from xrlkit.shapes import OBS_SHAPE
from xrlkit.runtime import Runtime, cpu_info, resolve_runtime
from timing import call_times

ENCODERS = ("nature", "impala", "ife")
RESULTS = Path(__file__).parent / "results"


def synthetic_batch(batch_size: int, n_actions: int, rng: np.random.Generator) -> Batch:
    """A random replay batch (uint8 states) of the shapes the learner sees."""
    return Batch(
        obs=rng.integers(0, 256, (batch_size, *OBS_SHAPE), dtype=np.uint8),
        actions=rng.integers(0, n_actions, batch_size),
        returns=rng.normal(size=batch_size).astype(np.float32),
        discounts=np.full(batch_size, 0.97, dtype=np.float32),
        next_obs=rng.integers(0, 256, (batch_size, *OBS_SHAPE), dtype=np.uint8),
        weights=np.ones(batch_size, dtype=np.float32),
        indices=np.arange(batch_size),
    )


def bench_updates(preset: str, encoder: str, runtime: Runtime, batch_size: int, reps: int) -> float:
    """Gradient updates per second (after one warm-up update)."""
    learner = RainbowLearner(18, make_config(preset, batch_size=batch_size), encoder, runtime)
    batch = synthetic_batch(batch_size, 18, np.random.default_rng(0))
    return reps / sum(call_times(lambda: learner.update(batch), reps, runtime.device))


def bench_env(game: str, n_envs: int, steps: int, backend: str, train: bool, learner: RainbowLearner | None) -> float:
    """Env steps per second summed over ``n_envs`` envs, random or agent (epsilon 0.01) actions.
    ``train=True`` is the training env (whose life-loss signal only the gym backend reproduces)."""
    env = make_vector_env(game, n_envs, train=train, seed=0, backend=backend)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        actions = learner.act(obs, 0.01) if learner else rng.integers(0, env.single_action_space.n, n_envs)
        obs, *_ = env.step(actions)
    elapsed = time.perf_counter() - start
    env.close()
    return steps * n_envs / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fastrainbow", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--reps", type=int, default=5, help="timed updates per encoder")
    p.add_argument("--game", default="Breakout")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--env-steps", type=int, default=200, help="vector steps per env measurement")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--devices", default="auto", help="comma-separated, or auto = cpu (+ cuda when available)")
    p.add_argument("--precisions", default="fp32,auto",
                   help="comma-separated runtime precisions timed side by side (auto: what xrlkit.runtime picks)")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. the machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch_size = args.batch_size or PRESETS[args.preset]["batch_size"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in devices:
        device = torch.device(name)
        rows = []
        raw = {b: bench_env(args.game, args.n_envs, args.env_steps, b, False, None) for b in ("ale", "gym")}
        print(f"[{name}] random-action env steps/s: {raw}")
        for encoder in ENCODERS:
            for precision in args.precisions.split(","):
                runtime = resolve_runtime(name, precision, threads=args.threads)
                ups = bench_updates(args.preset, encoder, runtime, batch_size, args.reps)
                learner = RainbowLearner(4, make_config(args.preset), encoder, runtime)
                acting = bench_env(args.game, args.n_envs, args.env_steps, "auto", True, learner)
                rows.append({"encoder": encoder, "precision": runtime.precision, "channels_last": runtime.channels_last,
                             "updates_per_s": round(ups, 3), "samples_per_s": round(ups * batch_size, 1),
                             "act_env_steps_per_s": round(acting, 1)})
                print(f"[{name}] {encoder:7s} {runtime.precision} {ups:8.2f} updates/s (batch {batch_size}), "
                      f"{acting:8.1f} env steps/s acting with the agent")
        result = {
            "device": name, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info()["cpu"],
            "note": args.note, "preset": args.preset, "batch_size": batch_size, "reps": args.reps,
            "torch_threads": args.threads, "game": args.game, "n_envs": args.n_envs,
            "env_steps_per_s_random": {b: round(v, 1) for b, v in raw.items()}, "encoders": rows,
            "torch": torch.__version__, "python": platform.python_version(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        out = RESULTS / f"agents-{name}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
