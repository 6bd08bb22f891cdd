"""``xrlkit distill``: train a student with another encoder (IFE by default) to act as a teacher."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from xrlkit.agents.distill import DistillConfig
    from xrlkit.agents.encoders import ENCODERS
    from xrlkit.runtime import ALLOCATORS

    d = DistillConfig()
    p = sub.add_parser("distill", help="distil an agent into a student with another encoder (DAgger; IFE by default)")
    p.add_argument("--teacher", required=True,
                   help="teacher agent checkpoint (.safetensors or SB3 .zip) or scripted agent (pong-tracker)")
    p.add_argument("--game", required=True)
    p.add_argument("--out", required=True, help="output directory (resumed from its last checkpoint)")
    p.add_argument("--encoder", choices=sorted(ENCODERS), default=d.encoder)
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"Linear width after the encoder (default {d.hidden})")
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"DAgger rounds (default {d.rounds})")
    p.add_argument("--states-per-round", type=int, default=d.states_per_round, help=f"default {d.states_per_round}")
    p.add_argument("--updates-per-round", type=int, default=d.updates_per_round,
                   help=f"minibatch updates per round (default {d.updates_per_round})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--heldout-states", type=int, default=d.heldout_states,
                   help=f"states on unseen seeds scoring the final agreement (default {d.heldout_states})")
    p.add_argument("--n-envs", type=int, default=d.n_envs)
    p.add_argument("--protocol", default=None, help="env protocol; default: the teacher's")
    p.add_argument("--eval-episodes", type=int, default=10, help="full games scoring the final student")
    p.add_argument("--init-from", default=None, metavar="AGENT",
                   help="start the student from this agent's weights (xrlkit PPO or distilled, same game, encoder, "
                        "protocol and --hidden), e.g. the student of the teacher being replaced")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (xrlkit.runtime)")
    p.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="auto: re-run with tcmalloc preloaded where installed (faster CPU updates)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xrlkit.agents.distill import DistillConfig, distill
    from xrlkit.agents.load import agent_protocol, load_any_agent
    from xrlkit.games import resolve_game
    from xrlkit.runlog import claim_out_dir
    from xrlkit.runtime import reexec_with_allocator, resolve_runtime
    from xrlkit.checkpoint import agent_identity

    game = resolve_game(args.game)
    claim_out_dir(args.out)
    reexec_with_allocator(args.allocator)
    rt = resolve_runtime(args.device, args.precision)
    teacher = load_any_agent(args.teacher, game=game, device=rt.device)
    cfg = DistillConfig(
        encoder=args.encoder, hidden=args.hidden, rounds=args.rounds, states_per_round=args.states_per_round,
        updates_per_round=args.updates_per_round, batch_size=args.batch_size, lr=args.lr,
        temperature=args.temperature, heldout_states=args.heldout_states, n_envs=args.n_envs, seed=args.seed,
    )
    print(rt.describe())
    final = distill(teacher, game, args.out, cfg, protocol=args.protocol or agent_protocol(teacher),
                    teacher_id=agent_identity(teacher, args.teacher), runtime=rt,
                    eval_episodes=args.eval_episodes, progress=not args.no_progress, init_from=args.init_from)
    print(f"student written to {final}")
    return 0
