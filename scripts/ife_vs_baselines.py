"""Does an IFE agent play as well as the conventional CNN agents? ``figures/ife_vs_baselines.csv``
(one row per finished run), ``figures/ife_vs_baselines_iqm.csv`` and ``.png`` (IQM, mean and
median over seeds and games with stratified-bootstrap 95% intervals, from rliable) and
``figures/ife_vs_baselines_curves.png`` (evaluation score against frames, every seed).

The runs are ``xrlkit train`` run folders anywhere up to two levels below the given folders, e.g.
one folder per encoder made by::

    xrlkit train --algo ppo --preset cleanrl --game Breakout --encoder ENC --frames 2000000 \\
        --seed S --eval-every 500000 --out RUNS/ENC/Breakout-sS

    .venv/bin/python scripts/ife_vs_baselines.py RUNS [--out figures]

The table is also the record of the runs: each run's row stays in ``OUT/ife_vs_baselines.csv``
and its learning curve is copied to ``OUT/runs/ivb/ENCODER-GAME-sSEED.csv`` (the ``curve``
column), so runs made in different sessions, whose folders are gone, join later ones. A run given
again replaces its row; with no folders the figures are drawn from the record alone. Delete the
table to start a fresh comparison.

Every encoder must have run every game with the same seeds count and, within a game, the same
frame budget (a comparison at unequal budgets is refused).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

from xrlkit import plotting  # noqa: E402
from xrlkit.aggregate import interval_estimates  # noqa: E402
from xrlkit.runlog import check_out_dir, curve_path  # noqa: E402
from xrlkit.sweep import SCORE_COLUMNS, score_table  # noqa: E402

TABLE = "ife_vs_baselines.csv"
KEY = ["game", "encoder", "seed"]
#: the record's columns: a run's score row, its folder left out, the place of its curve added
COLUMNS = [c for c in SCORE_COLUMNS if c != "run"] + ["curve"]


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def read_record(out: Path) -> pd.DataFrame:
    """The runs recorded in ``out`` (empty when there is no table yet); ``ValueError`` when the
    table is unreadable, lacks a column or names a curve that is not there."""
    path = out / TABLE
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable table ({err}); delete it to start afresh") from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; delete it to start afresh")
    lost = [c for c in table["curve"] if not (out / c).is_file()]
    if lost:
        raise ValueError(f"{path} names learning curves that are not there: {', '.join(lost)}")
    return table[COLUMNS]


def merge_runs(out: Path, folders: list[Path]) -> pd.DataFrame:
    """The runs recorded in ``out`` and the finished runs below ``folders`` (a new run replaces
    the record of the same game, encoder and seed), sorted; new runs keep their ``run`` folder."""
    table = read_record(out).assign(run=None)
    if folders:
        new = score_table(*folders)
        new["curve"] = [f"runs/ivb/{r.encoder}-{r.game}-s{r.seed}.csv" for r in new.itertuples()]
        replaced = table.set_index(KEY).index.isin(new.set_index(KEY).index)
        table = pd.concat([t for t in (table[~replaced], new) if len(t)], ignore_index=True)
    if table.empty:
        raise FileNotFoundError(f"no run recorded in {out / TABLE} and no run folder given")
    return table.sort_values(KEY, ignore_index=True)


def write_record(out: Path, table: pd.DataFrame) -> None:
    """Copy each new run's learning curve to its ``curve`` in ``out`` and write the table."""
    for row in table.dropna(subset=["run"]).itertuples():
        (out / row.curve).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curve_path(row.run), out / row.curve)
    table[COLUMNS].to_csv(out / TABLE, index=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", type=Path, help="folders holding new run folders")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--reps", type=int, default=5000, help="bootstrap resamples")
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out)
        table = merge_runs(args.out, args.folders)
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    budgets = table.groupby("game")["frames"].agg(["min", "max"])
    unequal = budgets[budgets["max"] > 1.01 * budgets["min"]]
    if len(unequal):
        p.error(f"frame budgets differ within {', '.join(unequal.index)}: {unequal.to_dict('index')}")
    try:
        estimates = interval_estimates(table, reps=args.reps)
    except ValueError as err:
        p.error(str(err))
    write_record(args.out, table)
    estimates.to_csv(args.out / "ife_vs_baselines_iqm.csv", index=False)
    # a budget ends on a whole rollout: 1,503,232 -> 1.5M
    frames = ", ".join(f"{g} {f / 1e6:.3g}M" for g, f in budgets["max"].items()) + " frames"
    games = ", ".join(budgets.index)
    fig = plotting.interval_estimates(estimates, title=(
        f"IFE against CNN agents: PPO on {games}, {_seeds(estimates['n_runs'].iloc[0])} each "
        f"({frames}; 95% stratified-bootstrap intervals)"))
    fig.savefig(args.out / "ife_vs_baselines_iqm.png", dpi=110, bbox_inches="tight")
    curves = table.assign(run=[args.out / c for c in table["curve"]])
    plotting.method_curves(curves, title=f"PPO with each encoder: evaluation score over training ({frames})").savefig(
        args.out / "ife_vs_baselines_curves.png", dpi=110, bbox_inches="tight")
    print(table[COLUMNS].to_string(index=False))
    print(estimates.to_string(index=False))
    print(f"wrote {args.out}/ife_vs_baselines.csv, _iqm.csv, _iqm.png and _curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
