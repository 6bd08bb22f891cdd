"""Training sweeps: ``xrlkit train`` for every (game, seed), here (``workers`` at a time) or as Ray tasks.

Layout of a sweep folder ``OUT``::

    OUT/<Game>-s<seed>/              the run folder of ``xrlkit train`` (checkpoints, metrics.csv, agent)
    OUT/<Game>-s<seed>.log           the run's output, every attempt appended
    OUT/<Game>-s<seed>.done          marker: finished (skipped on re-run), with its wall time
    OUT/sweep.json, OUT/sweep.md     one row per run: status, seconds, attempts, folder, log

:func:`score_table` reads the finished runs of one or more such folders (any folder holding run
folders with a final ``agent.safetensors``) into the score table that :mod:`xrlkit.aggregate`
turns into IQMs with rliable.

Each run is its own ``xrlkit train`` process, so it picks its threads and allocator as a single run
does and resumes from its own checkpoint: a sweep stopped or killed half-way continues where each
run stopped when it is started again. Here ``workers`` runs at a time each take their share of the
cores (:func:`xrlkit.runtime.pinned_pool`; two 1-thread runs trained ~20% more than one 2-thread
run on this project's 2-core CPUs). A failing run is started again up to ``attempts`` times
(resuming); on Ray (:mod:`xrlkit.ray_engine`) a run whose worker died is resubmitted too, and
each run declares ``cpus_per_run`` CPUs, so Ray never puts more runs on a node than it has cores for,
and trains on that many threads (Ray sets ``OMP_NUM_THREADS`` to a task's CPUs, and
:func:`xrlkit.runtime.default_threads` follows it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from xrlkit.games import resolve_game
from xrlkit.registry import choose

#: options of ``xrlkit train`` that the sweep sets itself, per run
OWN_OPTIONS = ("--game", "--seed", "--out")


def run_name(game: str, seed: int) -> str:
    return f"{resolve_game(game)}-s{seed}"


def run_training(game: str, seed: int, train_args: Sequence[str], out_dir: str | Path, attempts: int = 1) -> dict[str, Any]:
    """Run ``xrlkit train --game GAME --seed SEED --out OUT/<Game>-s<seed> TRAIN_ARGS`` in a child
    process, up to ``attempts`` times until it exits 0; the run's index row. Skipped when its
    ``.done`` marker exists."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    out = Path(out_dir)
    name = run_name(game, seed)
    run_dir, log, done = out / name, out / f"{name}.log", out / f"{name}.done"
    row: dict[str, Any] = {"game": resolve_game(game), "seed": seed, "run": str(run_dir), "log": str(log)}
    if done.exists():
        return {**row, "status": "skipped (done)", "seconds": json.loads(done.read_text())["seconds"]}
    command = [sys.executable, "-m", "xrlkit.cli", "train", "--game", row["game"], "--seed", str(seed),
               "--out", str(run_dir), "--no-progress", *train_args]
    start = time.time()
    for attempt in range(1, attempts + 1):
        with open(log, "a") as f:
            f.write(f"$ {' '.join(command)}  # attempt {attempt}\n")
            f.flush()
            rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc == 0:
            seconds = round(time.time() - start, 1)
            done.write_text(json.dumps({"seconds": seconds}))
            return {**row, "status": "done", "seconds": seconds, "attempts": attempt}
    return {**row, "status": "failed", "seconds": round(time.time() - start, 1), "attempts": attempts,
            "error": f"xrlkit train exited {rc}; see {log}"}


SCORE_COLUMNS = ("game", "encoder", "algo", "seed", "frames", "score", "eval_episodes", "train_seconds", "run")


def score_table(*folders: str | Path) -> pd.DataFrame:
    """One row per finished training run (a folder with the final ``agent.safetensors`` of
    ``xrlkit train``) that is one of ``folders`` or up to two levels below one, from the agent's own
    metadata: :data:`SCORE_COLUMNS`, ``score`` being the final evaluation's mean game score.
    Unfinished runs (only a ``resume.safetensors``) are left out. ``FileNotFoundError`` when a
    folder does not exist or holds no finished run."""
    from xrlkit.checkpoint import read_meta

    rows = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"no sweep folder at {folder}")
        for path in sorted(p for pattern in ("agent.safetensors", "*/agent.safetensors", "*/*/agent.safetensors")
                           for p in folder.glob(pattern)):
            meta = read_meta(path)
            lacks = [k for k in ("game", "seed", "frames", "eval_mean") if meta.get(k) is None]
            if lacks:
                raise ValueError(f"{path} is not a finished xrlkit train run: its metadata lacks {lacks}")
            rows.append({"game": meta["game"], "encoder": meta.get("encoder"), "algo": meta.get("algo"),
                         "seed": int(meta["seed"]), "frames": int(meta["frames"]), "score": float(meta["eval_mean"]),
                         "eval_episodes": meta.get("eval_episodes"), "train_seconds": meta.get("train_seconds"),
                         "run": str(path.parent)})
    if not rows:
        raise FileNotFoundError(f"no finished training run (*/agent.safetensors) in {', '.join(map(str, folders))}")
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def run_sweep(
    games: Sequence[str],
    seeds: Sequence[int],
    train_args: Sequence[str],
    out_dir: str | Path,
    *,
    engine: str = "local",
    address: str | None = None,
    attempts: int = 1,
    cpus_per_run: float = 2.0,
    workers: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Every (game, seed) run of ``xrlkit train`` with ``train_args``; writes and returns the
    sweep's index (one row per run, in game then seed order). The local engine runs ``workers``
    at a time, each pinned to its share of the cores."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = [(resolve_game(g), int(s)) for g in games for s in seeds]
    if engine == "ray":
        from xrlkit.ray_engine import collect, ray_session

        with ray_session(address) as ray:
            task = ray.remote(run_training).options(num_cpus=cpus_per_run, max_retries=max(0, attempts - 1))
            refs = {task.remote(g, s, list(train_args), out, attempts): (g, s) for g, s in keys}
            by_key = collect(ray, refs, lambda k: {"game": k[0], "seed": k[1], "run": str(out / run_name(*k))},
                             cpus_per_run, progress)
        rows = [by_key[k] for k in keys]
    elif engine == "local":
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        rows = []

        def finished(row: dict[str, Any]) -> None:
            rows.append(row)
            if progress:
                print(f"sweep: {len(rows)}/{len(keys)} runs; {row['game']} seed {row['seed']}: {row['status']}",
                      file=sys.stderr, flush=True)

        if workers == 1:
            for g, s in keys:
                finished(run_training(g, s, train_args, out, attempts))
        else:
            from xrlkit.runtime import pinned_pool

            with pinned_pool(workers) as pool:
                for job in [pool.apply_async(run_training, (g, s, train_args, out, attempts)) for g, s in keys]:
                    finished(job.get())
    else:
        choose("engine", engine, ("local", "ray"))
    index = pd.DataFrame(rows)
    (out / "sweep.json").write_text(index.to_json(orient="records", indent=1))
    (out / "sweep.md").write_text(f"# Training sweep\n\n```\n{index.to_string(index=False)}\n```\n")
    return index
