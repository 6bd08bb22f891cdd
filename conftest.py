"""How pytest-xdist splits the suite over its workers (``pytest`` runs ``-n auto``: one worker per
usable core, set in pyproject.toml). A root conftest, so it holds whichever paths are tested.

* Work units: every notebook cell goes to one worker, in order (01 trains the agent that 03 and
  05 explain, in ``notebooks/runs``; a notebook's cells share one kernel); the Ray tests go to one
  worker (one local Ray instance at a time); every other test is a unit of its own. The scheduler
  groups by node id, not by ``xdist_group`` marks: under pytest 9.2 xdist 3.8's ``loadgroup``
  silently ignores them (pytest-dev/pytest-xdist#1386).
* Allocator: the controller preloads tcmalloc (where installed) into the workers and so into
  everything they start (``xrlkit.runtime.preload_allocator_for_children``): the perturbation
  explainers of notebook 5 and the tests ran ~1.4x faster with it on the 2-core Zen 3 CPU.
* Cores: worker i of n runs on every n-th usable core from the i-th, and so does everything it
  starts (trainers, notebook kernels, Ray); ``xrlkit.runtime.usable_cores`` and torch follow the
  affinity. Unpinned, two workers each running torch and env threads on two cores oversubscribe
  them (OpenMP threads spin while their peers wait for a core).
"""

from __future__ import annotations

import os

import pytest
from xdist.scheduler import LoadScopeScheduling

RAY_TESTS = ("tests/test_ray_engine.py", "tests/test_sweep.py::test_ray_sweep_runs_every_game")


def work_unit(nodeid: str) -> str:
    """The work unit of a test: ``notebooks``, ``ray`` or the node id itself."""
    if nodeid.split("::", 1)[0].endswith(".ipynb"):
        return "notebooks"
    if nodeid.startswith(RAY_TESTS):
        return "ray"
    return nodeid


class WorkUnitScheduling(LoadScopeScheduling):
    """xdist's scope scheduler with :func:`work_unit` as the scope; the largest unit (the
    notebooks) starts first, the rest in collection order."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling:
    return WorkUnitScheduling(config, log)


if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker, not the controller
    from xrlkit.runtime import pin_to_share

    pin_to_share(int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
else:  # the controller (or a run without workers), before any worker starts
    from xrlkit.runtime import preload_allocator_for_children

    preload_allocator_for_children()
