"""Stability of explanations across agent seeds: ``figures/stability.csv`` and
``figures/<Game>_stability.png`` for every game that ships a second seed of its expert.

For each explainer, the maps of the shipped expert and of its second seed (the same recipe from
another seed) on the same held-out states, each asked about the expert's preferred action, are
compared state by state (rank correlation, IoU of the top 10% pixels); beside them, as the
yardstick, two runs of the explainer (seeds 0 and 1) on the expert. VisionMask is left out: it is
trained against one agent, so there is no VisionMask of the second seed to compare.

    .venv/bin/python scripts/stability_table.py [--games Pong] [--n-states 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from xrlkit import plotting  # noqa: E402
from xrlkit.agents.load import agent_protocol, load_any_agent  # noqa: E402
from xrlkit.commands.evaluate_explainers import DEFAULT_EXPLAINERS, build_explainers  # noqa: E402
from xrlkit.defaults import shipped, shipped_models  # noqa: E402
from xrlkit.evaluation import rollout  # noqa: E402
from xrlkit.games import resolve_game  # noqa: E402
from xrlkit.runlog import check_out_dir  # noqa: E402
from xrlkit.stability import stability_table  # noqa: E402



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default=None, help="comma-separated (default: every game that ships a second seed)")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--n-states", type=int, default=64)
    p.add_argument("--every", type=int, default=30, help="keep every k-th step, so states span whole episodes")
    p.add_argument("--seed", type=int, default=2_000_000, help="evaluation seed (never used in training)")
    p.add_argument("--top", type=float, default=0.1, help="share of pixels of the top-pixel IoU")
    p.add_argument("--explainers", default=DEFAULT_EXPLAINERS)
    args = p.parse_args(argv)

    try:
        check_out_dir(args.out)
    except ValueError as err:
        p.error(str(err))
    have = sorted({m["game"] for m in shipped_models() if m["role"] == "second-seed"})
    games = [resolve_game(g) for g in args.games.split(",")] if args.games else have
    missing = [g for g in games if g not in have]
    if missing or not games:
        p.error(f"no second seed ships for {', '.join(missing) or 'any game'} (one ships for: {', '.join(have) or 'none'}); "
                "train one and ship it with scripts/ship_model.py xrlkit ... --role second-seed")
    names = args.explainers.split(",")
    tables = []
    for game in games:
        started = time.perf_counter()
        agents = [load_any_agent(shipped(game, role), game=game) for role in ("expert", "second-seed")]
        states = rollout(agents[0], game, args.n_states, seed=args.seed, every=args.every,
                         protocol=agent_protocol(agents[0])).states

        def make(name, agent, seed):
            return build_explainers([name], agent, argparse.Namespace(seed=seed, device="cpu", visionmask=None))[name]

        table = stability_table(agents, states, make, names, top=args.top).assign(game=game)
        tables.append(table)
        fig = plotting.stability_bars(table, top=args.top, title=(
            f"{game}: do two seeds of the expert get the same explanations? ({len(states)} states)"))
        fig.savefig(args.out / f"{game}_stability.png", dpi=100, bbox_inches="tight")
        print(f"{game}: {time.perf_counter() - started:.0f} s for {len(states)} states", flush=True)
    first = ["game", "explainer", "comparison", "measure", "mean", "ci_low", "ci_high", "n_states"]
    pd.concat(tables, ignore_index=True)[first].to_csv(args.out / "stability.csv", index=False)
    print(f"wrote {args.out / 'stability.csv'} and the figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
