"""Explanation time per state of every xrlkit explainer, on CPU and (when available) CUDA.

    .venv/bin/python benchmarks/bench_explainers.py --batch 4 --reps 2 [--devices cpu,cuda] [--threads 1] [--out FILE]

Each explainer runs with its default parameters on ``--batch`` real Breakout states (a random
policy's rollout) for an untrained Nature-CNN Q agent (the IFE attention explainer: an IFE Q
agent; VisionMask: the shipped Breakout VisionMask model, whose cost is its own network's);
one warm-up call, then the median of ``--reps`` timed calls, divided by the batch size. So that
VisionMask's inference copy (batch norms folded, channels_last: :func:`xrlkit.runtime.inference_copy`)
is not compared against agents left in a slower layout, every explainer that runs the agent is
timed with the agent as loaded and in channels_last, and the faster is kept (both are stored). Writes
``benchmarks/results/explainers-<device>.json`` (or ``--out``, for one device), with the allocator
this process runs with (preload tcmalloc to time the runtime's choice) and how many times faster VisionMask explains
a state than each other explainer, measured in the same run. Untrained weights do not change
the cost.

``visionmask-denormals-kept`` (CPU) is VisionMask again with denormal floats computed, not flushed to
zero as importing xrlkit sets (:func:`xrlkit.runtime.flush_denormals`; one thread, so this thread's
mode is the one that counts).

``captum-lime`` is captum's ``Lime`` with the same cells, samples, kernel and ridge surrogate as
xrlkit's ``lime``, timed beside it: the reason xrlkit's LIME is its own batched code.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from xrlkit.agents import QAgent, QNetConfig, RandomAgent
from xrlkit.agents.load import load_any_agent
from xrlkit.defaults import shipped
from xrlkit.explainers import EXPLAINERS, make_explainer
from xrlkit.evaluation import rollout
from xrlkit.runtime import current_allocator
from xrlkit.visionmask import load_visionmask
from timing import call_times

RESULTS = Path(__file__).parent / "results"


def time_explainer(explainer, states: torch.Tensor, actions: torch.Tensor, reps: int, device: torch.device) -> float:
    """Median seconds per state over ``reps`` calls, after one warm-up call."""
    return statistics.median(call_times(lambda: explainer.explain(states, actions), reps, device)) / len(states)


class CaptumLime:
    """captum's ``Lime`` set up as xrlkit's ``lime`` explainer (6-px cells, 1000 samples, black
    reference, LIME's image kernel, ridge with alpha 1), for timing only."""

    name = "captum-lime"

    def __init__(self, agent, n_samples: int = 1000) -> None:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        from xrlkit.explainers.surrogate import grid_segments

        self.agent, self.n_samples = agent, n_samples
        self.segments = grid_segments(6)
        kernel = get_exp_kernel_similarity_function("cosine", kernel_width=0.25)
        self._lime = Lime(lambda x: agent.logits(x).softmax(dim=1), interpretable_model=SkLearnRidge(alpha=1.0),
                          similarity_func=kernel)

    def explain(self, states, actions):
        from xrlkit.explainers.base import prepare_inputs, reduce_frames

        x, a = prepare_inputs(states, actions, self.agent.n_actions, self.agent.device)
        mask = self.segments.to(x.device).expand(len(x), 4, 84, 84)
        attr = self._lime.attribute(x, baselines=torch.zeros_like(x), target=a, feature_mask=mask,
                                    n_samples=self.n_samples, perturbations_per_eval=256)
        return reduce_frames(attr)


def shipped_visionmask(device: torch.device):
    """The shipped Breakout VisionMask as an explainer (a trained model needs the agent it was
    trained against; its cost is its own network's)."""
    expert = load_any_agent(shipped("Breakout", "expert"), game="Breakout", device=device)
    return make_explainer("visionmask", expert, model=load_visionmask(shipped("Breakout", "visionmask"), expert, device))


def time_in_both_layouts(explainer, agent: torch.nn.Module, states: torch.Tensor, actions: torch.Tensor,
                         reps: int, device: torch.device) -> dict[str, float]:
    """Seconds per state with ``agent``'s weights as loaded and in channels_last (restored after)."""
    out = {"contiguous": time_explainer(explainer, states, actions, reps, device)}
    agent.to(memory_format=torch.channels_last)
    try:
        out["channels_last"] = time_explainer(explainer, states, actions, reps, device)
    finally:
        agent.to(memory_format=torch.contiguous_format)
    return out


def bench(device: torch.device, batch: int, reps: int, note: str) -> dict:
    agents = {enc: QAgent(4, QNetConfig(encoder=enc), seed=0).eval().to(device) for enc in ("nature", "ife")}
    states = torch.as_tensor(rollout(RandomAgent(4), "Breakout", batch, seed=0).states).to(device)
    actions = torch.as_tensor(agents["nature"].act(states))
    results = {}
    for name in EXPLAINERS:
        agent = agents["ife" if name == "ife" else "nature"]
        if name == "visionmask":
            layouts = {"inference copy": time_explainer(shipped_visionmask(device), states, actions, reps, device)}
        elif name == "random":
            layouts = {"none": time_explainer(make_explainer(name, agent), states, actions, reps, device)}
        else:
            layouts = time_in_both_layouts(make_explainer(name, agent), agent, states, actions, reps, device)
        layout, sec = min(layouts.items(), key=lambda kv: kv[1])
        results[name] = {"seconds_per_state": round(sec, 6), "layout": layout,
                         "seconds_per_state_by_layout": {k: round(v, 6) for k, v in layouts.items()},
                         "agent_encoder": {"ife": "ife", "visionmask": "shipped Breakout VisionMask"}.get(name, "nature")}
        print(f"{device.type:5s} {name:10s} {sec * 1e3:10.2f} ms/state ({layout})", flush=True)
    if device.type == "cpu":  # what flushing denormals to zero (xrlkit.runtime.flush_denormals) saves VisionMask
        torch.set_flush_denormal(False)
        try:
            sec = time_explainer(shipped_visionmask(device), states, actions, reps, device)
        finally:
            torch.set_flush_denormal(True)
        results["visionmask-denormals-kept"] = {"seconds_per_state": round(sec, 6), "agent_encoder": "shipped Breakout VisionMask"}
        print(f"{device.type:5s} visionmask with denormals kept {sec * 1e3:9.2f} ms/state", flush=True)
    sec = time_explainer(CaptumLime(agents["nature"]), states, actions, reps, device)
    results["captum-lime"] = {"seconds_per_state": round(sec, 6), "agent_encoder": "nature"}
    print(f"{device.type:5s} captum-lime {sec * 1e3:9.2f} ms/state", flush=True)
    vm = results["visionmask"]["seconds_per_state"]
    speedup = {name: round(r["seconds_per_state"] / vm, 1) for name, r in results.items() if name != "visionmask"}
    print(f"VisionMask is faster per state than: {speedup}")
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "allocator": current_allocator(),
        "batch": batch, "reps": reps,
        "note": note, "results": results, "visionmask_speedup_over": speedup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when unavailable")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=None, help="result file (one device only; default: results/explainers-<device>.json)")
    args = parser.parse_args()
    if args.out is not None and "," in args.devices:
        parser.error("--out takes one device")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda not available, skipped")
            continue
        out = args.out or RESULTS / f"explainers-{name}.json"
        out.write_text(json.dumps(bench(torch.device(name), args.batch, args.reps, args.note), indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
