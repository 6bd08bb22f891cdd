"""Rainbow learner (double DQN, dueling, PER, n-step, optional noisy nets and C51) for Atari.

Two presets, stored as plain data in :data:`PRESETS`:

* ``fastrainbow`` -- the "Fast Rainbow" settings of schmidtdominik/Rainbow, the code the IFE
  paper builds on, in its fastest-throughput configuration (its README: batch 512, 64 envs,
  one update per vector step): double DQN, dueling, no noisy nets, no C51, PER alpha 0.5 with
  beta 0.45 -> 1, 3-step returns, gamma 0.99, Adam(lr 2.5e-4, eps 0.005 / 512), Huber loss,
  gradient-norm clip 10, target sync every 32k frames, epsilon 1 -> 0.01 over 1M frames,
  learning from 80k frames on, a 2**20 replay, IMPALA-CNN (spectral norm in
  its residual blocks). Replay ratio: one batch of 512 per vector step of 64 envs, i.e. each
  collected transition is sampled 8 times on average (the same sample throughput as that
  code's default of two updates of 256).
* ``der`` -- data-efficient Rainbow (van Hasselt et al. 2019, Atari-100k): noisy nets, C51
  (51 atoms on [-10, 10]), 20-step returns, 1 env, batch 32, Adam(lr 1e-4, eps 1.5e-4), one
  update per env step, target update every 2000 updates (= 8000 frames at that rate),
  learning from 1600 steps (6400 frames), PER alpha 0.5 with beta 0.4 -> 1, no epsilon,
  gradient clip 10, dueling, Nature-CNN by default.

Frame counts are emulator frames (4 per agent step with frame-skip 4). Budgets (total frames,
evaluation and checkpoint cadence, ``n_envs``) are arguments of :func:`train`.

Files in ``out_dir``: ``agent.safetensors`` (the final agent, :func:`xrlkit.checkpoint.save_agent`),
``metrics.csv`` (learning curve, :func:`learning_curve`), ``resume.safetensors`` (online and
target nets, flattened Adam state, counters, config and RNG states as JSON; no pickle; written
every ``checkpoint_every_frames`` and on Ctrl-C / SIGTERM, which then raise
:class:`~xrlkit.runlog.TrainingInterrupted`) and, with ``save_replay=True``, ``replay.safetensors``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xrlkit.agents.base import choose_actions
from xrlkit.agents.encoders import ENCODERS
from xrlkit.agents.qnet import QAgent, QNetConfig
from xrlkit.agents.replay import Batch, PrioritizedReplay
from xrlkit.checkpoint import command_line, load_tensors, optimizer_tensors, read_meta, restore_optimizer, save_agent
from xrlkit.envs import action_meanings, default_protocol, get_protocol, make_vector_env
from xrlkit.evaluation import evaluate
from xrlkit.games import is_atari, resolve_game
from xrlkit.presets import config_from_preset
from xrlkit.registry import choose
from xrlkit.runlog import (CsvLog, StopFlag, TrainingInterrupted, atomic_save, check_out_dir, check_same_run,
                           curve_path, read_curve)
from xrlkit.runtime import Runtime, expected_duration, resolve_runtime


@dataclass
class RainbowConfig:
    """Hyper-parameters of one Rainbow run (frames are emulator frames, 4 per agent step)."""

    n_envs: int
    batch_size: int
    lr: float
    adam_eps: float
    gamma: float
    n_step: int
    buffer_size: int  # transitions, over all envs
    per_alpha: float  # 0 = uniform replay
    per_beta0: float  # annealed linearly to per_beta_final over the run's total frames
    per_beta_final: float
    per_eps: float
    double: bool
    dueling: bool
    noisy: bool
    atoms: int  # 1 = expected Q-values, > 1 = C51 on [v_min, v_max]
    v_min: float
    v_max: float
    hidden: int
    loss: str  # "huber" or "mse" (only used when atoms == 1; C51 uses cross-entropy)
    grad_clip: float
    target_update_frames: int
    updates_per_step: int  # gradient updates per vector-env step
    learning_starts_frames: int  # learning starts once the buffer holds this many frames / 4 transitions
    eps_start: float
    eps_final: float
    eps_decay_frames: int
    default_encoder: str

    def __post_init__(self) -> None:
        checks = [
            (self.n_envs >= 1, "n_envs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0 and self.adam_eps > 0, "lr and adam_eps must be > 0"),
            (0.0 <= self.gamma <= 1.0, "gamma must be in [0, 1]"),
            (self.n_step >= 1, "n_step must be >= 1"),
            (self.per_alpha >= 0, "per_alpha must be >= 0"),
            (self.atoms >= 1 and (self.atoms == 1 or self.v_min < self.v_max), "atoms >= 1 and v_min < v_max"),
            (self.loss in ("huber", "mse"), f"loss must be 'huber' or 'mse', got {self.loss!r}"),
            (self.target_update_frames >= 1, "target_update_frames must be >= 1"),
            (self.updates_per_step >= 0, "updates_per_step must be >= 0"),
            (self.eps_decay_frames >= 1, "eps_decay_frames must be >= 1"),
            (self.default_encoder in ENCODERS, f"default_encoder must be one of {sorted(ENCODERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad Rainbow config: {message}")


PRESETS: dict[str, dict[str, Any]] = {
    "fastrainbow": {
        "n_envs": 64, "batch_size": 512, "lr": 2.5e-4, "adam_eps": 0.005 / 512, "gamma": 0.99, "n_step": 3,
        "buffer_size": 2**20, "per_alpha": 0.5, "per_beta0": 0.45, "per_beta_final": 1.0, "per_eps": 1e-6,
        "double": True, "dueling": True, "noisy": False, "atoms": 1, "v_min": -10.0, "v_max": 10.0,
        "hidden": 256, "loss": "huber", "grad_clip": 10.0, "target_update_frames": 32_000,
        "updates_per_step": 1, "learning_starts_frames": 80_000, "eps_start": 1.0, "eps_final": 0.01,
        "eps_decay_frames": 1_000_000, "default_encoder": "impala",
    },
    "der": {
        "n_envs": 1, "batch_size": 32, "lr": 1e-4, "adam_eps": 1.5e-4, "gamma": 0.99, "n_step": 20,
        "buffer_size": 100_000, "per_alpha": 0.5, "per_beta0": 0.4, "per_beta_final": 1.0, "per_eps": 1e-6,
        "double": True, "dueling": True, "noisy": True, "atoms": 51, "v_min": -10.0, "v_max": 10.0,
        "hidden": 256, "loss": "huber", "grad_clip": 10.0, "target_update_frames": 8_000,
        "updates_per_step": 1, "learning_starts_frames": 6_400, "eps_start": 0.0, "eps_final": 0.0,
        "eps_decay_frames": 1, "default_encoder": "nature",
    },
}


def make_config(preset: str, **overrides: Any) -> RainbowConfig:
    """The config of ``preset`` with ``overrides`` (``None`` values are ignored)."""
    return config_from_preset(RainbowConfig, PRESETS, preset, overrides, "Rainbow")


class RainbowLearner:
    """Online and target Q networks, Adam, and one gradient step on a replay :class:`Batch`."""

    def __init__(
        self,
        n_actions: int,
        config: RainbowConfig,
        encoder: str,
        runtime: Runtime,
        action_meanings: tuple[str, ...] | None = None,
        seed: int = 0,
    ) -> None:
        choose("encoder", encoder, ENCODERS)
        self.config, self.runtime, self.device = config, runtime, runtime.device
        c = config
        net = QNetConfig(encoder=encoder, hidden=c.hidden, dueling=c.dueling, noisy=c.noisy,
                         atoms=c.atoms, v_min=c.v_min, v_max=c.v_max)
        self.online = runtime.prepare(QAgent(n_actions, net, action_meanings, seed)).train()
        self.target = runtime.prepare(QAgent(n_actions, net, action_meanings, seed)).train()
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=c.lr, eps=c.adam_eps)
        self.scaler = runtime.grad_scaler()
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def _input(self, obs: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, 4, 84, 84]`` -> float in [0, 1] on the device, in the runtime's layout."""
        return self.runtime.input(obs)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.runtime.autocast()

    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions ``int64 [B]`` of the online net (fresh noise when noisy)."""
        if self.config.noisy:
            self.online.reset_noise()
        with self._autocast():
            q = self.online(self._input(obs))
        return choose_actions(q.float(), epsilon, self.rng)

    def _project(self, probs: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor) -> torch.Tensor:
        """C51 projection of ``R + discount * z`` with probabilities ``probs [B, atoms]`` onto
        the fixed support; returns ``[B, atoms]`` (rows sum to 1)."""
        c = self.config
        dz = (c.v_max - c.v_min) / (c.atoms - 1)
        tz = (returns[:, None] + discounts[:, None] * self.online.support[None, :]).clamp(c.v_min, c.v_max)
        b = (tz - c.v_min) / dz
        lower, upper = b.floor().long(), b.ceil().long()
        m = torch.zeros_like(probs)
        m.scatter_add_(1, lower, probs * (upper.float() - b + (lower == upper).float()))
        m.scatter_add_(1, upper, probs * (b - lower.float()))
        return m

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample losses ``[B]`` (with grad) and new priorities ``[B]`` (|TD error| or the
        C51 cross-entropy), without importance weights."""
        c = self.config
        obs, next_obs = self._input(batch.obs), self._input(batch.next_obs)
        actions = torch.from_numpy(batch.actions).to(self.device)
        returns = torch.from_numpy(batch.returns).to(self.device)
        discounts = torch.from_numpy(batch.discounts).to(self.device)
        rows = torch.arange(len(actions), device=self.device)
        with self._autocast():
            if c.double:  # one online pass over s and s'
                both = self.online.dist_logits(torch.cat([obs, next_obs])).float()
                out, online_next = both[: len(obs)], both[len(obs):].detach()
            else:
                out, online_next = self.online.dist_logits(obs).float(), None
            with torch.no_grad():
                target_next = self.target.dist_logits(next_obs).float()
        if c.atoms == 1:
            q = out.squeeze(-1)[rows, actions]
            with torch.no_grad():
                q_next = target_next.squeeze(-1)
                a_next = (online_next.squeeze(-1) if online_next is not None else q_next).argmax(1)
                y = returns + discounts * q_next[rows, a_next]
            loss_fn = F.smooth_l1_loss if c.loss == "huber" else F.mse_loss
            return loss_fn(q, y, reduction="none"), (q - y).detach().abs()
        log_p = F.log_softmax(out[rows, actions], dim=-1)
        with torch.no_grad():
            target_probs = target_next.softmax(-1)
            select = online_next.softmax(-1) if online_next is not None else target_probs
            a_next = (select * self.online.support).sum(-1).argmax(1)
            m = self._project(target_probs[rows, a_next], returns, discounts)
        ce = -(m * log_p).sum(-1)
        return ce, ce.detach()

    def update(self, batch: Batch) -> tuple[float, np.ndarray]:
        """One Adam step on the importance-weighted loss; returns (loss, new priorities [B])."""
        if self.config.noisy:
            self.online.reset_noise()
            self.target.reset_noise()
        per_sample, priorities = self.losses(batch)
        weights = torch.from_numpy(batch.weights).to(self.device)
        loss = (weights * per_sample).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.updates += 1
        return float(loss.item()), priorities.float().cpu().numpy()

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    # ---- resume state ------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (nets, flattened Adam state) and JSON (param groups, scaler, counters, RNG)."""
        tensors = {f"online.{k}": v for k, v in self.online.state_dict().items()}
        tensors.update({f"target.{k}": v for k, v in self.target.state_dict().items()})
        tensors.update(optimizer_tensors(self.optimizer))
        meta = {
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "updates": self.updates, "rng": self.rng.bit_generator.state,
            "agent_rng": self.online._rng.bit_generator.state,
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.online.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("online.")})
        self.target.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("target.")})
        restore_optimizer(self.optimizer, tensors)
        if self.scaler.is_enabled() and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.updates = int(meta["updates"])
        self.rng.bit_generator.state = meta["rng"]
        self.online._rng.bit_generator.state = meta["agent_rng"]


