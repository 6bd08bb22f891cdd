"""Pack a trained model into xrlkit/data/models and list it in the manifest.

* ``sb3``: an SB3 zip; the optimizer state is dropped (a fresh optimizer is stored, which SB3
  needs to load the zip), the policy weights are stored in float16 (SB3 loads them back into its
  float32 policy; logits change by less than 0.05 on random states, checked here) and xrlkit
  metadata is written into it, with the ``act_mode`` it is scored and played with (``sample``:
  actions drawn from the policy, RL-Zoo's way of scoring Atari PPO).
* ``xrlkit``: an agent trained by xrlkit (``agent.safetensors`` of ``xrlkit train`` or ``xrlkit
  distill``, whose ``origin: distilled``, teacher and held-out agreement go into the manifest); weights are
  stored in float16 where that changes the logits by less than 0.05 on random states (checked here;
  else in float32) with the trainer's metadata, and it is scored on seeds the trainer never used (``--eval-seed``).
  With ``--stored-dtype int8`` its fully connected layers are stored in int8 and its small weights
  in float16 (:data:`xrlkit.checkpoint.AGENT_INT8_MIN_NUMEL`; ~60% of float16's size) and the logits
  may move by no more than 0.05 on 64 states of the agent's own play (as for a VisionMask: random
  pixels, far from its domain, move them more).
* ``visionmask``: a VisionMask checkpoint; weights are stored in float16 (halves the size) or, with
  ``--stored-dtype int8``, in int8 with a scale per group of 64 weights
  (:func:`xrlkit.checkpoint.quantize_int8`, about a quarter; weights under
  ``VISIONMASK_INT8_MIN_NUMEL`` entries in float16), with the same metadata; no mask value in
  [0, 1] may move by more than 0.05 on states of the expert's play (checked here: the agents' bound).

A model is written to ``xrlkit/data/models/.staging`` first and moved into place only when every
check and the evaluation have passed, so a failed or interrupted run leaves the shipped model and
the manifest as they were.

Usage:
    python scripts/ship_model.py sb3 SRC.zip --game Breakout --role expert --command "..." [--protocol rlzoo] [--act-mode sample]
    python scripts/ship_model.py xrlkit SRC.safetensors --game Pong --command "..." [--act-mode sample] [--role second-seed | ife] [--stored-dtype int8]
    python scripts/ship_model.py visionmask SRC.safetensors --game Breakout --command "..." [--stored-dtype int8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from xrlkit.checkpoint import file_sha256, load_tensors, save_tensors
from xrlkit.defaults import MODELS_DIR, ROLES, shipped
from xrlkit.evaluation import evaluate
from xrlkit.games import is_atari, resolve_game


def _staging() -> Path:
    """Where a model is packed and checked before it replaces a shipped one."""
    return MODELS_DIR / ".staging"


def _update_manifest(entry: dict) -> None:
    path = MODELS_DIR / "manifest.json"
    entries = json.loads(path.read_text()) if path.exists() else []
    for old in entries:  # a replaced model whose file name changed leaves no orphan file behind
        if (old["game"], old["role"]) == (entry["game"], entry["role"]) and old["file"] != entry["file"]:
            (MODELS_DIR / old["file"]).unlink(missing_ok=True)
    entries = [e for e in entries if (e["game"], e["role"]) != (entry["game"], entry["role"])] + [entry]
    path.write_text(json.dumps(sorted(entries, key=lambda e: (e["game"], e["role"])), indent=1) + "\n")


def ship_sb3(src: Path, game: str, role: str, command: str, protocol: str, episodes: int, act_mode: str) -> dict:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from xrlkit.agents.sb3 import load_sb3_agent, read_xrlkit_meta, write_xrlkit_meta
    from xrlkit.envs import action_meanings

    agent = load_sb3_agent(src, game=game)
    model: BaseAlgorithm = agent.model
    states = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = agent.logits(states).detach()
    model.policy.half()
    model.policy.optimizer = type(model.policy.optimizer)(model.policy.parameters(), **model.policy.optimizer.defaults)
    algo = type(model).__name__.lower()
    dst = _staging() / f"{game}-{algo}-{role}.zip"
    model.save(dst)
    source = read_xrlkit_meta(src) or {}  # what the trainer recorded (encoder, distillation, ...) is kept
    meta = {**source, "game": game, "algo": algo, "encoder": source.get("encoder", "nature"), "protocol": protocol,
            "steps": int(model.num_timesteps), "n_actions": agent.n_actions,
            "action_meanings": list(action_meanings(game)), "act_mode": act_mode, "command": command}
    write_xrlkit_meta(dst, meta)
    packed = load_sb3_agent(dst, game=game)
    assert packed.act_mode == act_mode
    diff = float((packed.logits(states).detach() - before).abs().max())
    if diff > 0.05:
        raise SystemExit(f"float16 weights change the logits by {diff:.4f}; not shipping")
    result = evaluate(packed, game, episodes, protocol=protocol, seed=0, progress=True)
    extra = {k: meta[k] for k in ("trained_by", "distill") if k in meta}
    return {"game": game, "role": role, "file": dst.name, "kind": f"sb3-{algo}", "encoder": meta["encoder"], **extra,
            "steps": meta["steps"],
            "protocol": protocol, "act_mode": act_mode, "command": command, "max_logit_change_fp16": diff, "eval_returns": result.returns, "eval_mean": result.mean,
            "eval_hns": _finite(result.hns), "eval_protocol": f"{episodes} episodes, seed 0, {act_mode}, {protocol} protocol"}


def _finite(x: float) -> float | None:
    """``x``, or None where it is NaN (HNS of a world without a human score): the manifest is JSON."""
    return x if math.isfinite(x) else None


def _states_of_play(agent, game: str, seed: int) -> tuple[torch.Tensor, str]:
    """The states an int8 storage check runs on, ``uint8 [64, 4, 84, 84]``: every 8th step of the
    agent's own play from ``seed`` (random pixels are far from a model's domain: there int8 moves a
    VisionMask's masks by ~0.15 where it moves them by ~0.01 on real states), and how to name them."""
    from xrlkit.agents.load import agent_protocol
    from xrlkit.evaluation import rollout

    states = rollout(agent, game, 64, protocol=agent_protocol(agent), seed=seed, every=8).states
    return torch.as_tensor(states), f"64 states of the agent's play (every 8th step, seed {seed})"


