"""``xrlkit train``: train a Rainbow agent (xrlkit) or a PPO / recurrent-PPO agent (SB3)."""

from __future__ import annotations

import argparse

from xrlkit.agents.encoders import ENCODERS
from xrlkit.cli import parse_key_values

ALGOS = ("rainbow", "ppo", "recurrentppo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an agent on an Atari game")
    p.add_argument("--algo", choices=ALGOS, default="rainbow", help="learner (default rainbow)")
    p.add_argument("--game", required=True, help="Atari game, e.g. Breakout")
    p.add_argument("--encoder", choices=sorted(ENCODERS), default=None,
                   help="image encoder (default: the preset's; impala for fastrainbow, nature for der and SB3)")
    p.add_argument("--preset", default="fastrainbow", help="Rainbow preset: fastrainbow or der (rainbow only)")
    p.add_argument("--frames", type=int, required=True, help="training budget in emulator frames (4 per agent step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="torch device; auto = CUDA when available")
    p.add_argument("--out", required=True, help="output directory (resumed when it holds a checkpoint)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the preset's)")
    p.add_argument("--protocol", default=None,
                   help="env protocol (default: ifepaper for rainbow, the SB3 trainer's own for ppo)")
    p.add_argument("--eval-every", type=int, default=250_000, help="rainbow: evaluate every N frames (0: only at the end)")
    p.add_argument("--eval-episodes", type=int, default=10, help="rainbow: episodes per evaluation")
    p.add_argument("--eval-max-steps", type=int, default=27_000, help="rainbow: agent steps bounding an eval episode")
    p.add_argument("--checkpoint-every", type=int, default=500_000, help="rainbow: resume checkpoint every N frames")
    p.add_argument("--save-replay", action="store_true", help="rainbow: also checkpoint the replay buffer")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="rainbow: override a RainbowConfig field (JSON value), e.g. --set batch_size=32")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.algo == "rainbow":
        from xrlkit.agents.rainbow import train

        path = train(
            args.game, encoder=args.encoder, preset=args.preset, total_frames=args.frames, seed=args.seed,
            device=args.device, out_dir=args.out, n_envs=args.n_envs, protocol=args.protocol or "ifepaper",
            eval_every_frames=args.eval_every, eval_episodes=args.eval_episodes,
            eval_max_steps=args.eval_max_steps, checkpoint_every_frames=args.checkpoint_every,
            save_replay=args.save_replay, progress=not args.no_progress, resume=not args.no_resume,
            **parse_key_values(args.set, "--set"),
        )
    else:
        if args.set:
            raise ValueError("--set only applies to --algo rainbow")
        try:
            from xrlkit.agents.sb3 import train_sb3
        except ImportError as err:
            raise ValueError(f"--algo {args.algo} needs xrlkit.agents.sb3.train_sb3, which failed to import ({err})") from err
        optional = {"n_envs": args.n_envs, "protocol": args.protocol}
        path = train_sb3(
            game=args.game, algo=args.algo, encoder=args.encoder or "nature", total_steps=args.frames // 4,
            seed=args.seed, device=args.device, out_dir=args.out, progress=not args.no_progress,
            **{k: v for k, v in optional.items() if v is not None},
        )
    print(f"saved {path}")
    return 0
