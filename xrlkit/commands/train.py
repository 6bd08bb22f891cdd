"""``xrlkit train``: train an agent with xrlkit's own loops (PPO, Rainbow) or Stable-Baselines3."""

from __future__ import annotations

import argparse

from xrlkit.agents.encoders import ENCODERS
from xrlkit.commands import parse_key_values
from xrlkit.runtime import ALLOCATORS, PRECISIONS

#: ppo and rainbow are xrlkit's loops; sb3-ppo and recurrentppo train through Stable-Baselines3
ALGOS = ("ppo", "rainbow", "sb3-ppo", "recurrentppo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an agent on an Atari game or another world")
    p.add_argument("--algo", choices=ALGOS, default="ppo", help="learner (default ppo: xrlkit's CPU-tuned loop)")
    p.add_argument("--game", required=True, help="Atari game (e.g. Breakout) or another world (e.g. VizdoomBasic-v1, highway-fast-v0)")
    p.add_argument("--encoder", choices=sorted(ENCODERS), default=None,
                   help="image encoder (default: nature; impala for rainbow's fastrainbow preset)")
    p.add_argument("--preset", default=None, help="hyperparameter preset (ppo: atari or cleanrl; rainbow: fastrainbow or der)")
    p.add_argument("--frames", type=int, required=True, help="training budget in frames (Atari and ViZDoom: 4 per agent step; highway-env: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (resumed when it holds a checkpoint)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the preset's)")
    p.add_argument("--protocol", default=None,
                   help="env protocol (default: doom for the ViZDoom worlds, highway for highway-env, else ifepaper for ppo and rainbow, "
                        "rlzoo for the SB3 learners)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every N frames (0: only at the end; default 1M for ppo, 250k for rainbow)")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--eval-max-steps", type=int, default=27_000, help="agent steps bounding an eval episode")
    p.add_argument("--eval-act-mode", choices=("sample", "greedy"), default="sample",
                   help="ppo: how the agent acts in evaluations and is stored (default sample, as RL-Zoo scores)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="resume checkpoint every N frames (default 200k for ppo, 500k for rainbow)")
    p.add_argument("--save-replay", action="store_true", help="rainbow: also checkpoint the replay buffer and the actions taken, so that a resumed run matches an uninterrupted one exactly")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--init-from", default=None, metavar="AGENT",
                   help="ppo: start from this agent's weights (xrlkit PPO or distilled, same game, encoder and protocol), "
                        "with a fresh optimizer and schedule; the agent records it and counts its frames too")
    p.add_argument("--teacher", default=None, metavar="AGENT",
                   help="ppo: keep the policy near this agent's action distribution (kickstarting; same game), "
                        "with weight --set kickstart_coef=...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of ppo or rainbow (JSON value), e.g. --set n_steps=64")
    g = p.add_argument_group("runtime (chosen for this machine when left out; printed at start)")
    g.add_argument("--device", default="auto", help="torch device; auto = CUDA when available")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 on a CPU with native bf16, fp32 on other CPUs, fp16 AMP on CUDA")
    g.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto", help="auto: on for CPUs")
    g.add_argument("--threads", type=int, default=None, help="torch threads of the update (default: the cores this process may use, at most OMP_NUM_THREADS)")
    g.add_argument("--env-threads", type=int, default=None, help="threads of the C++ vector env (default: as --threads)")
    g.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                   help="step half of the envs while choosing the other half's actions (auto: on with 2+ cores)")
    g.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="auto: tcmalloc when installed (re-executes the command with it preloaded)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xrlkit.runlog import claim_out_dir
    from xrlkit.runtime import reexec_with_allocator, resolve_runtime

    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    overrides = parse_key_values(args.set, "--set")
    for flag, value in (("--init-from", args.init_from), ("--teacher", args.teacher)):
        if value is not None and args.algo != "ppo":
            raise ValueError(f"{flag} applies to --algo ppo, not {args.algo}")
    claim_out_dir(args.out)
    runtime = resolve_runtime(args.device, args.precision,
                              {"auto": None, "on": True, "off": False}[args.channels_last],
                              args.threads, args.env_threads, {"auto": None, "on": True, "off": False}[args.overlap])
    if getattr(args, "from_command_line", False):
        reexec_with_allocator(args.allocator)
    common = dict(total_frames=args.frames, seed=args.seed, out_dir=args.out, eval_episodes=args.eval_episodes,
                  eval_max_steps=args.eval_max_steps, progress=not args.no_progress, resume=not args.no_resume)
    optional = {k: v for k, v in (("eval_every_frames", args.eval_every),
                                  ("checkpoint_every_frames", args.checkpoint_every)) if v is not None}
    if args.algo == "ppo":
        from xrlkit.agents.ppo import train

        path = train(args.game, encoder=args.encoder or "nature", preset=args.preset or "atari",
                     protocol=args.protocol, runtime=runtime, eval_act_mode=args.eval_act_mode,
                     n_envs=args.n_envs, init_from=args.init_from, teacher=args.teacher, **common, **optional, **overrides)
    elif args.algo == "rainbow":
        from xrlkit.agents.rainbow import train as train_rainbow

        path = train_rainbow(
            args.game, encoder=args.encoder, preset=args.preset or "fastrainbow", runtime=runtime,
            n_envs=args.n_envs, protocol=args.protocol, save_replay=args.save_replay,
            **common, **optional, **overrides,
        )
    else:
        if args.set:
            raise ValueError("--set only applies to --algo ppo or rainbow")
        from xrlkit.agents.sb3 import train_sb3

        sb3_optional = {"n_envs": args.n_envs, "protocol": args.protocol}
        path = train_sb3(
            game=args.game, algo="ppo" if args.algo == "sb3-ppo" else args.algo, encoder=args.encoder or "nature",
            total_steps=args.frames // 4, seed=args.seed, device=str(runtime.device), out_dir=args.out,
            progress=not args.no_progress, resume=not args.no_resume,
            **{k: v for k, v in sb3_optional.items() if v is not None},
        )
    print(f"saved {path}")
    return 0
