"""The benchmark scripts stay importable and their timing helper counts what it should."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.mark.parametrize("name", ["bench_agents", "bench_explainers", "bench_visionmask", "bench_train",
                                  "bench_vector_envs", "bench_study", "bench_engines"])
def test_benchmark_scripts_import(name):
    assert callable(importlib.import_module(name).main)


def test_call_times_warms_up_then_times_each_call():
    from timing import call_times

    calls = []
    times = call_times(lambda: calls.append(1), 3, torch.device("cpu"))
    assert len(calls) == 4 and len(times) == 3 and all(t >= 0 for t in times)


def test_env_benchmark_runs_on_the_training_backend():
    from bench_agents import bench_env

    assert bench_env("Breakout", 2, 5, "auto", True, None) > 0
    assert bench_env("Breakout", 2, 5, "ale", False, None) > 0


def test_update_flops_count_the_policy_network():
    """Nature CNN + 512 head: 9.35M multiply-adds a sample forward (2 FLOPs each); backward twice
    that, less the first convolution's input gradient (3.28M), which the frames do not need."""
    from bench_train import update_flops

    nature = update_flops("nature", batch=2) / 2
    assert nature == pytest.approx(2 * (3 * 9.35e6 - 3.28e6), rel=0.01)
    assert update_flops("ife", batch=2) > nature * 2


def test_vector_env_benchmark_steps_ale():
    from bench_vector_envs import steps_per_s

    assert steps_per_s("ale", 2, 1, 5) > 0


def test_captum_lime_baseline_explains_what_xrlkit_lime_explains():
    """The timing baseline is a like-for-like LIME: on the region agent both peak in the region."""
    import numpy as np
    from bench_explainers import CaptumLime
    from test_explainers import COLS, ROWS, RegionAgent

    from xrlkit.explainers import make_explainer

    states = np.zeros((1, 4, 84, 84), dtype=np.uint8)
    states[:, :, ROWS, COLS] = 200
    agent = RegionAgent()
    for explainer in (CaptumLime(agent, n_samples=150), make_explainer("lime", agent, n_samples=150)):
        sal = explainer.explain(states, np.zeros(1, int))
        r, c = divmod(int(sal[0].argmax()), 84)
        assert sal.shape == (1, 84, 84) and ROWS.start - 6 <= r < ROWS.stop + 6 and COLS.start - 6 <= c < COLS.stop + 6


def test_expected_duration_reads_the_closest_measured_row(tmp_path: Path) -> None:
    import dataclasses
    import json

    from xrlkit.runtime import TRAIN_BENCHMARK, expected_duration, resolve_runtime

    rt = dataclasses.replace(resolve_runtime("cpu", precision="fp32", channels_last=True), update_threads=2)
    rows = [{"machine": {"cpu": "Test CPU", "cores": 2}},
            {"trainer": "sb3", "algo": "ppo", "encoder": "nature", "precision": "fp32", "agent_steps_per_s": 1.0},
            {"trainer": "xrlkit", "algo": "ppo", "encoder": "nature", "precision": "fp32", "allocator": "tcmalloc",
             "channels_last": True, "overlap": True, "agent_steps_per_s": 600.0},
            {"trainer": "xrlkit", "algo": "ppo", "encoder": "nature", "precision": "fp32", "allocator": rt.allocator,
             "channels_last": True, "overlap": rt.overlap, "agent_steps_per_s": 500.0},
            {"trainer": "xrlkit", "algo": "ppo", "encoder": "nature", "precision": "bf16", "agent_steps_per_s": 900.0}]
    bench = tmp_path / "train.json"
    bench.write_text(json.dumps(rows))
    line = expected_duration("ppo", "nature", 300_000, rt, bench)  # 300k steps / 500 per s = 10 min
    assert "about 10 min" in line and "500 steps/s" in line and "Test CPU" in line and "slower" not in line
    one_thread = expected_duration("ppo", "nature", 300_000, dataclasses.replace(rt, update_threads=1), bench)
    assert "about 20 min" in one_thread and "2x slower on this run's 1 thread" in one_thread  # half the cores measured
    assert "no measurement for ppo/ife in fp32" in expected_duration("ppo", "ife", 1000, rt, bench)
    assert "no measurement" in expected_duration("ppo", "nature", 1000, rt, tmp_path / "absent.json")
    assert "Atari games only" in expected_duration("ppo", "nature", 1000, rt, bench, atari=False)
    assert "steps/s the training benchmark measured" in expected_duration("ppo", "nature", 1000, rt, TRAIN_BENCHMARK)


def test_closest_train_benchmark_matches_the_cpu(tmp_path: Path) -> None:
    import json

    from xrlkit.runtime import BENCHMARK_RESULTS, closest_train_benchmark, cpu_info, measured_rate, resolve_runtime

    def write(name: str, **machine: object) -> None:
        (tmp_path / name).write_text(json.dumps([{"machine": machine}]))

    write("train-cpu.json", cpu="Zen 4", bf16_native=True, amx=False, avx512=True)
    write("train-cpu-zen3.json", cpu="Zen 3", bf16_native=False, amx=False, avx512=False)
    write("train-cpu-spr.json", cpu="Xeon", bf16_native=True, amx=True, avx512=True)
    (tmp_path / "train-cpu-broken.json").write_text("{not json")
    pick = lambda **cpu: closest_train_benchmark(tmp_path, cpu).name  # noqa: E731
    assert pick(cpu="Zen 3", bf16_native=False, amx=False, avx512=False) == "train-cpu-zen3.json"
    assert pick(cpu="Other AVX2", bf16_native=False, amx=False, avx512=False) == "train-cpu-zen3.json"
    assert pick(cpu="Xeon", bf16_native=True, amx=True, avx512=True) == "train-cpu-spr.json"
    assert pick(cpu="Zen 5", bf16_native=True, amx=False, avx512=True) == "train-cpu.json"
    assert pick(cpu="ARM", bf16_native=True, amx=False, avx512=False) == "train-cpu.json"  # ties: the default file
    assert closest_train_benchmark(tmp_path / "absent", {}).name == "train-cpu.json"
    # the committed results: the file picked for this CPU is the one measured_rate reads and names
    chosen = closest_train_benchmark(BENCHMARK_RESULTS, cpu_info())
    found = measured_rate("ppo", "nature", resolve_runtime("cpu", precision="fp32"))
    assert found is None or found[1]["file"] == chosen.name
