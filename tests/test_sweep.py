"""Training sweeps: every (game, seed) run of xrlkit train, resumable, here and on Ray."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xrlkit.checkpoint import read_meta
from xrlkit.cli import main

TINY_NO_THREADS = ["--", "--algo", "ppo", "--frames", "256", "--n-envs", "2", "--eval-episodes", "1", "--eval-max-steps", "20",
                   "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1"]
TINY = [*TINY_NO_THREADS, "--threads", "1", "--env-threads", "1"]


def test_local_sweep_trains_every_seed_and_skips_finished_runs(tmp_path, capsys, whole_machine):
    """Two runs at a time (--workers 2), each on its own share of the cores and so on that many
    threads: with two cores, one core and one thread each, not both cores each."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--games", "Breakout", "--seeds", "1,2", "--out", str(out), "--workers", "2",
                 *TINY_NO_THREADS]) == 0
    cores = whole_machine  # each worker's share: every other core (one each on two; the only one for both on one)
    assert sorted(_threads(out / f"Breakout-s{seed}.log") for seed in (1, 2)) == sorted(
        len(cores[i::2]) if len(cores) >= 2 else 1 for i in (0, 1))
    for seed in (1, 2):
        meta = read_meta(out / f"Breakout-s{seed}" / "agent.safetensors")
        assert meta["seed"] == seed and meta["frames"] >= 256
    index = json.loads((out / "sweep.json").read_text())
    assert [(r["seed"], r["status"]) for r in index] == [(1, "done"), (2, "done")]
    assert "2 runs of 256 frames" in capsys.readouterr().out  # the plan, printed first
    assert main(["sweep", "--games", "Breakout", "--seeds", "1,2", "--out", str(out), *TINY]) == 0
    assert {r["status"] for r in json.loads((out / "sweep.json").read_text())} == {"skipped (done)"}


def _threads(log: Path) -> int:
    """The torch threads (= env threads) a run's log says it trained on."""
    return int(re.search(r"torch threads update (\d+) / rollout 1, env threads \1", log.read_text()).group(1))


def test_ray_sweep_runs_every_game(tmp_path, whole_machine):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert main(["sweep", "--games", "Breakout,Pong", "--out", str(out), "--engine", "ray", "--cpus-per-run", "1",
                 *TINY_NO_THREADS]) == 0
    index = json.loads((out / "sweep.json").read_text())
    assert [(r["game"], r["status"]) for r in index] == [("Breakout", "done"), ("Pong", "done")]
    assert read_meta(out / "Pong-s0" / "agent.safetensors")["game"] == "Pong"
    assert _threads(out / "Pong-s0.log") == 1  # the CPU it declared, not the node's cores


def test_bad_sweeps_fail_before_any_training(tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["sweep", "--games", "Pong", "--out", str(out), "--", "--frames", "100", "--seed", "3"]) == 2
    assert "sets --seed itself" in capsys.readouterr().err
    assert main(["sweep", "--games", "Pong", "--out", str(out), "--", "--frames", "lots"]) == 2
    assert main(["sweep", "--games", "Pongg", "--out", str(out), "--", "--frames", "100"]) == 2
    assert not out.exists()


def test_dry_run_plans_from_the_training_benchmark(tmp_path, capsys):
    assert main(["sweep", "--games", "Pong,Breakout", "--seeds", "1,2", "--out", str(tmp_path / "plan"), "--dry-run",
                 "--engine", "ray", "--cluster-cpus", "8", "--", "--algo", "ppo", "--frames", "10000000", "--precision", "fp32"]) == 0
    plan = capsys.readouterr().out
    assert "4 runs of 10,000,000 frames (ppo, nature, fp32)" in plan and "4 run(s) at a time (8 CPUs, 2 per run)" in plan
    assert main(["sweep", "--games", "Pong", "--seeds", "1,2", "--out", str(tmp_path / "plan"), "--dry-run",
                 "--cluster-cpus", "2", "--workers", "2", "--", "--algo", "ppo", "--frames", "10000000", "--precision", "fp32"]) == 0
    plan = capsys.readouterr().out  # the benchmark measured 2 cores: each local run on 1 is taken as 2x slower
    assert "2 run(s) at a time (2 CPUs, 1 per run, each taken as 2x slower than on 2)" in plan
    assert not (tmp_path / "plan").exists()


def test_run_training_needs_an_attempt(tmp_path):
    from xrlkit.sweep import run_training

    with pytest.raises(ValueError, match="attempts must be >= 1"):
        run_training("Pong", 1, [], tmp_path, attempts=0)
    assert list(tmp_path.iterdir()) == []  # refused before any work
