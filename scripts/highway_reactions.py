"""Does a highway-fast-v0 agent react to the traffic? Over held-out episodes: its return, crash
rate and mean speed, how often it takes each action, and its actions when a car is close ahead in
its lane against when none is (the gap read from highway-env's road, not from the image).

    .venv/bin/python scripts/highway_reactions.py xrlkit/data/models/highway-fast-v0-ppo-nature-expert.safetensors
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from xrlkit.agents.load import load_any_agent
from xrlkit.envs import action_meanings, make_env

GAME = "highway-fast-v0"


def gap_ahead(env) -> float:
    """Metres from the ego car to the next car in its lane (inf when there is none)."""
    road, ego = env.unwrapped.road, env.unwrapped.vehicle
    front, _ = road.neighbour_vehicles(ego, ego.lane_index)
    return float(front.position[0] - ego.position[0]) if front is not None else float("inf")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("agent", help="agent checkpoint (.safetensors or SB3 .zip)")
    p.add_argument("--act-mode", choices=("greedy", "sample"), default="sample")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1_000_000, help="first episode seed (never used in training)")
    p.add_argument("--close", type=float, default=25.0, help="metres ahead that count as a car close ahead")
    args = p.parse_args()
    agent = load_any_agent(args.agent, game=GAME, act_mode=args.act_mode)
    names = action_meanings(GAME)
    actions, gaps, returns, crashes, speeds = [], [], [], [], []
    for episode in range(args.episodes):
        env = make_env(GAME, protocol="highway", seed=args.seed + episode)
        obs, _ = env.reset(seed=args.seed + episode)
        done, ret, info = False, 0.0, {}
        while not done:
            gaps.append(gap_ahead(env))
            actions.append(int(agent.act(obs[None])[0]))
            obs, reward, term, trunc, info = env.step(actions[-1])
            ret, done = ret + reward, term or trunc
            speeds.append(info["speed"])
        env.close()
        returns.append(ret)
        crashes.append(bool(info["crashed"]))
    actions, gaps = np.array(actions), np.array(gaps)
    print(f"{args.agent} ({args.act_mode}): return {np.mean(returns):.1f}, crashes in {np.mean(crashes):.0%} of "
          f"{args.episodes} episodes, {np.mean(speeds):.1f} m/s, {len(actions)} steps")
    print("  " + ", ".join(f"{n} {np.mean(actions == i):.0%}" for i, n in enumerate(names)))
    close = gaps < args.close
    for label, where in ((f"car within {args.close:g} m ahead", close), ("no car that close", ~close)):
        counts = Counter(actions[where].tolist())
        print(f"  {label} ({where.sum()} steps): "
              + ", ".join(f"{n} {counts[i] / max(where.sum(), 1):.0%}" for i, n in enumerate(names)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
