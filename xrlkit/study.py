"""The study runner: the numbered notebooks, executed with papermill for each game.

Layout of a study folder ``OUT``::

    OUT/index.json, OUT/index.md       one row per (game, notebook): status, seconds, output path;
                                       status "degenerate" where the game's agent is not competent
                                       (:mod:`xrlkit.competence`), with the reason
    OUT/results.csv                    every result row all notebooks recorded, combined
    OUT/<Game>/<notebook>.ipynb        the executed notebook, outputs included
    OUT/<Game>/<notebook>.done|.failed marker: finished (skipped on re-run) / error text
    OUT/<Game>/results/<name>.json     rows a notebook recorded with :func:`record`
    OUT/<Game>/figures/*.png           figures a notebook saved

Games run in parallel processes (or as Ray tasks, :mod:`xrlkit.ray_engine`); the notebooks of one
game run in order, since later ones use what earlier ones made (the agent, the VisionMask model).
A failed notebook stops its game only.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from xrlkit.competence import competence_note
from xrlkit.defaults import shipped
from xrlkit.envs import get_protocol
from xrlkit.games import resolve_games
from xrlkit.registry import choose
from xrlkit.runtime import expected_duration, fewer_cores_slowdown, measured_rate, pinned_pool, resolve_runtime

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: where the notebooks run: processes of this machine, or tasks on a Ray cluster
ENGINES = ("local", "ray")
#: index statuses of a notebook whose outputs the next notebook can use
FINISHED = ("done", "skipped (done)")
#: each notebook's wall time with its default parameters, on a game that ships an expert and on
#: one that does not, measured by ``benchmarks/bench_study.py`` (present in a checkout)
STUDY_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "study-cpu.json"


def expert_steps(frames: int) -> int:
    """Agent steps of notebook 1's PPO expert of ``frames`` frames: ``ppo.train`` trains it on
    the ``ifepaper`` protocol, one agent step every ``frame_skip`` frames."""
    return frames // get_protocol("ifepaper").frame_skip


def kernel_manager_class() -> type | None:
    """The jupyter kernel manager papermill starts each notebook's kernel with.

    By default jupyter_client picks free TCP ports by binding and releasing them before the
    kernel starts; kernels started at once by parallel study workers can then draw the same port
    ("Address already in use") and the notebook fails without running. On POSIX the kernels
    here talk over unix sockets at a unique path per kernel instead, which cannot collide.
    ``None`` (Windows, no unix sockets): papermill's default TCP manager.

    The kernel process's own stderr (its application log, not the notebook's outputs, which
    reach the executed notebook over the kernel's sockets) is discarded: when a study is stopped
    with Ctrl-C the kernel logs a ``ZMQError`` traceback there as its sockets close under it.
    """
    if os.name == "nt":
        return None
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class UnixSocketKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _unique_socket_prefix(self) -> str:  # sockets are <prefix>-<n>, removed at shutdown
            return os.path.join(tempfile.gettempdir(), f"xrlkit-kernel-{uuid.uuid4().hex[:12]}")

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": subprocess.DEVNULL})

    return UnixSocketKernelManager


def list_notebooks(selection: str | Sequence[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The study notebooks in reading order; ``selection`` picks by number or name prefix
    ("1,3" or ["01_train_agent"]). Raises ``ValueError`` for one that does not exist."""
    available = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not available:
        raise ValueError(f"no study notebooks in {notebook_dir}")
    if selection is None or selection == "all":
        return available
    items = selection.split(",") if isinstance(selection, str) else list(selection)
    chosen = []
    for item in (s.strip() for s in items if s.strip()):
        key = f"{int(item):02d}_" if item.isdigit() else item
        match = [nb for nb in available if nb.stem.startswith(key)]
        if not match:
            raise ValueError(f"no notebook matches {item!r}; available: {[nb.stem for nb in available]}")
        chosen += [nb for nb in match if nb not in chosen]
    return sorted(chosen)


