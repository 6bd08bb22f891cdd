"""PPO for Atari (and the other worlds) as one flat, readable loop (after CleanRL's ``ppo_atari.py``), tuned to the CPU.

The loop, phase by phase: storage set-up -> rollout ("action logic", "execute the game") ->
bootstrap + GAE -> flatten the batch -> optimise (clipped policy loss, value loss, entropy) ->
record (approx-KL, clip fraction, explained variance, agent steps/s) -> evaluate / checkpoint.

Envs are ale-py's C++ ``AtariVectorEnv`` under a project protocol (:mod:`xrlkit.envs`; worlds
other than Atari, e.g. ViZDoom, step in-process copies with the same ``send``/``recv``): the
loop itself applies the training signals, so the envs always report raw game scores:

* a lost life ends the episode *for bootstrapping* when the protocol says so (``ifepaper``:
  yes; ``machado``: no) while the game goes on, the DQN convention;
* rewards are sign-clipped for learning when the protocol says so; logged returns are the
  unclipped scores of whole games.

Hyperparameters (:data:`PRESETS`): ``atari`` is RL-Zoo's Atari PPO (8 envs x 128 steps, 4
epochs of minibatch 256, lr 2.5e-4 and clip 0.1 both annealed linearly to 0, gamma 0.99, GAE
0.95, entropy 0.01, value 0.5, grad-norm 0.5) with CleanRL's Adam eps 1e-5. The annealing runs
over the ``total_frames`` of the current call, so a run resumed with a larger budget stretches
its schedule from where it is.

A run may start from a trained policy's weights (``init_from``, ``xrlkit train --init-from``):
to carry on a shipped expert whose curve was still rising when its budget ended, on a later day or
another machine, without the run folder it was made in. Only the weights carry over; Adam's moments,
the learning-rate and clip schedules and the frame counter start afresh (the first updates may
shake the policy a little while Adam's moments warm up). The agent records where it started
(``init_from``: file, SHA-256, frames) and counts its ``frames`` as the parent's plus this run's.
A distilled student (``xrlkit distill``) can start a run too, to be fine-tuned by reward: its value
head was never trained, so advantages computed from it are noise that would undo what distillation
taught. ``critic_warmup_iterations`` first trains the value head alone (a linear read-out of the
frozen features) on the student's own rollouts; those iterations count in the frame budget and the
schedules like any other. Reward alone may still pull a student away from what it imitated before
its value estimates are good (a Breakout student fell from ~180 to ~75 points in 600k frames), so a
``teacher`` can stay in the loss: kickstarting (Schmitt et al., 2018, arXiv 1803.03835) adds
``kickstart_coef`` x the cross-entropy from the teacher's action distribution to the policy's, on
the minibatch states, to the PPO loss.

Compute choices (precision, channels_last, threads per phase, allocator) come from a
:class:`xrlkit.runtime.Runtime`.

Files in ``out_dir``: ``metrics.csv`` (one row per iteration, evaluation columns filled where an
evaluation ran; :func:`xrlkit.runlog.read_curve`), ``learning_curve.png``, ``resume.safetensors``
(agent, Adam state, counters, RNG states; rewritten every ``checkpoint_every_frames`` and on
Ctrl-C / SIGTERM) and ``agent.safetensors`` (the final agent, loadable by
:func:`xrlkit.agents.load.load_any_agent`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xrlkit.agents.base import ACT_MODES, batched_logits
from xrlkit.agents.distill import distillation_loss
from xrlkit.agents.encoders import ENCODERS
from xrlkit.agents.policy import PolicyAgent, PolicyConfig, warm_start
from xrlkit.checkpoint import (agent_identity, command_line, load_tensors, optimizer_tensors, restore_optimizer,
                               save_agent)
from xrlkit.envs import action_meanings, default_protocol, get_protocol, make_vector_env
from xrlkit.evaluation import evaluate
from xrlkit.games import is_atari, resolve_game
from xrlkit.presets import config_from_preset
from xrlkit.registry import choose
from xrlkit.runlog import (CsvLog, StopFlag, TrainingInterrupted, atomic_save, check_out_dir, check_same_run,
                           curve_path)
from xrlkit.runtime import Runtime, expected_duration, resolve_runtime
from xrlkit.shapes import OBS_SHAPE


@dataclass
class PPOConfig:
    """Hyperparameters of one PPO run."""

    n_envs: int = 8
    """parallel envs"""
    n_steps: int = 128
    """steps per env per rollout"""
    n_epochs: int = 4
    """passes over each rollout"""
    batch_size: int = 256
    """minibatch size"""
    lr: float = 2.5e-4
    """Adam learning rate (start value when annealed)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the run"""
    adam_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.1
    """policy ratio clip (start value when annealed)"""
    anneal_clip: bool = True
    """anneal the clip coefficient linearly to 0, as RL-Zoo's ``lin_0.1``"""
    clip_vloss: bool = False
    """clip the value loss as CleanRL does (RL-Zoo / SB3 do not)"""
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    critic_warmup_iterations: int = 0
    """first iterations that train the value head alone (the rest frozen, no policy or entropy loss):
    for a run started from a distilled student, whose value head was never trained"""
    kickstart_coef: float = 0.0
    """weight of the cross-entropy from a teacher's action distribution to the policy's on each
    minibatch (kickstarting; needs ``teacher``)"""

    def __post_init__(self) -> None:
        checks = [
            (self.n_envs >= 1 and self.n_steps >= 1 and self.n_epochs >= 1, "n_envs, n_steps, n_epochs must be >= 1"),
            (1 <= self.batch_size <= self.n_envs * self.n_steps, "batch_size must be in [1, n_envs * n_steps]"),
            (self.lr > 0 and self.adam_eps > 0, "lr and adam_eps must be > 0"),
            (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1, "gamma and gae_lambda must be in [0, 1]"),
            (self.clip_coef > 0 and self.max_grad_norm > 0, "clip_coef and max_grad_norm must be > 0"),
            (self.critic_warmup_iterations >= 0, "critic_warmup_iterations must be >= 0"),
            (self.kickstart_coef >= 0, "kickstart_coef must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad PPO config: {message}")


PRESETS: dict[str, dict[str, Any]] = {
    "atari": {},
    # CleanRL's ppo_atari.py: the clip stays 0.1 and the value loss is clipped. Annealing the clip
    # to 0 (RL-Zoo) shrinks the policy-gradient step while the (unclipped) entropy bonus keeps its
    # size, so over a short budget entropy climbs back late in the run (seen on Pong at 10M frames).
    "cleanrl": {"anneal_clip": False, "clip_vloss": True},
}

METRIC_COLUMNS = ("frames", "steps", "iteration", "train_return_recent", "train_games", "lr", "clip",
                  "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance",
                  "steps_per_s", "rollout_s", "update_s", "eval_mean", "eval_hns", "eval_episodes", "elapsed_s",
                  "teacher_ce")


def make_config(preset: str = "atari", **overrides: Any) -> PPOConfig:
    """The config of ``preset`` with ``overrides`` (``None`` values are ignored)."""
    return config_from_preset(PPOConfig, PRESETS, preset, overrides, "PPO")


def plot_curve(out_dir: str | Path) -> Path:
    """Draw ``out_dir/learning_curve.png`` from its ``metrics.csv``
    (:func:`xrlkit.plotting.training_runs`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xrlkit import plotting
    from xrlkit.checkpoint import read_meta

    out = Path(out_dir)
    meta = read_meta(out / "resume.safetensors")
    start = meta.get("init_from")
    fig = plotting.training_runs({f"PPO {meta['encoder']}": out},
                                 title=f"PPO on {meta['game']} ({meta['encoder']} encoder, seed {meta['seed']})"
                                 + (f"\nstarted from {start['file']}\n({start['frames']:,} frames before this run)" if start else ""))
    path = out / "learning_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(
    game: str,
    *,
    total_frames: int,
    out_dir: str | Path,
    encoder: str = "nature",
    preset: str = "atari",
    seed: int = 0,
    protocol: str | None = None,
    runtime: Runtime | None = None,
    eval_every_frames: int = 1_000_000,
    eval_episodes: int = 10,
    eval_max_steps: int = 27_000,
    eval_act_mode: str = "sample",
    checkpoint_every_frames: int = 200_000,
    resume: bool = True,
    progress: bool = True,
    init_from: str | Path | None = None,
    teacher: str | Path | None = None,
    **overrides: Any,
) -> Path:
    """Train a PPO agent on ``game``; returns ``out_dir/agent.safetensors``.

    ``total_frames`` counts emulator frames (4 per agent step); ``protocol`` defaults to
    :func:`xrlkit.envs.default_protocol` of the game. ``overrides`` replace
    :class:`PPOConfig` fields of ``preset``. Evaluations play ``eval_episodes`` full games on
    seeds ``seed + 10_000 ...`` (never the training seeds) with actions drawn as
    ``eval_act_mode`` says, every ``eval_every_frames`` (0: only at the end). With ``resume``, a
    ``resume.safetensors`` in ``out_dir`` is continued (agent, optimizer, counters and RNG; the
    envs start new games); one of another game / encoder / protocol / seed / config raises
    ``ValueError`` before anything is written. ``resume=False`` starts afresh and replaces the
    folder's run files. Ctrl-C or SIGTERM saves a checkpoint and raises
    :class:`~xrlkit.runlog.TrainingInterrupted`. ``init_from``: start from the weights of that
    agent file (see :func:`warm_start`); a resume must name the same file. ``teacher``: an agent
    file of the same game whose action distribution the policy is kept near with weight
    ``kickstart_coef`` (both or neither must be given); it too must stay the same on a resume.
    """
    # ---- check everything before any work ----
    game = resolve_game(game)
    proto = get_protocol(protocol or default_protocol(game, "ppo"))
    if proto.name == "rlzoo":
        raise ValueError("the xrlkit PPO trainer runs Atari on ale-py's vector env, which cannot reproduce the rlzoo "
                         "protocol (FIRE on reset); use --protocol ifepaper or machado, or --algo sb3-ppo")
    choose("encoder", encoder, ENCODERS)
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    choose("eval_act_mode", eval_act_mode, ACT_MODES)
    cfg = make_config(preset, **overrides)
    parent, parent_id = warm_start(init_from, game, encoder, proto.name) if init_from is not None else (None, None)
    if (teacher is None) != (cfg.kickstart_coef == 0):
        raise ValueError("kickstarting needs both a teacher (--teacher) and kickstart_coef > 0 (--set kickstart_coef=...)")
    rt = runtime or resolve_runtime()
    teacher_agent, teacher_id = None, None
    if teacher is not None:
        from xrlkit.agents.load import load_any_agent

        teacher_agent = load_any_agent(teacher, game=game, device=rt.device)  # checks the game and action count
        teacher_id = agent_identity(teacher_agent, teacher)
    out = check_out_dir(out_dir)
    resume_path, agent_path = out / "resume.safetensors", out / "agent.safetensors"
    log = CsvLog(curve_path(out), METRIC_COLUMNS)
    run = {"algo": "ppo", "game": game, "encoder": encoder, "protocol": proto.name, "seed": seed,
           "preset": preset, "ppo_config": asdict(cfg), "init_from": parent_id, "teacher": teacher_id}
    resuming = resume and resume_path.is_file()
    if resuming:
        check_same_run(resume_path, run, hint="--no-resume")
    elif resume and agent_path.is_file():
        check_same_run(agent_path, {k: run[k] for k in ("algo", "game", "encoder", "protocol")}, hint="--no-resume")

    # ---- storage set-up ----
    skip = proto.frame_skip
    total_steps = total_frames // skip
    batch = cfg.n_envs * cfg.n_steps
    n_iterations = max(1, math.ceil(total_steps / batch))
    meanings = action_meanings(game)
    agent = PolicyAgent(len(meanings), parent.config if parent else PolicyConfig(encoder=encoder), meanings, seed)
    if parent is not None:
        agent.load_state_dict(parent.state_dict())
    rt.prepare(agent).train()
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    scaler = rt.grad_scaler()
    counters: dict[str, Any] = {"iteration": 0, "steps": 0, "elapsed_s": 0.0, "next_eval": eval_every_frames,
                                "next_ckpt": checkpoint_every_frames, "resumed_from": []}
    recent: deque[float] = deque(maxlen=100)
    if resuming:
        tensors, meta = load_tensors(resume_path)
        agent.load_state_dict({k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")})
        rt.prepare(agent)
        restore_optimizer(optimizer, {k: v.to(rt.device) for k, v in tensors.items()})
        counters = meta["counters"]
        counters["resumed_from"] = counters["resumed_from"] + [counters["steps"]]
        recent.extend(meta["recent_returns"])
        torch.set_rng_state(tensors["rng.torch"])
        log.trim(counters["steps"] * skip)
        if counters["steps"] >= total_steps and agent_path.is_file():
            return agent_path
    else:
        for stale in (log.path, resume_path, agent_path, out / "learning_curve.png"):
            stale.unlink(missing_ok=True)

    obs_buf = torch.zeros((cfg.n_steps, cfg.n_envs, *OBS_SHAPE), dtype=torch.uint8)
    actions_buf = torch.zeros((cfg.n_steps, cfg.n_envs), dtype=torch.long)
    logprobs_buf = torch.zeros((cfg.n_steps, cfg.n_envs))
    rewards_buf = torch.zeros((cfg.n_steps, cfg.n_envs))
    dones_buf = torch.zeros((cfg.n_steps, cfg.n_envs))
    values_buf = torch.zeros((cfg.n_steps, cfg.n_envs))

    # Envs in groups: with ``rt.overlap`` two halves, so one half steps (in its C++ threads) while
    # the policy picks the other half's actions; otherwise one group, stepped synchronously.
    env_proto = dataclasses.replace(proto, episodic_life=False, clip_rewards=False)  # the loop applies both
    env_seed = seed + counters["steps"]
    n_groups = 2 if rt.overlap and cfg.n_envs >= 2 else 1
    bounds = np.linspace(0, cfg.n_envs, n_groups + 1).astype(int)
    groups = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    envs = [make_vector_env(game, g.stop - g.start, env_proto, train=True, seed=env_seed + g.start,
                            threads=max(1, rt.env_threads // n_groups)) for g in groups]
    next_obs = torch.zeros((cfg.n_envs, *OBS_SHAPE), dtype=torch.uint8)
    lives = np.zeros(cfg.n_envs, dtype=np.int64)
    for env, g in zip(envs, groups):
        obs_np, info = env.reset(seed=env_seed + g.start)
        next_obs[g] = torch.from_numpy(obs_np)
        lives[g] = info.get("lives", 0)
    next_done = torch.zeros(cfg.n_envs)
    game_return = np.zeros(cfg.n_envs)

    def receive(g: slice, env: Any, step: int) -> None:
        """Execute the game: take the results of the actions a group was sent at ``step``."""
        obs_np, reward, terminated, truncated, info = env.recv()
        ended = terminated | truncated
        new_lives = np.asarray(info.get("lives", lives[g]))  # worlds other than Atari have no lives
        life_lost = (new_lives < lives[g]) & ~ended if proto.episodic_life else np.zeros_like(ended)
        lives[g] = new_lives
        game_return[g] += reward
        for i in np.flatnonzero(ended) + g.start:
            recent.append(float(game_return[i]))
            game_return[i] = 0.0
        rewards_buf[step, g] = torch.from_numpy(proto.learning_reward(reward)).float()
        next_obs[g] = torch.from_numpy(obs_np)
        next_done[g] = torch.from_numpy((ended | life_lost).astype(np.float32))

    def save_checkpoint() -> None:
        tensors = {f"agent.{k}": v for k, v in agent.state_dict().items()}
        tensors.update(optimizer_tensors(optimizer))
        tensors["rng.torch"] = torch.get_rng_state()
        atomic_save(resume_path, tensors, {**run, "kind": "ppo-resume", "counters": counters,
                                           "recent_returns": list(recent)})

    def run_eval() -> dict[str, float]:
        agent.eval()
        agent.act_mode = eval_act_mode
        with rt.phase("rollout"), rt.autocast():
            res = evaluate(agent, game, eval_episodes, protocol=proto, seed=seed + 10_000,
                           n_envs=min(eval_episodes, 8), max_steps=eval_max_steps)
        agent.train()
        return {"eval_mean": res.mean, "eval_hns": res.hns, "eval_episodes": len(res.returns)}

    print(rt.describe(), file=sys.stderr)
    if parent_id and not parent_id["value_trained"] and cfg.critic_warmup_iterations == 0:
        print(f"note: {parent_id['file']} has an untrained value head ({parent_id['origin']}); "
              "--set critic_warmup_iterations=N trains it alone first", file=sys.stderr)
    print(expected_duration("ppo", encoder, max(0, n_iterations * batch - counters["steps"]), rt, atari=is_atari(game)),
          file=sys.stderr)
    bar = tqdm(total=n_iterations * batch, initial=min(counters["steps"], n_iterations * batch), unit="step",
               desc=f"ppo {encoder} {game}", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        with StopFlag() as stop:
            while counters["iteration"] < n_iterations and not stop:
                t_iter = time.perf_counter()
                frac = 1.0 - counters["iteration"] / n_iterations
                lr = cfg.lr * frac if cfg.anneal_lr else cfg.lr
                clip = cfg.clip_coef * frac if cfg.anneal_clip else cfg.clip_coef
                for group in optimizer.param_groups:
                    group["lr"] = lr

                # ---- rollout ----
                with rt.phase("rollout"), torch.no_grad():
                    for step in range(cfg.n_steps):
                        for g, env in zip(groups, envs):
                            if step > 0:
                                receive(g, env, step - 1)
                            obs_buf[step, g] = next_obs[g]
                            dones_buf[step, g] = next_done[g]
                            # action logic
                            with rt.autocast():
                                logits, value = agent.policy_value(rt.input(next_obs[g]))
                            dist = torch.distributions.Categorical(logits=logits.float())
                            action = dist.sample()
                            actions_buf[step, g] = action.cpu()
                            logprobs_buf[step, g] = dist.log_prob(action).cpu()
                            values_buf[step, g] = value.float().cpu()
                            # execute the game: the group steps while the next group's actions are chosen
                            env.send(action.cpu().numpy())
                    for g, env in zip(groups, envs):
                        receive(g, env, cfg.n_steps - 1)
                    counters["steps"] += batch
                    bar.update(batch)

                    # ---- bootstrap + GAE ----
                    with rt.autocast():
                        next_value = agent.policy_value(rt.input(next_obs))[1].float().cpu()
                    advantages = torch.zeros_like(rewards_buf)
                    last_gae = torch.zeros(cfg.n_envs)
                    for t in reversed(range(cfg.n_steps)):
                        if t == cfg.n_steps - 1:
                            not_done, next_values = 1.0 - next_done, next_value
                        else:
                            not_done, next_values = 1.0 - dones_buf[t + 1], values_buf[t + 1]
                        delta = rewards_buf[t] + cfg.gamma * next_values * not_done - values_buf[t]
                        last_gae = delta + cfg.gamma * cfg.gae_lambda * not_done * last_gae
                        advantages[t] = last_gae
                    returns = advantages + values_buf

                t_update = time.perf_counter()

                # ---- flatten the batch ----
                b_obs = obs_buf.reshape(batch, *OBS_SHAPE)
                b_actions, b_logprobs = actions_buf.reshape(-1), logprobs_buf.reshape(-1)
                b_adv, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values_buf.reshape(-1)

                # ---- optimise (the value head alone while it warms up) ----
                warming = counters["iteration"] < cfg.critic_warmup_iterations
                for name, param in agent.named_parameters():
                    param.requires_grad_(not warming or name.startswith("critic."))
                clipfracs, approx_kl, teacher_ces = [], torch.zeros(()), []
                with rt.phase("update"):
                    # kickstarting: the frozen teacher's logits on the rollout, once for all epochs
                    b_teacher_logits = None
                    if teacher_agent is not None and not warming:
                        with rt.autocast():
                            b_teacher_logits = batched_logits(teacher_agent, b_obs.to(rt.device), cfg.batch_size)
                    for _ in range(cfg.n_epochs):
                        order = torch.randperm(batch)
                        for start in range(0, batch, cfg.batch_size):
                            mb = order[start:start + cfg.batch_size]
                            with rt.autocast():
                                logits, value = agent.policy_value(rt.input(b_obs[mb]))
                            logits, value = logits.float(), value.float()
                            dist = torch.distributions.Categorical(logits=logits)
                            new_logprob = dist.log_prob(b_actions[mb].to(rt.device))
                            entropy = dist.entropy().mean()
                            log_ratio = new_logprob - b_logprobs[mb].to(rt.device)
                            ratio = log_ratio.exp()
                            with torch.no_grad():
                                approx_kl = ((ratio - 1) - log_ratio).mean()
                                clipfracs.append(((ratio - 1.0).abs() > clip).float().mean().item())
                            adv = b_adv[mb].to(rt.device)
                            if cfg.norm_adv:
                                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                            # policy loss
                            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
                            # value loss
                            target = b_returns[mb].to(rt.device)
                            if cfg.clip_vloss:
                                old_v = b_values[mb].to(rt.device)
                                v_clipped = old_v + (value - old_v).clamp(-clip, clip)
                                v_loss = 0.5 * torch.max((value - target) ** 2, (v_clipped - target) ** 2).mean()
                            else:
                                v_loss = 0.5 * F.mse_loss(value, target)
                            loss = cfg.vf_coef * v_loss if warming else pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                            # kickstarting: stay near the teacher's action distribution
                            if b_teacher_logits is not None:
                                teacher_ce = distillation_loss(logits, b_teacher_logits[mb.to(rt.device)])
                                loss = loss + cfg.kickstart_coef * teacher_ce
                                teacher_ces.append(teacher_ce.item())

                            optimizer.zero_grad(set_to_none=True)
                            scaler.scale(loss).backward()
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                            scaler.step(optimizer)
                            scaler.update()

                # ---- record ----
                counters["iteration"] += 1
                now = time.perf_counter()
                counters["elapsed_s"] += now - t_start
                t_start = now
                var_y = b_returns.var()
                row: dict[str, Any] = {
                    "frames": counters["steps"] * skip, "steps": counters["steps"], "iteration": counters["iteration"],
                    "train_return_recent": float(np.mean(recent)) if recent else "", "train_games": len(recent),
                    "lr": lr, "clip": clip, "policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
                    "entropy": entropy.item(), "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
                    "explained_variance": float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y),
                    "steps_per_s": round(batch / (now - t_iter), 1), "rollout_s": round(t_update - t_iter, 3),
                    "update_s": round(now - t_update, 3), "elapsed_s": round(counters["elapsed_s"], 1),
                    "teacher_ce": float(np.mean(teacher_ces)) if teacher_ces else "",
                }
                frames = counters["steps"] * skip
                last = counters["iteration"] == n_iterations
                if eval_episodes > 0 and (last or (eval_every_frames > 0 and frames >= counters["next_eval"])):
                    row.update(run_eval())
                    while eval_every_frames > 0 and counters["next_eval"] <= frames:
                        counters["next_eval"] += eval_every_frames
                    t_start = time.perf_counter()
                log.append(row)
                bar.set_postfix(sps=row["steps_per_s"], ret=f"{np.mean(recent):.1f}" if recent else "-")
                if last or (checkpoint_every_frames > 0 and frames >= counters["next_ckpt"]):
                    save_checkpoint()
                    plot_curve(out)
                    while checkpoint_every_frames > 0 and counters["next_ckpt"] <= frames:
                        counters["next_ckpt"] += checkpoint_every_frames
            if stop:
                save_checkpoint()
                raise TrainingInterrupted(
                    f"stopped at {counters['steps'] * skip:,} frames; kept {resume_path} and {log.path}; "
                    "run the same command again to resume")
    finally:
        bar.close()
        for env in envs:
            env.close()

    # ---- the trained agent, with its provenance ----
    agent.eval()
    agent.act_mode = eval_act_mode
    final_eval = next((r for r in reversed(list(log.rows())) if r.get("eval_mean")), {})
    frames = counters["steps"] * skip
    return save_agent(
        agent, agent_path, game=game, algo="ppo", encoder=encoder, protocol=proto.name, preset=preset,
        frames=frames + (parent_id["frames"] if parent_id else 0), frames_this_run=frames, init_from=parent_id,
        kickstart_teacher=teacher_id,
        steps=counters["steps"], seed=seed, ppo_config=asdict(cfg),
        runtime=rt.record(), train_seconds=round(counters["elapsed_s"], 1), resumed_from=counters["resumed_from"],
        eval_mean=float(final_eval["eval_mean"]) if final_eval else None,
        eval_seed=seed + 10_000, eval_episodes=eval_episodes, command=command_line(),
    )


__all__ = ["PPOConfig", "PRESETS", "make_config", "plot_curve", "train"]
