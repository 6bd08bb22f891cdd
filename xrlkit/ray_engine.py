"""The study on Ray: every (game, notebook) is a Ray task, on one machine or a cluster.

:func:`run_on_ray` submits, for each game, one task per notebook, each taking the previous one's
index row as its argument, so Ray runs a game's notebooks in order (a later notebook uses what an
earlier one made) while the games spread over every CPU of the cluster. Each task declares
``cpus_per_task`` CPUs. A task runs :func:`xrlkit.study.run_notebook`, which writes the same run
folder as the local engine (``.done`` / ``.failed`` markers, executed notebooks, results), so a
re-run with either engine skips what finished. A notebook that raises is run again up to
``attempts`` times inside its task; a task whose worker process dies (killed, out of memory) is
resubmitted by Ray up to ``attempts - 1`` times; then it is reported as failed and the other games
go on.

On a cluster (``ray start --head`` on one node, ``ray start --address=HEAD:6379`` on the others,
then ``address="HEAD:6379"``), every node needs xrlkit installed the same way, and the study
folder must be one filesystem that every node sees (an NFS mount, say): the tasks write there and
the driver reads the markers back. Without ``address`` a local Ray instance starts with this
machine's CPUs and stops at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

from xrlkit.study import FINISHED, mark_degenerate, run_notebook


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:  # an optional extra: say how to get it
        raise ImportError("the ray engine needs Ray: pip install 'xrlkit[ray]' (the README's set-up installs it)") from err
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected: to the cluster at ``address``, or to a local instance with
    ``num_cpus`` (default: all cores) that stops when the block ends. An already connected Ray
    is used as it is."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_on_ray(
    games: Sequence[str],
    notebooks: dict[Path, dict[str, Any]],
    out_dir: Path,
    kernel: str = "python3",
    timeout: int | None = None,
    *,
    attempts: int = 1,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    num_cpus: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``notebooks`` (each mapped to its parameters) for every game as Ray tasks; the index
    rows, in game and notebook order, those of a game whose agent is not competent marked
    ``degenerate``. ``num_cpus`` caps a local instance (default: all cores); ignored with
    ``address``. Prints the sweep's progress to stderr when ``progress``."""
    with ray_session(address, num_cpus) as ray:
        task = ray.remote(run_notebook).options(num_cpus=cpus_per_task, max_retries=max(0, attempts - 1))
        refs: dict[Any, tuple[str, int]] = {}
        for game in games:
            previous = None
            for k, (nb, params) in enumerate(notebooks.items()):
                previous = task.remote(game, nb, params, out_dir, kernel, timeout, attempts, previous)
                refs[previous] = (game, k)
        rows = collect(ray, refs, lambda key: {"game": key[0], "notebook": f"#{key[1] + 1}"}, cpus_per_task, progress)
    return [row for game in games
            for row in mark_degenerate(Path(out_dir) / game, [rows[(game, k)] for k in range(len(notebooks))])]


def collect(ray: Any, refs: dict[Any, Hashable], describe: Callable[[Any], dict[str, Any]],
            cpus_per_task: float, progress: bool) -> dict[Any, dict[str, Any]]:
    """Wait for every task of ``refs`` (object ref -> key); each task's row (a dict with
    ``status`` and ``seconds``) by key. A task Ray gave up on (its worker died on every try)
    becomes ``describe(key)`` with status ``failed`` and the error."""
    rows: dict[Any, dict[str, Any]] = {}
    pending, t0 = list(refs), time.time()
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            key = refs[ref]
            try:
                rows[key] = ray.get(ref)
            except Exception as err:  # ray.exceptions.RayError: the worker died on every attempt
                rows[key] = {**describe(key), "status": "failed", "seconds": 0.0,
                             "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
        if progress:
            print(progress_line(list(rows.values()), len(refs), slots, time.time() - t0), file=sys.stderr, flush=True)
    return rows


def progress_line(rows: list[dict[str, Any]], total: int, slots: int, elapsed: float) -> str:
    """``ray: 5/12 tasks (4 done, 1 failed), 2 running; about 3 min left``: the time left is the
    mean wall time of the tasks run so far, times the tasks left, over the parallel slots."""
    ran = [r["seconds"] for r in rows if r["status"] == "done"]
    done = sum(r["status"] in FINISHED for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    left = total - len(rows)
    line = f"ray: {len(rows)}/{total} tasks ({done} done, {failed} failed), {min(left, slots)} running"
    if ran and left:
        line += f"; about {max(1, round(sum(ran) / len(ran) * left / slots / 60))} min left"
    return line + f" [{elapsed / 60:.1f} min]"
