"""``xrlkit curves``: draw the learning curves of training run folders into one figure."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="plot learning curves of run folders (xrlkit train --out) together")
    p.add_argument("runs", nargs="+", metavar="LABEL=FOLDER", help="a label and a run folder holding metrics.csv")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default=None)
    p.add_argument("--max-frames", type=float, default=None, help="cut the x-axis at this many frames")
    p.add_argument("--no-evaluations", action="store_true", help="training games only")
    p.add_argument("--reference", action="append", default=[], metavar="LABEL=SCORE",
                   help="a score to draw as a horizontal line, e.g. 'expert (held-out)=255.4'; repeatable")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xrlkit.runlog import check_out_file, curve_path

    runs: dict[str, Path] = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise ValueError(f"expected LABEL=FOLDER, got {item!r}")
        if not curve_path(folder).is_file():
            raise FileNotFoundError(f"no learning curve in {folder} ({curve_path(folder).name} is missing)")
        runs[label] = Path(folder)
    references: dict[str, float] = {}
    for item in args.reference:
        label, sep, score = item.rpartition("=")
        if not sep or not label:
            raise ValueError(f"expected LABEL=SCORE, got {item!r}")
        try:
            references[label] = float(score)
        except ValueError:
            raise ValueError(f"expected LABEL=SCORE with a number for SCORE, got {item!r}") from None
    out = check_out_file(args.out)
    import matplotlib

    matplotlib.use("Agg")
    from xrlkit import plotting

    plotting.training_runs(runs, title=args.title, evaluations=not args.no_evaluations,
                           max_frames=args.max_frames, references=references).savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0
