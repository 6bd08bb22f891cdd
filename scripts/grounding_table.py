"""Do attention and saliency maps land on the game's objects? ``figures/grounding.csv`` and
``figures/<Game>_grounding.png`` for every game with object boxes (``xrlkit/data/objects``).

On the stored states (played by the expert over whole games, boxes from OCAtari; see
``scripts/object_boxes.py``), every map is scored by the pointing game, the share of its saliency
inside the object boxes and the IoU of its top-k pixels with the boxes (k: the boxes' pixel count),
with 95% bootstrap intervals and a paired comparison with a random map (chance). The boxes cover
the objects in all four stacked frames (a map may rightly point at where the ball was):

* the own attention of each shipped agent that has one (roles ``ife``, ``nature-attention``; action
  independent), named ``IFE attention (ORIGIN)`` (:func:`~xrlkit.agents.load.agent_origin`) and ``CNN-att. attention (ORIGIN)``;
* every post-hoc explainer of the shipped expert, and its VisionMask, for the expert's preferred
  action.

    .venv/bin/python scripts/grounding_table.py [--games Pong] [--n-states 150]

With ``--games`` only those games are recomputed; the other games' rows stay in the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from xrlkit import plotting  # noqa: E402
from xrlkit.agents.base import greedy_actions  # noqa: E402
from xrlkit.agents.load import agent_origin, load_any_agent  # noqa: E402
from xrlkit.commands.evaluate_explainers import DEFAULT_EXPLAINERS, build_explainers  # noqa: E402
from xrlkit.defaults import shipped, shipped_models  # noqa: E402
from xrlkit.explainers import make_explainer  # noqa: E402
from xrlkit.grounding import CROWD_LABELS, OBJECTS_DIR, grounding_table, load_object_states  # noqa: E402
from xrlkit.runlog import check_out_dir  # noqa: E402
from xrlkit.tables import rows_of_other_games  # noqa: E402

#: the shipped agents with an attention map of their own, by role, with their label in the table
ATTENTION_ROLES = {"ife": "IFE", "nature-attention": "CNN-att."}


def explain_all(explainer, states: np.ndarray, actions: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    return torch.cat([explainer.explain(states[i:i + batch_size], actions[i:i + batch_size]).cpu()
                      for i in range(0, len(states), batch_size)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default=None, help="comma-separated (default: every game with object boxes)")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--n-states", type=int, default=150, help="evenly spaced over the stored states (whole games)")
    p.add_argument("--explainers", default=DEFAULT_EXPLAINERS)
    p.add_argument("--ignore", default=",".join(CROWD_LABELS),
                   help="object categories left out (default: MsPacman's pills and Breakout's bricks, which tile "
                        "much of the screen)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out)
    except ValueError as err:
        p.error(str(err))
    games = args.games.split(",") if args.games else sorted(f.stem for f in OBJECTS_DIR.glob("*.npz"))
    tables = []
    for game in games:
        started = time.perf_counter()
        objects = load_object_states(game)
        game = objects.meta["game"]
        states, boxes, kept = objects.spread(args.n_states, ignore=args.ignore.split(","))
        maps: dict[str, torch.Tensor] = {}
        for entry in shipped_models():
            if entry["game"] == game and entry["role"] in ATTENTION_ROLES:
                agent = load_any_agent(shipped(game, entry["role"]), game=game)
                name = f"{ATTENTION_ROLES[entry['role']]} attention ({agent_origin(entry)})"
                maps[name] = explain_all(make_explainer("ife", agent), states, np.zeros(len(states), dtype=np.int64))
        expert = load_any_agent(shipped(game, "expert"), game=game)
        actions = greedy_actions(expert, states)
        names = args.explainers.split(",") + (["visionmask"] if shipped(game, "visionmask") else [])
        options = argparse.Namespace(seed=args.seed, device="cpu", visionmask=shipped(game, "visionmask"))
        for name, explainer in build_explainers(names, expert, options).items():
            maps[name] = explain_all(explainer, states, actions)
        table = grounding_table(maps, boxes, game=game, seed=args.seed)
        tables.append(table)
        fig = plotting.grounding_bars(table, title=(
            f"{game}: do the maps land on the objects? ({len(states)} states from whole games; "
            f"objects: {', '.join(kept)})"))
        fig.savefig(args.out / f"{game}_grounding.png", dpi=100, bbox_inches="tight")
        print(f"{game}: {time.perf_counter() - started:.0f} s for {len(states)} states", flush=True)
    first = ["game", "method", "measure", "mean", "ci_low", "ci_high", "n_states", "beats_random"]
    if args.games:
        tables = rows_of_other_games(args.out / "grounding.csv", [t["game"].iloc[0] for t in tables]) + tables
    pd.concat(tables, ignore_index=True).sort_values("game", kind="stable")[first].to_csv(args.out / "grounding.csv", index=False)
    print(f"wrote {args.out / 'grounding.csv'} and the figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
