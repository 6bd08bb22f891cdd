"""``xrlkit study``: run the study notebooks over games with papermill."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xrlkit.commands import parse_key_values
from xrlkit.study import ENGINES, NOTEBOOK_DIR, list_notebooks, run_study, study_plan


def register(sub: argparse._SubParsersAction) -> None:
    from xrlkit.runtime import ALLOCATORS

    p = sub.add_parser("study", help="run the study notebooks for each game (papermill), resumable")
    p.add_argument("--games", default="Breakout", help="'all', 'atari100k' or a comma-separated list (default: Breakout)")
    p.add_argument("--notebooks", default="all", help="'all' or numbers / names, e.g. '1,3,5'")
    p.add_argument("--out", default="runs/study", help="output folder (re-running skips finished notebooks)")
    p.add_argument("--workers", type=int, default=1, help="local engine: games run in parallel processes")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: processes of this machine; ray: one Ray task per (game, notebook)")
    p.add_argument("--address", default=None,
                   help="ray engine: the cluster's head, HOST:6379 (default: start a local Ray instance)")
    p.add_argument("--retries", type=int, default=None,
                   help="times a failing notebook (or, on Ray, a dead worker's task) is run again (default: 0 local, 2 ray)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter override, VALUE parsed as JSON when possible (repeatable)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per notebook cell")
    p.add_argument("--dry-run", action="store_true",
                   help="print the tasks and the estimated CPU-hours and wall time (from the study benchmark), run nothing")
    p.add_argument("--cluster-cpus", type=int, default=None,
                   help="CPUs to plan the wall time for (default: this machine's)")
    p.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR,
                   help="folder of numbered notebooks NN_name.ipynb to run (default: xrlkit's study notebooks)")
    p.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                   help="memory allocator of the notebook kernels (auto: tcmalloc where installed; "
                        "~1.4x faster perturbation explainers)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xrlkit.games import resolve_games
    from xrlkit.runlog import check_out_dir
    from xrlkit.runtime import preload_allocator_for_children, usable_cores

    parameters = parse_key_values(args.param, "--param")
    print(study_plan(resolve_games(args.games), list_notebooks(args.notebooks, args.notebook_dir), args.out,
                     cpus=args.cluster_cpus or usable_cores(),
                     workers=args.workers if args.engine == "local" else None, parameters=parameters), flush=True)
    if args.dry_run:
        return 0
    check_out_dir(args.out)
    if getattr(args, "from_command_line", False):
        preload_allocator_for_children(args.allocator)
    try:
        index = run_study(args.games, args.out, notebooks=args.notebooks,
                          parameters=parameters, workers=args.workers,
                          timeout=args.timeout, notebook_dir=args.notebook_dir,
                          command=shlex.join(["xrlkit", *sys.argv[1:]]), engine=args.engine, address=args.address,
                          retries=args.retries if args.retries is not None else (2 if args.engine == "ray" else 0))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished notebooks are kept in {args.out} (marked .done); "
                                "run the same command again to continue") from None
    print(index.to_string(index=False))
    print(f"index: {args.out}/index.md, combined results: {args.out}/results.csv")
    return int((index["status"] == "failed").any())