def ship_xrlkit(src: Path, game: str, role: str, command: str, episodes: int, act_mode: str, eval_seed: int,
                stored_dtype: str = "float16") -> dict:
    from xrlkit.agents.load import agent_protocol
    from xrlkit.checkpoint import load_agent, save_agent
    from xrlkit.competence import random_play

    agent = load_agent(src, game=game, act_mode=act_mode)
    meta = {k: v for k, v in agent.meta.items()
            if k not in ("kind", "config", "game", "n_actions", "action_meanings", "act_mode", "versions")}
    if stored_dtype == "int8":
        states, checked_on = _states_of_play(agent, game, eval_seed)
    else:
        states = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        checked_on = "64 random states"
    before = agent.logits(states).detach()
    algo, encoder, origin = meta.get("algo", "rainbow"), meta.get("encoder", "nature"), meta.get("origin", "rl")
    name = f"{game}-{algo}-{encoder}" + ("" if role == encoder else f"-{role}")
    dst = _staging() / f"{name}.safetensors"
    # float32 where float16 moves the logits too far; int8 only when asked, and never beyond the bound
    for dtype in ("int8",) if stored_dtype == "int8" else ("float16", "float32"):
        save_agent(agent if dtype == "int8" else agent.to(getattr(torch, dtype)), dst, game=game, **{
            **meta, "stored_dtype": dtype, "command": command, "versions": agent.meta.get("versions")})
        packed = load_agent(dst, game=game)
        diff = float((packed.logits(states).detach() - before).abs().max())
        if dtype != "float32":
            stored_diff = diff
        if diff <= 0.05:
            break
        if dtype == "float16":
            print(f"float16 weights change the logits by {diff:.4f} (bound 0.05): storing float32", file=sys.stderr)
    else:
        raise SystemExit(f"{dtype} weights change the logits by {diff:.4f} on {checked_on} (bound 0.05); not shipping")
    protocol = agent_protocol(packed)
    result = evaluate(packed, game, episodes, protocol=protocol, seed=eval_seed, progress=True)
    # a distilled agent carries its teacher, recipe and held-out agreement (xrlkit.agents.distill); a run started
    # from another agent's weights (train --init-from) its parent, whose frames its own count includes, and the
    # teacher it was kickstarted with (train --teacher)
    provenance = {k: meta[k] for k in ("teacher", "distill", "heldout_agreement", "heldout_states", "value_trained",
                                      "init_from", "frames_this_run", "kickstart_teacher") if meta.get(k) is not None}
    expert = shipped(game, "expert")
    for key in ("teacher", "kickstart_teacher"):
        teacher = provenance.get(key, {})
        if teacher.get("sha256") and expert is not None and teacher["sha256"] == file_sha256(expert):
            # taught by (a copy of) the shipped expert (same bytes): name the file a clone has, not this machine's path
            provenance[key] = {**teacher, "path": os.path.relpath(expert, MODELS_DIR.parents[2])}
    if not is_atari(game):  # no human reference: random play on the same seeds is the yardstick
        rand = random_play(packed, game, episodes, protocol=protocol, seed=eval_seed)
        provenance.update(random_eval_mean=rand.mean, random_eval_returns=rand.returns)
        if result.stats:
            provenance.update(eval_stats=result.stat_means(), random_eval_stats=rand.stat_means())
    return {"game": game, "role": role, "file": dst.name, "kind": f"xrlkit-{algo}", "algo": algo, "encoder": encoder,
            "origin": origin, **provenance, "frames": meta.get("frames"), "seed": meta.get("seed"), "protocol": protocol,
            "act_mode": act_mode, "command": command, "stored_dtype": packed.meta["stored_dtype"],
            f"max_logit_change_{'int8' if stored_dtype == 'int8' else 'fp16'}": stored_diff,
            "logit_change_on": checked_on,
            "eval_returns": result.returns, "eval_mean": result.mean, "eval_hns": _finite(result.hns),
            "eval_protocol": f"{episodes} episodes, seeds from {eval_seed}, {act_mode}, {protocol} protocol"}