def _frame_numbers(info: dict[str, Any], n_envs: int) -> np.ndarray:
    """Each env's frame number within its game, ``int64 [n_envs]``, from ALE's info; a world
    without lives has none and gives zeros (then every ended episode is a game over)."""
    return np.array(info.get("episode_frame_number", np.zeros(n_envs)), dtype=np.int64)


class _GameTally:
    """Raw game scores of a vector env's games: a game is over when its env really reset (its
    episode frame counter went back, or the world has none), not at a life loss."""

    def __init__(self, info: dict[str, Any], n_envs: int) -> None:
        self.n_envs = n_envs
        self.prev_frame_no = _frame_numbers(info, n_envs)
        self.returns = np.zeros(n_envs)

    def step(self, reward: np.ndarray, ended: np.ndarray, info: dict[str, Any]) -> list[float]:
        """Add one step's raw rewards; the scores of the games that ended at it."""
        self.returns += reward
        frame_no = _frame_numbers(info, self.n_envs)
        over = np.flatnonzero(ended & (frame_no <= self.prev_frame_no))
        scores = [float(self.returns[i]) for i in over]
        self.returns[over] = 0.0
        self.prev_frame_no = frame_no
        return scores


def _final_obs(info: dict[str, Any], ended: np.ndarray, like: np.ndarray) -> np.ndarray | None:
    """The ended episodes' last states as ``uint8 [N, 4, 84, 84]`` (other rows: zeros), from
    ``info["final_obs"]`` of either backend (ale: an array; gym: an object array with None)."""
    if not ended.any():
        return None
    if "final_obs" not in info:
        raise ValueError("the vector env reported ended episodes without info['final_obs']")
    raw = info["final_obs"]
    if isinstance(raw, np.ndarray) and raw.dtype != object:
        return raw
    out = np.zeros_like(like)
    for i in np.flatnonzero(ended):
        out[i] = raw[i]
    return out


