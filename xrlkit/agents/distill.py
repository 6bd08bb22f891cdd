"""Policy distillation: a student with another encoder (e.g. IFE) learns to act as a teacher does.

Why it is here. The IFE paper trains its encoder with Fast Rainbow for 10M+ frames, which takes a
GPU (``xrlkit train --encoder ife`` does that). Distillation asks far less: tens of thousands of
states labelled by a competent teacher (e.g. a shipped PPO expert) instead of millions of frames of
trial and error. It uses DAgger (Ross et al., 2011) with soft targets: round 0 keeps states the
teacher visits, every later round keeps states the current student visits, every state is labelled
with the teacher's action distribution, and the student is trained on all rounds so far to minimise
the cross-entropy to it (a KL divergence up to a constant). It still needs thousands of updates of
the IFE encoder: on a 2-core CPU, 3 rounds of 15k states with 2 passes each (about 700 updates,
22 minutes) left a Breakout student agreeing with its teacher on 44% of states, below random play.

What it means for explanations: a distilled student has learnt its attention by imitating the
teacher, not from rewards, so its IFE attention shows what the IFE bottleneck needs to reproduce
the teacher's choices; papers' claims about RL-trained IFE attention are not tested by it.

The student is an SB3 PPO model whose features extractor is :class:`XrlkitExtractor`, so it loads,
plays and explains (``attention``) like any SB3 agent (:func:`~xrlkit.agents.sb3.load_sb3_agent`).
Its value head is not trained. Runs are resumable: after each round the student (an SB3 zip, with its
optimizer state) and the round's states and teacher logits are written to ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xrlkit.agents.base import Agent, greedy_actions
from xrlkit.agents.sb3 import (
    ALGOS, RLZOO_PRESETS, SB3Agent, XrlkitExtractor, _build_hyperparams, load_sb3_agent, make_sb3_train_env,
    write_xrlkit_meta,
)
from xrlkit.envs import action_meanings, get_protocol, make_vector_env
from xrlkit.evaluation import evaluate
from xrlkit.games import resolve_game


@dataclass
class DistillConfig:
    """Distillation settings (stored in ``config.json``; a resume must use the same ones)."""

    encoder: str = "ife"
    hidden: int = 256  # width of the Linear+ReLU after the encoder
    rounds: int = 3
    states_per_round: int = 20_000
    every: int = 2  # keep every 2nd step of each env (consecutive states are near-duplicates)
    student_epsilon: float = 0.05  # exploration of the student while it collects (rounds >= 1)
    epochs: int = 2  # passes over all states gathered so far, per round
    batch_size: int = 256
    lr: float = 2.5e-4
    temperature: float = 1.0  # teacher targets are softmax(teacher_logits / temperature)
    n_envs: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "states_per_round", "every", "epochs", "batch_size", "n_envs", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or not 0 <= self.student_epsilon <= 1:
            raise ValueError("temperature must be > 0 and student_epsilon in [0, 1]")


def make_student(game: str, encoder: str = "ife", hidden: int = 256, protocol: str = "rlzoo",
                 seed: int = 0, device: str = "cpu") -> SB3Agent:
    """An untrained SB3 PPO agent (RL-Zoo's Atari preset) with an xrlkit ``encoder``."""
    game = resolve_game(game)
    preset = RLZOO_PRESETS["ppo"]
    kwargs = _build_hyperparams(preset["hyperparams"])
    kwargs["policy_kwargs"] = {"features_extractor_class": XrlkitExtractor,
                               "features_extractor_kwargs": {"encoder": encoder, "hidden": hidden}}
    env = make_sb3_train_env(game, 1, protocol, seed, preset["wrapper_kwargs"])
    try:
        with warnings.catch_warnings():  # the one env only gives the spaces: PPO's batch-size warning is moot
            warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
            model = ALGOS["ppo"](preset["policy"], env, seed=seed, device=device, verbose=0, **kwargs)
    finally:
        env.close()
    return SB3Agent(model, action_meanings(game))


def collect(policy: Agent, teacher: Agent, game: str, n_states: int, *, protocol: str, n_envs: int = 8,
            every: int = 2, epsilon: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Play ``policy`` (by its ``act``, epsilon-greedy) on ``n_envs`` evaluation envs and keep every ``every``-th
    step of each until ``n_states`` are kept. Returns states ``uint8 [N, 4, 84, 84]`` and the
    teacher's logits on them ``float32 [N, A]``."""
    env = make_vector_env(game, n_envs, protocol, seed=seed)
    states: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    kept, step = 0, 0
    try:
        obs, _ = env.reset(seed=seed)
        while kept < n_states:
            obs = np.asarray(obs, dtype=np.uint8)
            if step % every == 0:
                take = obs[: n_states - kept]
                with torch.no_grad():
                    logits.append(teacher.logits(take).float().cpu().numpy())
                states.append(take.copy())
                kept += len(take)
            obs, *_ = env.step(policy.act(obs, epsilon=epsilon))
            step += 1
    finally:
        env.close()
    return np.concatenate(states), np.concatenate(logits)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy ``-sum_a p_T(a) log p_S(a)`` with ``p_T = softmax(teacher / T)``,
    ``p_S = softmax(student / T)``; both ``[B, A]``."""
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"expected two [B, A] tensors, got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    target = F.softmax(teacher_logits / temperature, dim=1)
    return -(target * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1).mean()


def _round_files(out_dir: Path, k: int) -> tuple[Path, Path]:
    return out_dir / f"round{k}.zip", out_dir / f"round{k}-data.npz"


def distill(
    teacher: Agent,
    game: str,
    out_dir: str | Path,
    config: DistillConfig | None = None,
    *,
    protocol: str = "rlzoo",
    teacher_id: dict[str, Any] | None = None,
    eval_episodes: int = 5,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Distil ``teacher`` into a student with ``config.encoder``; returns ``out_dir/final.zip``.

    Writes per round ``round{k}.zip`` (student after round ``k``), ``round{k}-data.npz`` (that
    round's states and teacher logits, compressed) and a ``metrics.csv`` row: ``round, states,
    agreement`` (how often the student, before training on the round, already picked the
    teacher's greedy action on the states it visited) ``, loss, wall_s``. The final student is
    evaluated on ``eval_episodes`` full episodes and its metadata stored in ``final.zip``.
    Re-running with the same ``out_dir`` resumes after the last finished round.
    """
    cfg = config or DistillConfig()
    game = resolve_game(game)
    protocol = get_protocol(protocol).name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    settings = {**asdict(cfg), "game": game, "protocol": protocol}
    if saved.exists() and json.loads(saved.read_text()) != settings:
        raise ValueError(f"{out} holds a distillation with other settings ({saved}); use another out_dir")
    saved.write_text(json.dumps(settings, indent=1))
    start = 0
    while start < cfg.rounds and all(p.exists() for p in _round_files(out, start)):
        start += 1
    if start:  # the zip holds the policy and the distillation optimizer's state
        student = load_sb3_agent(_round_files(out, start - 1)[0], game=game, device=device)
    else:
        torch.manual_seed(cfg.seed)
        student = make_student(game, cfg.encoder, cfg.hidden, protocol, cfg.seed, device)
        student.policy.optimizer = torch.optim.Adam(student.policy.parameters(), lr=cfg.lr, eps=1e-5)
    if int(teacher.n_actions) != student.n_actions:
        raise ValueError(f"the teacher has {teacher.n_actions} actions, {game} has {student.n_actions}")
    policy = student.policy
    optimizer = policy.optimizer
    data = [np.load(_round_files(out, k)[1]) for k in range(start)]
    states = [d["states"] for d in data]
    targets = [d["teacher_logits"] for d in data]
    t0 = time.time()
    for k in range(start, cfg.rounds):
        actor: Agent = teacher if k == 0 else student
        s, t = collect(actor, teacher, game, cfg.states_per_round, protocol=protocol, n_envs=cfg.n_envs,
                       every=cfg.every, epsilon=0.0 if k == 0 else cfg.student_epsilon, seed=cfg.seed + 1000 * k)
        agreement = float((greedy_actions(student, s, batch_size=512) == t.argmax(1)).mean())
        states.append(s)
        targets.append(t)
        all_s, all_t = np.concatenate(states), torch.as_tensor(np.concatenate(targets))
        gen = torch.Generator().manual_seed(cfg.seed + k)
        n_batches = cfg.epochs * -(-len(all_s) // cfg.batch_size)
        bar = tqdm(total=n_batches, desc=f"distil {game} round {k + 1}/{cfg.rounds}", disable=not progress)
        policy.set_training_mode(True)
        losses = []
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(all_s), generator=gen).split(cfg.batch_size):
                loss = distillation_loss(student.logits(all_s[idx.numpy()]), all_t[idx].to(student.device), cfg.temperature)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
                optimizer.step()
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        policy.set_training_mode(False)
        model_path, data_path = _round_files(out, k)
        np.savez_compressed(data_path, states=s, teacher_logits=t)
        student.model.save(model_path)
        metrics = out / "metrics.csv"
        new = not metrics.exists()
        with metrics.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["round", "states", "agreement", "loss", "wall_s"])
            writer.writerow([k, len(all_s), f"{agreement:.4f}", f"{np.mean(losses[-50:]):.4f}", f"{time.time() - t0:.1f}"])
    final = out / "final.zip"
    student.model.save(final)
    result = evaluate(student, game, eval_episodes, protocol=protocol, seed=cfg.seed) if eval_episodes else None
    write_xrlkit_meta(final, {
        "game": game, "algo": "ppo", "encoder": cfg.encoder, "protocol": protocol,
        "n_actions": student.n_actions, "action_meanings": list(student.action_meanings),
        "trained_by": "distillation", "teacher": dict(teacher_id or {"class": type(teacher).__name__}),
        "distill": asdict(cfg), "command": shlex.join(sys.argv),
        **({"eval_returns": result.returns, "eval_mean": result.mean, "eval_hns": result.hns} if result else {}),
    })
    return final
