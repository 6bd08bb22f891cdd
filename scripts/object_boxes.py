"""Record states with their OCAtari object boxes for a game (run in the objects environment).

OCAtari pins numpy<2, so it cannot join the main environment: create the objects environment
(``conda env create -f environment-objects.yml``), then, inside it,

    python scripts/object_boxes.py --game Pong

plays the game's shipped expert (or ``--agent PATH``) over whole games, keeps every ``--every``-th
step that has objects on screen and writes the states and boxes to ``xrlkit/data/objects/Pong.npz``
(about 1 MB for 300 states). The main environment reads it with
``xrlkit.grounding.load_object_states("Pong")``; ``scripts/grounding_table.py`` scores maps on it.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

from xrlkit.agents.load import agent_protocol, load_any_agent
from xrlkit.checkpoint import agent_identity, command_line
from xrlkit.defaults import model_path
from xrlkit.games import resolve_game
from xrlkit.grounding import OBJECTS_DIR, record_object_states, save_object_states


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", required=True)
    p.add_argument("--agent", default="shipped", help="agent that plays (default: the game's shipped expert)")
    p.add_argument("--n-states", type=int, default=300)
    p.add_argument("--every", type=int, default=20, help="keep every n-th step (states span whole games)")
    p.add_argument("--seed", type=int, default=0, help="first game's seed; game i uses seed + i")
    p.add_argument("--out", type=Path, default=None, help="default: xrlkit/data/objects/GAME.npz")
    args = p.parse_args(argv)
    game = resolve_game(args.game)
    path = model_path(args.agent, game, "expert")
    agent = load_any_agent(path, game=game)
    objects = record_object_states(agent, game, args.n_states, every=args.every, protocol=agent_protocol(agent),
                                   seed=args.seed)
    objects.meta.update(agent=agent_identity(agent, path), ocatari=version("ocatari"), command=command_line())
    out = save_object_states(args.out or OBJECTS_DIR / f"{game}.npz", objects)
    counts: dict[str, int] = {}
    for labels in objects.labels:
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
    print(f"{len(objects.states)} states from games {objects.meta['seeds']} -> {out} "
          f"({out.stat().st_size / 2**20:.1f} MB); objects: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