def notebook_parameters(notebook: Path) -> set[str]:
    """Names a notebook declares in its ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def record(out_dir: str | Path, name: str, rows: list[dict[str, Any]] | dict[str, Any]) -> Path:
    """Store result rows (flat dicts) of a notebook as ``out_dir/results/<name>.json``."""
    rows = [rows] if isinstance(rows, dict) else rows
    path = Path(out_dir) / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, default=float))
    return path


def save_figure(fig: Any, out_dir: str | Path, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``out_dir/figures/<name>``, a game's study figure; when the game's agent is
    not competent (:func:`xrlkit.competence.competence_note`) the warning is stamped on top."""
    from xrlkit.plotting import stamp

    path = Path(out_dir) / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp(fig, competence_note(out_dir)).savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def run_notebook(
    game: str,
    notebook: Path,
    params: dict[str, Any],
    out_dir: Path,
    kernel: str = "python3",
    timeout: int | None = None,
    attempts: int = 1,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute one study notebook for one game with ``params`` (besides ``game`` and ``out_dir``),
    up to ``attempts`` times until it succeeds; its index row (``game``, ``notebook``, ``output``,
    ``status``, ``seconds``, ``attempts``, and ``error``: the path of the error text). Skipped
    when already done, and not run when ``previous`` (the row of the game's notebook before it)
    says that one did not finish."""
    import papermill

    game_dir = Path(out_dir) / game
    game_dir.mkdir(parents=True, exist_ok=True)
    out_nb, done, fail = game_dir / notebook.name, game_dir / f"{notebook.stem}.done", game_dir / f"{notebook.stem}.failed"
    row: dict[str, Any] = {"game": game, "notebook": notebook.stem, "output": str(out_nb)}
    if done.exists():
        return {**row, "status": "skipped (done)", "seconds": json.loads(done.read_text())["seconds"]}
    if previous is not None and previous["status"] not in FINISHED:
        return {**row, "status": "not run (earlier notebook failed)", "seconds": 0.0}
    manager = kernel_manager_class()
    start = time.time()
    for attempt in range(1, attempts + 1):
        try:
            papermill.execute_notebook(
                str(notebook), str(out_nb), parameters={**params, "game": game, "out_dir": str(game_dir)},
                kernel_name=kernel, cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout,
                **({"kernel_manager_class": manager} if manager is not None else {}),
            )
        except Exception:  # a failing notebook must not stop the other games: record it
            fail.write_text(traceback.format_exc())
            if attempt < attempts:
                continue
            return {**row, "status": "failed", "seconds": round(time.time() - start, 1), "attempts": attempt,
                    "error": str(fail)}
        seconds = round(time.time() - start, 1)
        fail.unlink(missing_ok=True)
        done.write_text(json.dumps({"seconds": seconds}))
        return {**row, "status": "done", "seconds": seconds, "attempts": attempt}
    raise ValueError(f"attempts must be >= 1, got {attempts}")


def mark_degenerate(game_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of one game, those that finished marked ``degenerate`` (with the reason in
    ``note``) when the game's agent is not competent (:func:`xrlkit.competence.competence_note`)."""
    note = competence_note(game_dir)
    if note:  # finished, but on an agent whose explanations mean nothing: say so in the index
        for r in rows:
            if r["status"] in FINISHED:
                r.update(status="degenerate", note=note)
    return rows


def run_game(
    game: str,
    notebooks: dict[Path, dict[str, Any]],
    out_dir: Path,
    kernel: str = "python3",
    timeout: int | None = None,
    attempts: int = 1,
) -> list[dict[str, Any]]:
    """Execute ``notebooks`` (each mapped to the parameters it gets besides ``game`` and
    ``out_dir``) in order for one game with :func:`run_notebook`. Returns index rows."""
    rows: list[dict[str, Any]] = []
    for nb, own in notebooks.items():
        rows.append(run_notebook(game, nb, own, out_dir, kernel, timeout, attempts, rows[-1] if rows else None))
    return mark_degenerate(Path(out_dir) / game, rows)


def combine_results(out_dir: str | Path) -> pd.DataFrame:
    """All rows recorded under ``out_dir/*/results/*.json``, one table with a ``table`` column."""
    frames = []
    for path in sorted(Path(out_dir).glob("*/results/*.json")):
        df = pd.DataFrame(json.loads(path.read_text()))
        df.insert(0, "table", path.stem)
        if "game" not in df:
            df.insert(0, "game", path.parent.parent.name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def duration(seconds: float, cpu: bool = False) -> str:
    """``seconds`` for a person: hours with one decimal from an hour up, whole minutes below
    (at least 1), e.g. ``"1.8 h"``, ``"35 min"``; with ``cpu``, ``"1.8 CPU-hours"``, ``"35 CPU-minutes"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} {'CPU-hours' if cpu else 'h'}"
    return f"{max(1, round(seconds / 60))} {'CPU-minutes' if cpu else 'min'}"


def study_plan(
    games: Sequence[str], notebooks: Sequence[Path], out_dir: str | Path, cpus: int, workers: int | None = None,
    parameters: dict[str, Any] | None = None, benchmark: str | Path = STUDY_BENCHMARK,
) -> str:
    """What a study of ``notebooks`` over ``games`` would run and cost, before it starts: the
    tasks (less those already ``.done`` in ``out_dir``), CPU-hours, and wall time on ``cpus`` CPUs
    with ``workers`` games at a time (the local engine, :func:`xrlkit.runtime.pinned_pool`: each
    pinned to ``cpus / workers`` cores and taken as slower in proportion where that is fewer than
    the benchmark's cores per game, an upper bound), or, with ``workers=None`` (Ray), as many as
    the CPUs hold at the benchmark's cores per game, from each notebook's measured time in
    ``benchmark`` (the run on a game that ships an expert, or on one that does not, as the game
    is) plus, with ``expert_frames``, the training time :func:`xrlkit.runtime.measured_rate`
    gives. Says what it could not estimate; never guesses."""
    out = Path(out_dir)
    todo = {game: [nb for nb in notebooks if not (out / game / f"{nb.stem}.done").exists()] for game in games}
    tasks = sum(map(len, todo.values()))
    done = len(games) * len(notebooks) - tasks
    lines = [f"plan: {len(games)} game(s) x {len(notebooks)} notebook(s): {tasks} to run"
             + (f", {done} already done in {out}" if done else "")]
    try:
        measured = json.loads(Path(benchmark).read_text())
    except (OSError, ValueError):
        return "\n".join([*lines, f"no study benchmark at {benchmark}: cannot estimate the cost "
                                  "(run benchmarks/bench_study.py)"])
    profile = {run["shipped_expert"]: run for run in measured["runs"]}
    params = dict(parameters or {})
    frames = int(params.get("expert_frames", 0) or 0)
    rate = measured_rate("ppo", "nature", resolve_runtime()) if frames > 0 else None
    seconds: dict[str, float] = {}
    unmeasured: dict[str, list[str]] = {}
    for game, nbs in todo.items():
        has_expert = shipped(game, "expert") is not None
        run = profile.get(has_expert, {"seconds": {}})
        seconds[game] = 0.0
        for nb in nbs:
            if nb.stem not in run["seconds"]:
                unmeasured.setdefault(game, []).append(nb.stem)
                continue
            seconds[game] += run["seconds"][nb.stem]
            if nb.stem.startswith("01") and frames > 0 and not has_expert:  # notebook 1 trains the expert
                if rate is None:
                    unmeasured.setdefault(game, []).append("expert training")
                else:
                    seconds[game] += expert_steps(frames) / rate[0]
    machine = measured.get("machine", {})
    cores = machine.get("cores", 1)
    # local workers each pin their games to cpus / workers cores (pinned_pool); Ray runs as
    # many games as the CPUs hold at the measured cores per game
    slots = max(1, min(workers, len(games))) if workers else max(1, min(cpus // cores, len(games)))
    share = cpus / slots
    slower = fewer_cores_slowdown(cores, share)
    lanes = [0.0] * slots
    for t in sorted(seconds.values(), reverse=True):  # longest first, each game to the least loaded slot
        lanes[lanes.index(min(lanes))] += t * slower
    lines.append(f"estimate from {Path(benchmark).name} (measured on {cores} cores of {machine.get('cpu', 'an unnamed CPU')}, "
                 "default notebook parameters; other --param values or another CPU differ): "
                 f"{duration(sum(seconds.values()) * cores, cpu=True)}; wall time about {duration(max(lanes))} with "
                 f"{slots} game(s) at a time ({cpus} CPUs, "
                 + (f"{share:g} per game, not the {cores} measured: each taken as {slower:g}x slower, "
                    "an upper bound)" if slower > 1 else f"{cores} per game as measured)"))
    if frames > 0:
        lines.append(f"includes training a {frames:,}-frame PPO expert for each game without a shipped one"
                     + (f" at the {rate[0]:.0f} steps/s of {rate[1]['file']}" if rate else ""))
    extra = sorted(set(params) - {"expert_frames", "command"})
    if extra:
        lines.append(f"not in the estimate: the effect of --param {', '.join(extra)} (the benchmark ran the defaults)")
    if unmeasured:
        lines.append("not estimated (no measurement), so the figures above leave out: "
                     + "; ".join(f"{game} {', '.join(parts)}" for game, parts in unmeasured.items()))
    return "\n".join(lines)


def run_study(
    games: str | Sequence[str],
    out_dir: str | Path,
    *,
    notebooks: str | Sequence[str] | None = None,
    parameters: dict[str, Any] | None = None,
    workers: int = 1,
    kernel: str = "python3",
    timeout: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    command: str | None = None,
    engine: str = "local",
    address: str | None = None,
    retries: int = 0,
) -> pd.DataFrame:
    """Run the study notebooks for every game (``"all"``, ``"atari100k"`` or a list). With the
    ``local`` engine, ``workers`` games at a time in processes of this machine; with ``ray``, each
    (game, notebook) is a Ray task on the cluster at ``address`` (default: a local Ray instance;
    see :mod:`xrlkit.ray_engine`). A failing notebook is run again up to ``retries`` times. Each notebook gets the ``parameters`` it declares (a name no selected
    notebook declares is a ``ValueError``), plus ``game`` and ``out_dir``. Writes the index and
    the combined results; returns the index table. ``command`` (the command line that started the
    study) goes to notebooks that declare a ``command`` parameter, unless ``parameters`` sets it;
    the figures notebook writes it next to the figures."""
    choose("engine", engine, ENGINES)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    names = resolve_games(games)
    nbs = list_notebooks(notebooks, notebook_dir)
    params = dict(parameters or {})
    declared = {nb: notebook_parameters(nb) for nb in nbs}
    known = set().union(*declared.values())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"no selected notebook has parameter(s) {unknown}; they declare {sorted(known)}")
    own = {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in nbs}
    if command is not None:
        for nb in nbs:
            if "command" in declared[nb]:
                own[nb].setdefault("command", command)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    untrained = [g for g in names if shipped(g, "expert") is None]
    if int(params.get("expert_frames", 0) or 0) > 0 and untrained:
        frames = int(params["expert_frames"])
        print(f"notebook 1 trains a PPO expert of {frames:,} frames for each of {len(untrained)} game(s) without a "
              f"shipped one; " + expected_duration("ppo", "nature", expert_steps(frames), resolve_runtime()), flush=True)
    rows: list[dict[str, Any]] = []
    if engine == "ray":
        from xrlkit.ray_engine import run_on_ray

        rows = run_on_ray(names, own, out, kernel, timeout, attempts=retries + 1, address=address)
    elif workers <= 1:
        for game in names:
            rows += run_game(game, own, out, kernel, timeout, retries + 1)
    else:
        # Each worker pinned to its share of the cores, and so its kernels; workers ignore Ctrl-C, the
        # parent gets it and leaving the block terminates them (their kernels exit when their
        # parent process is gone, ipykernel's parent poller).
        with pinned_pool(workers) as pool:
            pending = [pool.apply_async(run_game, (g, own, out, kernel, timeout, retries + 1)) for g in names]
            for result in pending:
                rows += result.get()
    index = pd.DataFrame(rows)
    (out / "index.json").write_text(index.to_json(orient="records", indent=1))
    table = index.drop(columns=["note"], errors="ignore").to_string(index=False)
    notes = index.dropna(subset=["note"]).drop_duplicates("game") if "note" in index else index.iloc[:0]
    warnings = "".join(f"\n**{r.game}: {r.note}.** Its notebooks ran, but the agent they explain is not "
                       "competent: treat its explanations and metrics as meaningless.\n" for r in notes.itertuples())
    (out / "index.md").write_text(f"# Study index\n{warnings}\n```\n{table}\n```\n")
    results = combine_results(out)
    if not results.empty:
        results.to_csv(out / "results.csv", index=False)
    return index

