"""Policy distillation: a student with another encoder (e.g. IFE) learns to act as a teacher does.

Why it is here. The IFE paper trains its encoder with Fast Rainbow for 10M+ frames, which takes a
GPU (``xrlkit train --encoder ife`` does that). Distillation asks far less: states labelled by a
competent teacher (e.g. a shipped PPO expert) instead of millions of frames of trial and error.
It uses DAgger (Ross et al., 2011) with soft targets: round 0 keeps states the teacher visits,
every later round keeps states the current student visits, every state is labelled with the
teacher's action distribution, and the student is trained on all rounds so far to minimise the
cross-entropy to it (a KL divergence up to a constant).

The recipe is sized in *updates*, not epochs: a first attempt (3 rounds, ~700 updates of an SB3
student) left a Breakout IFE student agreeing with its teacher on 44% of states, below random
play. The default here is 4 rounds of 2,500 updates (10,000 minibatches of 256, ~2.6M samples):
about 25 minutes of IFE updates on a 2-core CPU with native bf16 (2,050 samples/s measured on a
Sapphire Rapids VM), plus the rollouts.

The student is a :class:`~xrlkit.agents.policy.PolicyAgent` (the lean PPO's actor-critic) with the
chosen encoder, trained with the machine's :class:`~xrlkit.runtime.Runtime` (bf16 autocast where
native, channels_last). Its value head is not trained (``value_trained: false`` in its metadata).

What it means for explanations: a distilled student has learnt its attention by imitating the
teacher, not from rewards, so its IFE attention shows what the IFE bottleneck needs to reproduce
the teacher's choices; papers' claims about RL-trained IFE attention are not tested by it. Its
checkpoint says ``origin: distilled``.

Files in ``out_dir``: ``config.json`` (settings; a resume must use the same), ``round{k}-data.npz``
(round ``k``'s states and teacher logits, written before training on them), ``resume.safetensors``
(student, Adam state, counters, RNG; rewritten every ``checkpoint_every`` updates, after each round
and on Ctrl-C / SIGTERM), ``metrics.csv`` (one row per round) and ``agent.safetensors`` (the
final student, loadable by :func:`xrlkit.agents.load.load_any_agent`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xrlkit.agents.base import Agent, greedy_actions
from xrlkit.agents.encoders import ENCODERS
from xrlkit.agents.policy import PolicyAgent, PolicyConfig, warm_start
from xrlkit.checkpoint import command_line, load_tensors, optimizer_tensors, restore_optimizer, save_agent
from xrlkit.envs import action_meanings, get_protocol, make_vector_env
from xrlkit.evaluation import evaluate
from xrlkit.games import resolve_game
from xrlkit.registry import choose
from xrlkit.runlog import CsvLog, StopFlag, TrainingInterrupted, atomic_save, curve_path
from xrlkit.runtime import Runtime, resolve_runtime
from xrlkit.shapes import OBS_SHAPE

#: seeds of the held-out states, far from every round's collection seeds
HELDOUT_SEED = 50_000


@dataclass
class DistillConfig:
    """Distillation settings (stored in ``config.json``; a resume must use the same ones)."""

    encoder: str = "ife"
    hidden: int = 512  # width of the Linear+ReLU after the encoder (the PPO agent's)
    rounds: int = 4
    states_per_round: int = 50_000
    every: int = 2  # keep every 2nd step of each env (consecutive states are near-duplicates)
    student_epsilon: float = 0.05  # uniform exploration of the student while it collects (rounds >= 1)
    updates_per_round: int = 2_500  # minibatches drawn uniformly from all states gathered so far
    batch_size: int = 256
    lr: float = 2.5e-4  # Adam, annealed linearly to 0 over all updates
    temperature: float = 1.0  # teacher targets are softmax(teacher_logits / temperature)
    heldout_states: int = 5_000  # states the final student visits on unseen seeds, to score agreement
    n_envs: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "states_per_round", "every", "updates_per_round", "batch_size", "n_envs", "hidden",
                     "heldout_states"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or self.lr <= 0 or not 0 <= self.student_epsilon <= 1:
            raise ValueError("temperature and lr must be > 0 and student_epsilon in [0, 1]")
        choose("encoder", self.encoder, ENCODERS)

    @property
    def total_updates(self) -> int:
        return self.rounds * self.updates_per_round


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
    target = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(dim=1).mean()


@torch.no_grad()
def agreement(student: Agent, teacher_logits: np.ndarray | torch.Tensor, states: np.ndarray) -> float:
    """Share of ``states`` on which the student's greedy action is the teacher's (argmax of
    ``teacher_logits [N, A]``)."""
    return float((greedy_actions(student, states, batch_size=512) == np.asarray(teacher_logits).argmax(1)).mean())


def _data_path(out: Path, k: int) -> Path:
    return out / f"round{k}-data.npz"


def _save_round_data(path: Path, states: np.ndarray, logits: np.ndarray, agreement_before: float) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")  # np.savez adds .npz to names without it
    np.savez_compressed(tmp, states=states, teacher_logits=logits, agreement_before=agreement_before)
    tmp.replace(path)


def _load_round_data(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        with np.load(path) as d:
            return d["states"], d["teacher_logits"], float(d["agreement_before"])
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a distillation round file ({err}); delete it to collect that round again") from err


def distill(
    teacher: Agent,
    game: str,
    out_dir: str | Path,
    config: DistillConfig | None = None,
    *,
    protocol: str = "ifepaper",
    teacher_id: dict[str, Any] | None = None,
    runtime: Runtime | None = None,
    eval_episodes: int = 10,
    checkpoint_every: int = 250,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> Path:
    """Distil ``teacher`` into a :class:`PolicyAgent` with ``config.encoder``; returns
    ``out_dir/agent.safetensors``.

    Per round: collect ``states_per_round`` states (round 0 played by the teacher, later rounds by
    the student), label them with the teacher's logits, write them, then take
    ``updates_per_round`` Adam steps on minibatches of all states so far. ``metrics.csv`` gets a
    row per round: ``round, states, agreement_before`` (the student's agreement with the teacher on
    the round's fresh states, before training on them) ``, loss, wall_s``. The final student plays
    ``heldout_states`` states on unseen seeds, where its agreement is scored, and
    ``eval_episodes`` full games (acting as the teacher acts: sampled or greedy); both go into its
    metadata. Re-running with the same ``out_dir`` resumes where the last checkpoint left off;
    Ctrl-C or SIGTERM saves one and raises :class:`~xrlkit.runlog.TrainingInterrupted`.

    ``init_from``: start the student from the weights of that agent file (see
    :func:`~xrlkit.agents.policy.warm_start`; same game, encoder, protocol and ``hidden``), e.g.
    the student of the teacher this one replaced, so that a retrained teacher needs a few rounds of
    distillation, not a whole recipe; its metadata records the file and its SHA-256, and a resume
    must name the same file.
    """
    cfg = config or DistillConfig()
    game = resolve_game(game)
    protocol = get_protocol(protocol).name
    meanings = action_meanings(game)
    if int(teacher.n_actions) != len(meanings):
        raise ValueError(f"the teacher has {teacher.n_actions} actions, {game} has {len(meanings)}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    parent, parent_id = warm_start(init_from, game, cfg.encoder, protocol) if init_from is not None else (None, None)
    if parent is not None and parent.config.hidden != cfg.hidden:
        raise ValueError(f"--init-from {init_from} has a hidden layer of {parent.config.hidden} units, not {cfg.hidden}; "
                         f"pass --hidden {parent.config.hidden}")
    rt = runtime or resolve_runtime()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved, resume_path, agent_path = out / "config.json", out / "resume.safetensors", out / "agent.safetensors"
    settings = {**asdict(cfg), "game": game, "protocol": protocol, **({"init_from": parent_id} if parent_id else {})}
    if saved.exists() and json.loads(saved.read_text()) != settings:
        raise ValueError(f"{out} holds a distillation with other settings ({saved}); use another out_dir")
    saved.write_text(json.dumps(settings, indent=1))
    act_mode = getattr(teacher, "act_mode", "greedy")

    student = PolicyAgent(len(meanings), parent.config if parent else PolicyConfig(encoder=cfg.encoder, hidden=cfg.hidden),
                          meanings, cfg.seed, act_mode=act_mode)
    if parent is not None:
        student.load_state_dict(parent.state_dict())
    rt.prepare(student)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr, eps=1e-5)
    gen = torch.Generator().manual_seed(cfg.seed)
    counters: dict[str, Any] = {"round": 0, "update": 0, "elapsed_s": 0.0, "losses": []}
    if resume_path.is_file():
        tensors, meta = load_tensors(resume_path)
        counters = meta["counters"]
        if counters["round"] == cfg.rounds and agent_path.is_file():
            return agent_path
        student.load_state_dict({k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")})
        rt.prepare(student)
        restore_optimizer(optimizer, {k: v.to(rt.device) for k, v in tensors.items()})
        gen.set_state(tensors["rng.torch"])
    # all rounds' states in one buffer (pages are only touched as they fill), teacher logits beside
    pool = np.empty((cfg.rounds * cfg.states_per_round, *OBS_SHAPE), dtype=np.uint8)
    pool_logits = torch.empty((len(pool), len(meanings)))
    filled, agreements = 0, []

    def add_round(s: np.ndarray, t: np.ndarray, agreement_before: float) -> None:
        nonlocal filled
        pool[filled:filled + len(s)] = s
        pool_logits[filled:filled + len(s)] = torch.as_tensor(t)
        filled += len(s)
        agreements.append(agreement_before)

    for k in range(min(counters["round"] + 1, cfg.rounds)):
        if _data_path(out, k).is_file():
            add_round(*_load_round_data(_data_path(out, k)))

    def save_checkpoint() -> None:
        counters["elapsed_s"] = time.time() - t0
        tensors = {**{f"agent.{k}": v for k, v in student.state_dict().items()}, **optimizer_tensors(optimizer),
                   "rng.torch": gen.get_state()}
        atomic_save(resume_path, tensors, {"counters": counters, "settings": settings})

    log = CsvLog(curve_path(out), ("round", "states", "agreement_before", "loss", "wall_s"), step_column="round")
    log.trim(counters["round"] - 1)  # a row written after the checkpoint a crashed run resumes from
    t0 = time.time() - counters["elapsed_s"]
    with StopFlag() as stop:
        while counters["round"] < cfg.rounds:
            k = counters["round"]
            if len(agreements) <= k:  # collect round k (round 0: the teacher plays; later: the student)
                with rt.phase("rollout"):
                    student.eval()
                    s, t = collect(teacher if k == 0 else student, teacher, game, cfg.states_per_round,
                                   protocol=protocol, n_envs=cfg.n_envs, every=cfg.every,
                                   epsilon=0.0 if k == 0 else cfg.student_epsilon, seed=cfg.seed + 1000 * k)
                    before = agreement(student, t, s)
                _save_round_data(_data_path(out, k), s, t, before)
                add_round(s, t, before)
            targets = pool_logits[:filled].to(rt.device)
            bar = tqdm(total=cfg.updates_per_round, initial=counters["update"], disable=not progress,
                       desc=f"distil {game} round {k + 1}/{cfg.rounds} ({filled} states)")
            student.train()
            with rt.phase("update"):
                while counters["update"] < cfg.updates_per_round:
                    if stop:
                        save_checkpoint()
                        raise TrainingInterrupted(f"distillation stopped by signal {stop.signal}; "
                                                  f"checkpoint in {resume_path}")
                    done = k * cfg.updates_per_round + counters["update"]
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * (1.0 - done / cfg.total_updates)
                    rows = torch.randint(filled, (cfg.batch_size,), generator=gen).sort().values  # sorted: memory order
                    with rt.autocast():
                        logits = student(rt.input(pool[rows.numpy()]))
                    loss = distillation_loss(logits, targets[rows.to(rt.device)], cfg.temperature)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(student.parameters(), 0.5)
                    optimizer.step()
                    counters["losses"] = (counters["losses"] + [loss.item()])[-100:]
                    counters["update"] += 1
                    bar.update()
                    if counters["update"] % 50 == 0:
                        bar.set_postfix(loss=f"{np.mean(counters['losses']):.3f}")
                    if counters["update"] % checkpoint_every == 0:
                        save_checkpoint()
            bar.close()
            log.append({"round": k, "states": filled, "agreement_before": f"{agreements[k]:.4f}",
                        "loss": f"{np.mean(counters['losses']):.4f}", "wall_s": f"{time.time() - t0:.1f}"})
            counters.update(round=k + 1, update=0)
            save_checkpoint()

    student.eval()
    with rt.phase("rollout"):
        s, t = collect(student, teacher, game, cfg.heldout_states, protocol=protocol, n_envs=cfg.n_envs,
                       every=cfg.every, seed=HELDOUT_SEED + cfg.seed)
        result = {"heldout_agreement": agreement(student, t, s), "heldout_states": len(s)}
        if eval_episodes:
            score = evaluate(student, game, eval_episodes, protocol=protocol, seed=cfg.seed + 10_000)
            result.update(eval_returns=score.returns, eval_mean=score.mean, eval_hns=score.hns)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return save_agent(
        student.cpu(), agent_path, game=game, algo="distillation", origin="distilled", value_trained=False,
        encoder=cfg.encoder, protocol=protocol, seed=cfg.seed, teacher=dict(teacher_id or {"class": type(teacher).__name__}),
        distill=asdict(cfg), init_from=parent_id, runtime=rt.record(), wall_s=round(counters["elapsed_s"], 1), command=command_line(),
        **result,
    )
