"""Wall time of each study notebook with its default parameters, on a game that ships an expert
and on one that does not (notebook 1 then trains its toy agent, and notebook 3 a VisionMask on
its play). Writes ``benchmarks/results/study-cpu.json``: ``{"machine": ..., "command": ...,
"runs": [{"game", "shipped_expert", "seconds": {notebook: seconds}}]}``, which
``xrlkit study --dry-run`` reads to estimate a study's cost.

Each game's study runs in a fresh temporary folder, one game after the other, on an otherwise
idle machine (check ``top`` first). A game whose study fails is left out of the file (its error is
printed) and the script exits 1.

    .venv/bin/python benchmarks/bench_study.py [--games Breakout,Boxing]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from xrlkit.defaults import shipped
from xrlkit.runtime import cpu_info
from xrlkit.study import STUDY_BENCHMARK, run_study


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="Breakout,Boxing", help="one game with a shipped expert, one without")
    p.add_argument("--out", type=Path, default=STUDY_BENCHMARK)
    args = p.parse_args()
    runs, failed = [], []
    for game in args.games.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            index = run_study([game], tmp)
            if not (index["status"].isin(["done", "degenerate"])).all():
                print(index.to_string(index=False), file=sys.stderr)
                for err in index.dropna(subset=["error"])["error"] if "error" in index else []:
                    print(Path(err).read_text(), file=sys.stderr)
                failed.append(game)
                continue
        runs.append({"game": game, "shipped_expert": shipped(game, "expert") is not None,
                     "seconds": dict(zip(index["notebook"], index["seconds"]))})
        print(f"{game}: {runs[-1]['seconds']}", flush=True)
    record = {"machine": cpu_info(), "command": " ".join(["python", *sys.argv]), "runs": runs}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}" + (f" without {', '.join(failed)}, whose study failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
