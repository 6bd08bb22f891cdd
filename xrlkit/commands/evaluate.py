"""``xrlkit evaluate``: play full episodes with a trained agent; print mean score and HNS."""

from __future__ import annotations

import argparse
import json

import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score an agent checkpoint on its game (mean return, HNS)")
    p.add_argument("--agent", required=True, help="agent checkpoint (.safetensors or SB3 .zip) or scripted agent name")
    p.add_argument("--game", required=True, help="game the agent was trained on")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    p.add_argument("--protocol", default=None,
                   help="env protocol (ifepaper, machado, rlzoo); default: the one the agent was trained under")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=0.0, help="exploration while evaluating (default 0)")
    p.add_argument("--act-mode", choices=("greedy", "sample"), default=None,
                   help="argmax, or draw from the policy (PPO / A2C); default: the agent's stored mode")
    p.add_argument("--max-steps", type=int, default=27_000, help="agent steps bounding an episode")
    p.add_argument("--device", default="cpu", help="torch device for the agent")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result (returns, mean, hns) as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xrlkit.agents.load import agent_protocol, load_any_agent
    from xrlkit.evaluation import evaluate
    from xrlkit.games import resolve_game
    from xrlkit.runlog import check_out_file

    game = resolve_game(args.game)
    out = check_out_file(args.json) if args.json else None
    agent = load_any_agent(args.agent, game=game, device=args.device, act_mode=args.act_mode)
    if isinstance(agent, torch.nn.Module):
        agent.eval()
    args.protocol = args.protocol or agent_protocol(agent)
    result = evaluate(agent, game, args.episodes, protocol=args.protocol, epsilon=args.epsilon,
                      seed=args.seed, max_steps=args.max_steps)
    print(f"{game}: mean score {result.mean:.2f} over {len(result.returns)} episodes, HNS {result.hns:.3f}")
    if out is not None:
        out.write_text(json.dumps({**result.to_dict(), "agent": str(args.agent), "protocol": args.protocol,
                                   "seed": args.seed, "act_mode": getattr(agent, "act_mode", "greedy")}, indent=2))
        print(f"wrote {out}")
    return 0
