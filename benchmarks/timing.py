"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import torch


def call_times(fn: Callable[[], object], reps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn``, after one untimed warm-up call; CUDA work is
    waited for before each clock read, so asynchronous kernels are counted."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times