METRIC_COLUMNS = ("frames", "steps", "updates", "eval_mean", "eval_hns", "eval_episodes",
                  "train_return_recent", "train_games", "loss_recent", "elapsed_s")


def learning_curve(out_dir: str | Path, as_pandas: bool = False) -> Any:
    """``out_dir/metrics.csv`` as ``{column: list of floats}`` (or a pandas DataFrame)."""
    return read_curve(out_dir, as_pandas)


def train(
    game: str,
    *,
    encoder: str | None = None,
    preset: str = "fastrainbow",
    total_frames: int,
    seed: int = 0,
    runtime: Runtime | None = None,
    out_dir: str | Path,
    n_envs: int | None = None,
    protocol: str | None = None,
    eval_every_frames: int = 250_000,
    eval_episodes: int = 10,
    checkpoint_every_frames: int = 500_000,
    save_replay: bool = False,
    progress: bool = True,
    resume: bool = True,
    env_backend: str = "auto",
    eval_max_steps: int = 27_000,
    **overrides: Any,
) -> Path:
    """Train a Rainbow agent on ``game``; returns ``out_dir/agent.safetensors``.

    ``encoder`` defaults to the preset's (IMPALA for fastrainbow, Nature for der), ``protocol`` to
    :func:`xrlkit.envs.default_protocol` of the game.
    ``overrides`` replace :class:`RainbowConfig` fields of the preset. ``eval_every_frames
    <= 0`` evaluates only at the end; ``eval_episodes = 0`` never. ``env_backend`` is passed to
    :func:`xrlkit.envs.make_vector_env` (``"auto"`` picks the one that reproduces the protocol).
    With ``resume=True`` a ``resume.safetensors`` in ``out_dir`` is continued from its step; a
    run with another game / preset / encoder / protocol / seed / config raises ``ValueError``.
    With ``save_replay=True`` the resume is exact: the replay is restored, and the envs are
    brought back to where they were by replaying the run's recorded actions from its seed
    (env steps only, no network: ~2k steps/s on a 2-core CPU), so a killed and resumed run
    learns exactly what an uninterrupted one does. Without it the envs start new episodes.
    Evaluations use ``seed + 10_000`` every time, so the points of a learning curve compare.
    Learning starts once the replay holds ``learning_starts_frames / 4`` transitions (also
    after a resume without a saved replay, which refills it first).
    """
    game = resolve_game(game)
    proto = get_protocol(protocol or default_protocol(game, "rainbow"))
    cfg = make_config(preset, n_envs=n_envs, **overrides)
    encoder = encoder or cfg.default_encoder
    choose("encoder", encoder, ENCODERS)
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    rt = runtime or resolve_runtime()
    dev = rt.device
    out = check_out_dir(out_dir)
    resume_path, replay_path = out / "resume.safetensors", out / "replay.safetensors"
    agent_path = out / "agent.safetensors"
    log = CsvLog(curve_path(out), METRIC_COLUMNS)
    run = {"game": game, "preset": preset, "encoder": encoder, "protocol": proto.name, "seed": seed,
           "rainbow_config": asdict(cfg)}
    resuming = resume and resume_path.is_file()
    if resume and not resuming and agent_path.is_file():
        check_same_run(agent_path, {k: run[k] for k in ("game", "preset", "encoder", "protocol")})
    if resuming:
        check_same_run(resume_path, run)

    torch.manual_seed(seed)
    meanings = action_meanings(game)
    learner = RainbowLearner(len(meanings), cfg, encoder, rt, meanings, seed)
    skip = proto.frame_skip
    buffer = PrioritizedReplay(cfg.buffer_size, cfg.n_envs, n_step=cfg.n_step, gamma=cfg.gamma,
                               alpha=cfg.per_alpha, eps=cfg.per_eps, seed=seed)
    counters = {"env_steps": 0, "next_sync": cfg.target_update_frames, "next_eval": eval_every_frames,
                "next_ckpt": checkpoint_every_frames, "elapsed_s": 0.0}
    recent: deque[float] = deque(maxlen=100)
    losses: deque[float] = deque(maxlen=100)
    resumed_from: list[int] = []
    actions_taken: list[np.ndarray] = []  # uint8 [n_envs] per vector step, for an exact resume
    exact = False
    if resuming:
        tensors, meta = load_tensors(resume_path)
        learner.load_state(tensors, meta["learner"])
        counters = meta["counters"]
        recent.extend(meta["recent_returns"])
        resumed_from = meta["resumed_from"] + [counters["env_steps"]]
        torch.set_rng_state(tensors["rng.torch"])
        if dev.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], dev)
        losses.extend(meta.get("recent_losses", []))
        if replay_path.is_file() and read_meta(replay_path).get("env_steps") == counters["env_steps"]:
            arrays, rmeta = load_tensors(replay_path)
            buffer.load_state({k: v.numpy() for k, v in arrays.items()}, rmeta["replay"])
            exact = "actions" in tensors
            if exact:
                actions_taken = list(tensors["actions"].numpy())
            else:  # the envs start new episodes, which must not be chained to the old ones
                buffer.discard_pending()
        elif replay_path.is_file():
            warnings.warn(f"{replay_path} does not match the resume step; resuming with an empty replay")
        buffer.rng.bit_generator.state = meta["replay_rng"]
        log.trim(counters["env_steps"] * skip)
    else:
        log.path.unlink(missing_ok=True)

    def frames() -> int:
        return counters["env_steps"] * skip

    def save_resume() -> None:
        """Write ``resume.safetensors``, with the training time up to now counted in ``elapsed_s``."""
        nonlocal t0
        counters["elapsed_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        tensors, lmeta = learner.state()
        tensors["rng.torch"] = torch.get_rng_state()
        if dev.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
        if save_replay:
            arrays, rmeta = buffer.state()
            atomic_save(replay_path, {k: torch.from_numpy(v) for k, v in arrays.items()},
                         {"env_steps": counters["env_steps"], "replay": rmeta})
            tensors["actions"] = torch.from_numpy(
                np.stack(actions_taken) if actions_taken else np.zeros((0, cfg.n_envs), np.uint8))
        atomic_save(resume_path, tensors, {
            **run, "learner": lmeta, "counters": counters, "recent_returns": list(recent),
            "recent_losses": list(losses), "resumed_from": resumed_from,
            "replay_rng": buffer.rng.bit_generator.state,
        })

    last_eval: dict[str, float] = {}

    def run_eval() -> None:
        learner.online.eval()
        with rt.phase("rollout"), rt.autocast():
            res = evaluate(learner.online, game, eval_episodes, protocol=proto, seed=seed + 10_000,
                           n_envs=min(eval_episodes, 8), max_steps=eval_max_steps)
        learner.online.train()
        last_eval.update(mean=res.mean, hns=res.hns)
        log.append({
            "frames": frames(), "steps": counters["env_steps"], "updates": learner.updates,
            "eval_mean": res.mean, "eval_hns": res.hns, "eval_episodes": len(res.returns),
            "train_return_recent": float(np.mean(recent)) if recent else "",
            "train_games": len(recent), "loss_recent": float(np.mean(losses)) if losses else "",
            "elapsed_s": round(counters["elapsed_s"] + time.perf_counter() - t0, 1),
        })

    env_proto = dataclasses.replace(proto, clip_rewards=False)  # clip here, keep raw scores
    env_seed = seed if exact else seed + counters["env_steps"]
    env = make_vector_env(game, cfg.n_envs, env_proto, train=True, seed=env_seed,
                          backend=env_backend, threads=rt.env_threads)
    obs, info = env.reset(seed=env_seed)
    games = _GameTally(info, cfg.n_envs)
    if exact:  # replay the recorded actions: the envs' emulators and RNGs end where they were
        for actions in tqdm(actions_taken, desc="replaying the run's actions", unit="step",
                            disable=not progress, dynamic_ncols=True):
            obs, reward, terminated, truncated, info = env.step(actions.astype(np.int64))
            games.step(reward, terminated | truncated, info)
    # (a full ring always holds a few unsampleable transitions, hence the cap at half of it)
    learn_start = max(1, min(cfg.learning_starts_frames // skip, buffer.capacity // 2))
    print(rt.describe(), file=sys.stderr)
    print(expected_duration("rainbow", encoder, max(0, total_frames // skip - counters["env_steps"]), rt,
                            atari=is_atari(game)), file=sys.stderr)
    t0 = time.perf_counter()
    bar = tqdm(total=total_frames // skip, initial=counters["env_steps"], unit="step",
               desc=f"rainbow {game}", disable=not progress, dynamic_ncols=True)
    try:
        with StopFlag() as stop:
            while frames() < total_frames and not stop:
                f = frames()
                epsilon = cfg.eps_final + (cfg.eps_start - cfg.eps_final) * max(0.0, 1 - f / cfg.eps_decay_frames)
                with rt.phase("rollout"):
                    actions = learner.act(obs, epsilon)
                next_obs, reward, terminated, truncated, info = env.step(actions)
                if save_replay:
                    actions_taken.append(np.asarray(actions, dtype=np.uint8))
                ended = terminated | truncated
                learning_reward = proto.learning_reward(reward)
                buffer.add(obs, actions, learning_reward, terminated, truncated, _final_obs(info, ended, obs))
                recent.extend(games.step(reward, ended, info))
                obs = next_obs
                counters["env_steps"] += cfg.n_envs
                bar.update(cfg.n_envs)

                if len(buffer) >= learn_start:
                    beta = cfg.per_beta0 + (cfg.per_beta_final - cfg.per_beta0) * min(1.0, frames() / total_frames)
                    with rt.phase("update"):
                        for _ in range(cfg.updates_per_step):
                            batch = buffer.sample(cfg.batch_size, beta)
                            loss, priorities = learner.update(batch)
                            buffer.update_priorities(batch.indices, priorities)
                            losses.append(loss)
                while frames() >= counters["next_sync"]:
                    learner.sync_target()
                    counters["next_sync"] += cfg.target_update_frames
                if progress and (counters["env_steps"] // cfg.n_envs) % 50 == 0:
                    bar.set_postfix(ret=f"{np.mean(recent):.1f}" if recent else "-",
                                    loss=f"{np.mean(losses):.3f}" if losses else "-", eps=f"{epsilon:.2f}")
                if eval_every_frames > 0 and eval_episodes > 0 and frames() >= counters["next_eval"]:
                    run_eval()
                    while counters["next_eval"] <= frames():
                        counters["next_eval"] += eval_every_frames
                if checkpoint_every_frames > 0 and frames() >= counters["next_ckpt"]:
                    save_resume()
                    while counters["next_ckpt"] <= frames():
                        counters["next_ckpt"] += checkpoint_every_frames
            if stop:
                save_resume()
                raise TrainingInterrupted(
                    f"stopped at {frames():,} frames; kept {resume_path} and {log.path}; "
                    "run the same command again to resume")
    finally:
        bar.close()
        env.close()

    if eval_episodes > 0 and not (log.path.is_file() and learning_curve(out)["frames"][-1:] == [frames()]):
        run_eval()
    save_resume()
    learner.online.eval()
    return save_agent(
        learner.online, agent_path, game=game, algo="rainbow", preset=preset, encoder=encoder, protocol=proto.name,
        frames=frames(), steps=counters["env_steps"], updates=learner.updates, seed=seed, runtime=rt.record(),
        command=command_line(), rainbow_config=asdict(cfg), resumed_from=resumed_from,
        eval_mean=last_eval.get("mean"), eval_hns=last_eval.get("hns"),
    )


__all__ = ["PRESETS", "RainbowConfig", "RainbowLearner", "learning_curve", "make_config", "train"]
