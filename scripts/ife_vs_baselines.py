"""Does an IFE agent play as well as the conventional CNN agents? ``figures/ife_vs_baselines.csv``
(one row per finished run), ``figures/ife_vs_baselines_iqm.csv`` and ``.png`` (IQM, mean and
median over seeds and games with stratified-bootstrap 95% intervals, from rliable) and
``figures/ife_vs_baselines_curves.png`` (evaluation score against frames, every seed).

The runs are ``xrlkit train`` run folders anywhere up to two levels below the given folders, e.g.
one folder per encoder made by::

    xrlkit train --algo ppo --preset cleanrl --game Breakout --encoder ENC --frames 2000000 \\
        --seed S --eval-every 500000 --out RUNS/ENC/Breakout-sS

    .venv/bin/python scripts/ife_vs_baselines.py RUNS [--out figures]

Every encoder must have run every game with the same seeds count and the same frame budget (a
comparison at unequal budgets is refused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xrlkit import plotting  # noqa: E402
from xrlkit.aggregate import interval_estimates  # noqa: E402
from xrlkit.runlog import check_out_dir  # noqa: E402
from xrlkit.sweep import score_table  # noqa: E402


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="folders holding the run folders")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--reps", type=int, default=5000, help="bootstrap resamples")
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out)
        table = score_table(*args.folders)
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    budgets = table.groupby("game")["frames"].agg(["min", "max"])
    unequal = budgets[budgets["max"] > 1.01 * budgets["min"]]
    if len(unequal):
        p.error(f"frame budgets differ within {', '.join(unequal.index)}: {unequal.to_dict('index')}")
    table = table.sort_values(["game", "encoder", "seed"])
    table.drop(columns="run").to_csv(args.out / "ife_vs_baselines.csv", index=False)
    try:
        estimates = interval_estimates(table, reps=args.reps)
    except ValueError as err:
        p.error(str(err))
    estimates.to_csv(args.out / "ife_vs_baselines_iqm.csv", index=False)
    games = ", ".join(sorted(table["game"].unique()))
    frames = f"{table['frames'].max() / 1e6:.3g}M frames"  # a budget ends on a whole rollout: 1,503,232 -> 1.5M
    fig = plotting.interval_estimates(estimates, title=(
        f"IFE against CNN agents: PPO on {games}, {frames}, {_seeds(estimates['n_runs'].iloc[0])} each "
        "(95% stratified-bootstrap intervals)"))
    fig.savefig(args.out / "ife_vs_baselines_iqm.png", dpi=110, bbox_inches="tight")
    plotting.method_curves(table, title=f"PPO with each encoder: evaluation score over training ({frames})").savefig(
        args.out / "ife_vs_baselines_curves.png", dpi=110, bbox_inches="tight")
    print(table.drop(columns="run").to_string(index=False))
    print(estimates.to_string(index=False))
    print(f"wrote {args.out}/ife_vs_baselines.csv, _iqm.csv, _iqm.png and _curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
