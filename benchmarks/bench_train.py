"""Training throughput, side by side in one run: Stable-Baselines3's PPO against xrlkit's PPO loop
per encoder and runtime choice, in agent steps per second (whole iterations: rollout + update).
Writes ``benchmarks/results/train-cpu.json`` (or ``train-cuda.json``): a JSON list of records
``{trainer, algo, encoder, precision, threads, allocator, channels_last, overlap,
agent_steps_per_s, seconds, rollout_s, update_s, update_gflop_per_s}`` and one ``{"machine": ...}`` record with the
CPU, its native bf16, the torch version and the measured GEMM ceilings.

Each configuration runs as its own ``xrlkit train`` process (so the allocator is what a user gets)
on Pong with RL-Zoo's Atari PPO settings (8 envs x 128 steps, 4 epochs of 256); the first
iteration is a warm-up and is not counted. SB3 runs RL-Zoo's own PPO on RL-Zoo's env.

    .venv/bin/python benchmarks/bench_train.py --iterations 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from xrlkit.runlog import curve_path
from xrlkit.runtime import cpu_info

RESULTS = Path(__file__).parent / "results"
GAME = "Pong"


def update_flops(encoder: str, n_actions: int = 6, batch: int = 256) -> float:
    """FLOPs of one PPO minibatch step (forward + backward) of the xrlkit policy, counted by
    torch's FLOP counter (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    from xrlkit.agents.policy import PolicyAgent, PolicyConfig

    agent = PolicyAgent(n_actions, PolicyConfig(encoder=encoder))
    x = torch.rand(batch, 4, 84, 84)
    with FlopCounterMode(display=False) as counter:
        logits, value = agent.policy_value(x)
        (logits.sum() + value.sum()).backward()
    return float(counter.get_total_flops())


def gemm_ceiling(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large square matmul on all cores: the practical peak of this CPU for ``dtype``.
    Without native bf16 a bf16 matmul runs ~100x slower (a 2048² one took minutes on a Zen 3 CPU),
    so there it is timed on a 512² matmul, once."""
    if dtype == torch.bfloat16 and not cpu_info()["bf16_native"]:
        n, reps = 512, 1
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def run_xrlkit(encoder: str, iterations: int, extra: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``xrlkit train --algo ppo`` process for ``iterations`` iterations; per-iteration timings
    from its metrics.csv (the first dropped)."""
    import csv

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "xrlkit.cli", "train", "--algo", "ppo", "--game", GAME, "--encoder", encoder,
               "--frames", str(4 * 1024 * iterations), "--out", out, "--eval-episodes", "0", "--no-progress",
               "--checkpoint-every", "0", *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        runtime_line = next(line for line in proc.stderr.splitlines() if line.startswith("runtime:"))
        with open(curve_path(out)) as f:
            rows = list(csv.DictReader(f))[1:]
    return {
        "agent_steps_per_s": round(1024 * len(rows) / sum(float(r["rollout_s"]) + float(r["update_s"]) for r in rows), 1),
        "rollout_s": round(statistics.median(float(r["rollout_s"]) for r in rows), 3),
        "update_s": round(statistics.median(float(r["update_s"]) for r in rows), 3),
        "seconds": round(seconds, 1), "runtime": runtime_line,
    }


def run_sb3(iterations: int, threads: int) -> dict[str, Any]:
    """RL-Zoo's PPO (SB3) on RL-Zoo's Atari env, ``iterations`` x 1024 steps after one warm-up."""
    code = f"""
import time, torch
torch.set_num_threads({threads})
from stable_baselines3 import PPO
from xrlkit.agents.sb3 import RLZOO_PRESETS, _build_hyperparams, make_sb3_train_env
preset = RLZOO_PRESETS["ppo"]
env = make_sb3_train_env("{GAME}", preset["n_envs"], "rlzoo", 0, preset["wrapper_kwargs"])
model = PPO(preset["policy"], env, seed=0, device="cpu", verbose=0, **_build_hyperparams(preset["hyperparams"]))
model.learn(1024)
start = time.perf_counter()
model.learn({iterations} * 1024, reset_num_timesteps=False)
print(({iterations} * 1024) / (time.perf_counter() - start))
"""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "LD_PRELOAD": ""})
    if proc.returncode != 0:
        raise RuntimeError(f"SB3 benchmark failed:\n{proc.stderr[-2000:]}")
    return {"agent_steps_per_s": round(float(proc.stdout.split()[-1]), 1), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=5, help="timed PPO iterations of 1024 steps per configuration")
    p.add_argument("--encoders", default="nature,nature-attention,ife,impala",
                   help="xrlkit encoders to time with the chosen runtime")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the results (default: benchmarks/results/train-cpu.json, or train-cuda.json "
                        "on a GPU, the file the study's time estimate reads)")
    args = p.parse_args()
    info = cpu_info()
    cores = info["cores"]
    auto_precision = "bf16" if info["bf16_native"] else "fp32"
    records: list[dict[str, Any]] = []

    def add(trainer: str, encoder: str, precision: str, allocator: str, channels_last: bool, overlap: bool,
            result: dict[str, Any]) -> None:
        rec = {"trainer": trainer, "algo": "ppo", "encoder": encoder, "precision": precision, "threads": cores,
               "allocator": allocator, "channels_last": channels_last, "overlap": overlap, **result}
        if "update_s" in result:
            rec["update_gflop_per_s"] = round(4 * 4 * update_flops(encoder) / result["update_s"] / 1e9, 1)
        records.append(rec)
        print(json.dumps(rec), flush=True)

    system = {"LD_PRELOAD": "", "XRLKIT_ALLOCATOR_SET": ""}
    add("sb3", "nature", "fp32", "system", False, False, run_sb3(args.iterations, cores))
    # xrlkit's loop with every runtime choice off: the loop alone
    add("xrlkit", "nature", "fp32", "system", False, False, run_xrlkit(
        "nature", args.iterations, ["--precision", "fp32", "--channels-last", "off", "--allocator", "system",
                                    "--overlap", "off"], system))
    # then each choice added in turn, ending with what the runtime picks on this machine
    add("xrlkit", "nature", "fp32", "tcmalloc", False, False, run_xrlkit(
        "nature", args.iterations, ["--precision", "fp32", "--channels-last", "off", "--overlap", "off"]))
    add("xrlkit", "nature", "fp32", "tcmalloc", True, False, run_xrlkit(
        "nature", args.iterations, ["--precision", "fp32", "--overlap", "off"]))
    add("xrlkit", "nature", "fp32", "tcmalloc", True, True, run_xrlkit("nature", args.iterations, ["--precision", "fp32"]))
    for encoder in args.encoders.split(","):
        result = run_xrlkit(encoder, args.iterations if encoder != "impala" else 2, [])
        allocator = "tcmalloc" if "allocator tcmalloc" in result["runtime"] else "system"
        add("xrlkit", encoder, auto_precision, allocator, True, True, result)
    machine = {"machine": {**info, "torch": torch.__version__, "note": args.note,
                           "gemm_gflop_per_s": {"fp32": round(gemm_ceiling(torch.float32), 1),
                                                "bf16": round(gemm_ceiling(torch.bfloat16), 1)},
                           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    path = args.out or RESULTS / f"train-{'cuda' if torch.cuda.is_available() else 'cpu'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([machine, *records], indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