#: how far a stored explainer's mask values (in [0, 1]) may move from the trained float32 model's
MASK_CHANGE_BOUND = 0.05


def ship_visionmask(src: Path, game: str, command: str, stored_dtype: str, check_seed: int) -> dict:
    from xrlkit.agents.load import load_any_agent
    from xrlkit.checkpoint import VISIONMASK_INT8_MIN_NUMEL, quantize_int8
    from xrlkit.visionmask import load_visionmask

    tensors, meta = load_tensors(src)
    expert = shipped(game, "expert")
    trained_on = meta.get("agent", {}).get("sha256")
    if expert is None or trained_on != file_sha256(expert):
        raise SystemExit(f"{src} explains the agent {meta.get('agent', {}).get('path')!r}, not {game}'s shipped expert "
                         f"({expert}); train it with --agent shipped")
    stored = (quantize_int8(tensors, min_numel=VISIONMASK_INT8_MIN_NUMEL) if stored_dtype == "int8"
              else {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()})
    dst = _staging() / f"{game}-visionmask.safetensors"
    save_tensors(dst, stored, {**meta, "stored_dtype": stored_dtype, "command": command})
    # the check runs on the explainer's own domain, states of the expert's play
    states, checked_on = _states_of_play(load_any_agent(expert, game=game), game, check_seed)
    full, packed = load_visionmask(src), load_visionmask(dst)
    diff = float((full.explain(states) - packed.explain(states)).abs().max())
    if diff > MASK_CHANGE_BOUND:
        raise SystemExit(f"{stored_dtype} weights change the masks by {diff:.4f} (bound {MASK_CHANGE_BOUND}); not shipping")
    return {"game": game, "role": "visionmask", "file": dst.name, "kind": "visionmask", "command": command,
            "backbone": meta["backbone"], "head_channels": meta.get("head_channels", 256),
            "reference_mode": meta["reference_mode"], "stored_dtype": stored_dtype, "max_mask_change": diff,
            "mask_change_on": checked_on, "lambda_rank": meta.get("train_config", {}).get("lambda_rank", 0.0),
            "epoch": meta.get("epoch"), "val_loss": meta.get("score"),
            **({"init_from": meta["init_from"]} if meta.get("init_from") else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["sb3", "xrlkit", "visionmask"])
    p.add_argument("src", type=Path)
    p.add_argument("--game", required=True)
    p.add_argument("--role", default="expert", choices=[r for r in ROLES if r != "visionmask"])
    p.add_argument("--command", required=True, help="the command that trained the model")
    p.add_argument("--protocol", default="rlzoo")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=1_000_000,
                   help="xrlkit: first seed of the scoring episodes (the trainer uses seed + 10_000 for its own); "
                        "visionmask: seed of the expert play its storage check runs on")
    p.add_argument("--stored-dtype", choices=("float16", "int8"), default="float16",
                   help="visionmask, xrlkit: how the weights are stored (int8: a scale per 64 weights; an agent keeps its small "
                        "weights in float16; "
                        "an xrlkit agent's float16 falls back to float32 where it moves the logits too far)")
    p.add_argument("--act-mode", choices=("greedy", "sample"), default="greedy",
                   help="how the shipped agent plays: argmax, or draws from its policy")
    args = p.parse_args(argv)
    game = resolve_game(args.game)
    _staging().mkdir(parents=True, exist_ok=True)
    try:
        if args.kind == "sb3":
            entry = ship_sb3(args.src, game, args.role, args.command, args.protocol, args.episodes, args.act_mode)
        elif args.kind == "xrlkit":
            entry = ship_xrlkit(args.src, game, args.role, args.command, args.episodes, args.act_mode, args.eval_seed,
                                args.stored_dtype)
        else:
            entry = ship_visionmask(args.src, game, args.command, args.stored_dtype, args.eval_seed)
        os.replace(_staging() / entry["file"], MODELS_DIR / entry["file"])
    finally:
        shutil.rmtree(_staging(), ignore_errors=True)
    entry["size_mb"] = round((MODELS_DIR / entry["file"]).stat().st_size / 1e6, 2)
    _update_manifest(entry)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
