"""Wall time of the same two-game study with each engine: the local engine one game at a time,
the local engine with two worker processes, and Ray (a local instance with this machine's CPUs,
its start-up included). Each runs ``xrlkit study`` as a user would, in a fresh temporary folder,
one after the other on an otherwise idle machine (check ``top`` first). Writes
``benchmarks/results/engines-cpu.json``: ``{"machine", "command", "games", "notebooks",
"runs": [{"engine", "argv", "seconds", "status": {game: [status per notebook]}}]}``.

The default notebooks (1 and 2, on two games that ship an expert) keep the
whole comparison to a few minutes; ``--notebooks all`` times the full study.

    .venv/bin/python benchmarks/bench_engines.py [--games Breakout,Pong] [--notebooks 1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xrlkit.runtime import cpu_info

RESULT = Path(__file__).parent / "results" / "engines-cpu.json"
ENGINES = {"local, 1 worker": ["--workers", "1"], "local, 2 workers": ["--workers", "2"],
           "ray, local instance": ["--engine", "ray"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="Breakout,Pong")
    p.add_argument("--notebooks", default="1,2")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    runs, failed = [], False
    for engine, flags in ENGINES.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = [sys.executable, "-m", "xrlkit.cli", "study", "--games", args.games,
                    "--notebooks", args.notebooks, "--out", tmp, *flags]
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            seconds = round(time.perf_counter() - start, 1)
            index = json.loads((Path(tmp) / "index.json").read_text()) if (Path(tmp) / "index.json").is_file() else []
        status: dict[str, list[str]] = {}
        for row in index:
            status.setdefault(row["game"], []).append(row["status"])
        ok = proc.returncode == 0 and all(s in ("done", "degenerate") for v in status.values() for s in v)
        failed |= not ok
        runs.append({"engine": engine, "argv": " ".join(["xrlkit", *argv[3:9], "TMP", *flags]),
                     "seconds": seconds, "status": status})
        print(f"{engine}: {seconds} s, {status}" + ("" if ok else f"\n{proc.stderr[-3000:]}"), flush=True)
    record = {"machine": cpu_info(), "command": " ".join(["python", *sys.argv]), "games": args.games,
              "notebooks": args.notebooks, "runs": runs}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
