"""``xrlkit sweep``: ``xrlkit train`` over games and seeds, here or on a Ray cluster."""

from __future__ import annotations

import argparse
import math

from xrlkit.commands import train as train_command
from xrlkit.games import resolve_games
from xrlkit.sweep import OWN_OPTIONS, run_sweep


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train every (game, seed), one after another or as Ray tasks; resumable",
                       epilog="example: xrlkit sweep --games Pong,Breakout --seeds 1,2 --out runs/sweep "
                              "-- --algo ppo --preset cleanrl --frames 10000000")
    p.add_argument("--games", required=True, help="'all', 'atari100k' or a comma-separated list")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--out", required=True, help="sweep folder: one run folder per (game, seed), logs, sweep.md")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: runs here, --workers at a time; ray: one Ray task per run")
    p.add_argument("--workers", type=int, default=1,
                   help="local engine: runs at a time, each pinned to its share of the cores (default: 1)")
    p.add_argument("--address", default=None, help="ray engine: the cluster's head, HOST:6379 (default: a local Ray instance)")
    p.add_argument("--cpus-per-run", type=float, default=2.0, help="CPUs each run declares to Ray, and so its threads there (default: 2)")
    p.add_argument("--retries", type=int, default=1, help="times a failing run is started again, resuming (default: 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs and the time they should take (from the training benchmark), train nothing")
    p.add_argument("--cluster-cpus", type=int, default=None, help="dry run: CPUs to plan for (default: this machine's)")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="after '--': options for every 'xrlkit train' run (not --game, --seed, --out)")
    p.set_defaults(func=_run)


def _train_options(train_args: list[str]) -> argparse.Namespace:
    """``train_args`` parsed as ``xrlkit train`` would parse them (``ValueError`` if it would refuse them)."""
    own = [a for a in train_args if a.split("=")[0] in OWN_OPTIONS]
    if own:
        raise ValueError(f"the sweep sets {', '.join(own)} itself; pass games, seeds and --out to 'xrlkit sweep'")
    parser = argparse.ArgumentParser(prog="xrlkit train", exit_on_error=False)
    train_command.register(parser.add_subparsers())
    try:
        return parser.parse_args(["train", "--game", "Pong", "--out", "-", *train_args])
    except (argparse.ArgumentError, SystemExit) as err:
        raise ValueError(f"options for xrlkit train not accepted: {' '.join(train_args)} ({err})") from None


def _plan(n_runs: int, options: argparse.Namespace, cpus_per_run: float, cluster_cpus: int, workers: int | None) -> str:
    """The runs and their expected time; ``workers`` runs at a time on ``cluster_cpus`` (the local
    engine) or, with ``workers=None`` (Ray), as many as hold ``cpus_per_run`` each. A run on fewer
    cores than the benchmark's is taken as slower in proportion (an upper bound)."""
    from xrlkit.envs import get_protocol
    from xrlkit.runtime import fewer_cores_slowdown, measured_rate, resolve_runtime

    encoder = options.encoder or ("impala" if options.algo == "rainbow" else "nature")
    rt = resolve_runtime(options.device, options.precision)
    found = measured_rate(options.algo, encoder, rt) if options.algo in ("ppo", "rainbow") else None
    head = f"{n_runs} runs of {options.frames:,} frames ({options.algo}, {encoder}, {rt.precision})"
    if found is None:
        return head + "; the training benchmark has no measurement for this trainer, so no time estimate"
    rate, machine = found
    cores = machine.get("cores", 1)
    hours = options.frames / get_protocol(options.protocol or "ifepaper").frame_skip / rate / 3600
    slots = min(workers, n_runs) if workers else max(1, int(cluster_cpus // cpus_per_run))
    share = cluster_cpus / slots if workers else cpus_per_run
    slower = fewer_cores_slowdown(cores, share)
    return (f"{head}: about {hours:.1f} h each at the {rate:.0f} agent steps/s measured on {cores} "
            f"cores of {machine.get('cpu', 'an unnamed CPU')}, {n_runs * hours * cores:.1f} CPU-hours "
            f"in all; wall time about {math.ceil(n_runs / slots) * hours * slower:.1f} h with {slots} run(s) at a time "
            f"({cluster_cpus} CPUs, {share:g} per run" + (f", each taken as {slower:g}x slower than on {cores}" if slower > 1 else "")
            + f"), {n_runs * hours:.1f} h one after another on {cores}")


def _run(args: argparse.Namespace) -> int:
    from xrlkit.runlog import check_out_dir
    from xrlkit.runtime import usable_cores

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    options = _train_options(train_args)
    games = resolve_games(args.games)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or args.retries < 0 or args.cpus_per_run <= 0 or args.workers < 1:
        raise ValueError("need at least one seed, --retries >= 0, --cpus-per-run > 0 and --workers >= 1")
    print(_plan(len(games) * len(seeds), options, args.cpus_per_run, args.cluster_cpus or usable_cores(),
                args.workers if args.engine == "local" else None))
    if args.dry_run:
        return 0
    check_out_dir(args.out)
    index = run_sweep(games, seeds, train_args, args.out, engine=args.engine, address=args.address,
                      attempts=args.retries + 1, cpus_per_run=args.cpus_per_run, workers=args.workers)
    print(index.drop(columns=["log"]).to_string(index=False))
    print(f"index: {args.out}/sweep.md")
    return int((index["status"] == "failed").any())
