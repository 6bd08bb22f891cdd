"""The process-wide choices of :mod:`xrlkit.runtime`: which processes get tcmalloc, and when;
denormal floats flushed to zero once xrlkit is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xrlkit import runtime

FAKE = "/opt/fake/libtcmalloc_minimal.so.4"


def test_allocator_env_prepends_tcmalloc_and_keeps_other_preloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "tcmalloc_path", lambda: FAKE)
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    assert runtime.allocator_env("auto", {"A": "1"}) == {"A": "1", "LD_PRELOAD": FAKE}
    assert runtime.allocator_env("tcmalloc", {"LD_PRELOAD": "/x/libother.so"})["LD_PRELOAD"] == f"{FAKE}:/x/libother.so"
    assert runtime.allocator_env("system", {"A": "1"}) == {"A": "1"}
    already = {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}
    assert runtime.allocator_env("auto", already) == already  # never preloaded twice


def test_allocator_env_without_tcmalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "tcmalloc_path", lambda: None)
    assert runtime.allocator_env("auto", {"A": "1"}) == {"A": "1"}  # auto falls back to the system allocator
    with pytest.raises(ValueError, match="no libtcmalloc is installed"):
        runtime.allocator_env("tcmalloc", {})
    with pytest.raises(ValueError, match="allocator"):
        runtime.allocator_env("jemalloc", {})


@pytest.mark.skipif(runtime.tcmalloc_path() is None or not sys.platform.startswith("linux"),
                    reason="libtcmalloc not installed")
def test_children_started_after_preloading_map_tcmalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the study command and the test controller do: a process started afterwards (a
    notebook kernel, a worker) has tcmalloc mapped; with ``system`` it has not."""
    child = [sys.executable, "-c", "from xrlkit.runtime import current_allocator; print(current_allocator())"]
    mine = runtime.current_allocator()  # read from this process's memory map, not its environment
    monkeypatch.setenv("LD_PRELOAD", "")
    assert runtime.preload_allocator_for_children("system") == "system"
    assert subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip() == "system"
    assert runtime.preload_allocator_for_children("auto") == "tcmalloc"
    assert os.environ["LD_PRELOAD"] == runtime.tcmalloc_path()
    assert subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip() == "tcmalloc"
    assert runtime.current_allocator() == mine


DENORMALS_LEFT = """
import sys, torch
if sys.argv[1] == "xrlkit":
    import xrlkit  # noqa: F401
torch.set_num_threads(2)
print(int((torch.full((1 << 20,), 1e-39) * 1.0 != 0).sum()))
"""


def test_importing_xrlkit_flushes_denormals_to_zero() -> None:
    """A VisionMask computed 4x slower on denormal activations; once xrlkit is imported, a
    product of denormals is zero (in torch's worker threads too), and without it it is not."""
    def left(importing: str) -> int:
        out = subprocess.run([sys.executable, "-c", DENORMALS_LEFT, importing], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    assert left("torch") == 1 << 20
    assert left("xrlkit") == 0
