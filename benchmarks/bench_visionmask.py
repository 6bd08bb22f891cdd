"""Benchmark VisionMask: training throughput (states/s) and explanation latency per state.

For each model (``--backbones``: a backbone, optionally ``:<ASPP head width>``; by default
MobileNet with torchvision's 256-wide head and with the shipped 64- and 32-wide ones, and ResNet-50) and
device (CPU, and CUDA when available):

* ``train_states_per_s``: full training steps (explainer forward, 2K agent passes on masked and
  complement states, backward, Adam) on a batch of ``--batch-size`` states, timed over
  ``--reps`` steps after one warm-up step, with the trainer's bfloat16 autocast where it runs
  (CUDA, a CPU with native bf16); ``train_states_per_s_fp32`` the same without it and
  ``train_states_per_s_rank`` with the ranking term on (``lambda_rank`` 1; its 2 x 4 extra agent
  passes on the top shares of mask a*), side by side;
* ``explain_ms_per_state_b1``: latency of ``explain`` on one state;
* ``explain_ms_per_state_b16``: time per state of ``explain`` on a batch of 16.

The agent is an untrained Nature-CNN Q agent with Breakout's 4 actions (speed does not depend on
its weights). Writes ``benchmarks/results/visionmask-<device>.json``. Example::

    python benchmarks/bench_visionmask.py --reps 2 --batch-size 8 --threads 1 --machine "shared 2-core CPU"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

import torch

from xrlkit.agents import QAgent, QNetConfig
from xrlkit.visionmask import TrainConfig, VisionMask, freeze_agent
from xrlkit.visionmask.train import amp_enabled, batch_loss
from timing import call_times

RESULTS = Path(__file__).parent / "results"


def bench(backbone: str, device: torch.device, batch_size: int, reps: int, n_actions: int = 4,
          head_channels: int = 256) -> dict[str, Any]:
    """Timings of one backbone and head width on one device."""
    torch.manual_seed(0)
    agent = QAgent(n_actions, QNetConfig(encoder="nature"), seed=0).to(device)
    freeze_agent(agent)
    model = VisionMask(n_actions, backbone, head_channels=head_channels).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=0.01)
    cfg = TrainConfig(backbone=backbone, head_channels=head_channels)
    states = torch.randint(0, 256, (batch_size, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.randint(0, n_actions, (batch_size,), device=device)

    def step(config: TrainConfig) -> None:
        loss = batch_loss(model, agent, states, actions, config)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_s = sum(call_times(lambda: step(cfg), reps, device))
    fp32_s = sum(call_times(lambda: step(dataclasses.replace(cfg, amp=False)), reps, device))
    rank_s = sum(call_times(lambda: step(dataclasses.replace(cfg, lambda_rank=1.0)), reps, device))

    def explain_time(b: int) -> float:
        x = states[:1].expand(b, -1, -1, -1).contiguous()
        return sum(call_times(lambda: model.explain(x), reps, device)) / (reps * b)

    return {
        "backbone": backbone, "head_channels": head_channels, "n_actions": n_actions, "train_batch_size": batch_size, "reps": reps,
        "train_states_per_s": batch_size * reps / train_s, "amp_bf16": amp_enabled(cfg.amp, device),
        "train_states_per_s_fp32": batch_size * reps / fp32_s,
        "train_states_per_s_rank": batch_size * reps / rank_s,
        "explain_ms_per_state_b1": 1000 * explain_time(1),
        "explain_ms_per_state_b16": 1000 * explain_time(16),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--backbones", default="mobilenet,mobilenet:64,mobilenet:32,resnet50",
                        help="comma-separated backbone[:head width] (default head: 256)")
    parser.add_argument("--machine", default=platform.processor() or platform.machine(), help="free-text machine note")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    RESULTS.mkdir(parents=True, exist_ok=True)
    for device in devices:
        rows = []
        for spec in args.backbones.split(","):
            backbone, _, width = spec.partition(":")
            row = bench(backbone, device, args.batch_size, args.reps, head_channels=int(width or 256))
            print(json.dumps(row))
            rows.append(row)
        out = RESULTS / f"visionmask-{device.type}.json"
        out.write_text(json.dumps({
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "machine": args.machine, "torch_threads": args.threads if device.type == "cpu" else None,
            "torch": torch.__version__, "results": rows,
        }, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
