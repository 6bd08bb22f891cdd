"""A training run's folder: its CSV log, atomic checkpoint writes, same-run checks, interrupts.

Every trainer writes ``metrics.csv`` (one row per logged step, fixed columns) and a
``resume.safetensors`` through these helpers, so a run killed at any moment (even by
``kill -9``) leaves a readable log and the last whole checkpoint, and a resumed run continues
the log without a gap or a duplicate row (rows past the checkpoint are dropped on resume). One
run at a time writes a folder (:func:`claim_out_dir`): a second would interleave its rows and
checkpoints with the first's.
"""

from __future__ import annotations

import csv
import os
import signal
import warnings
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Sequence

import torch

from xrlkit.checkpoint import read_meta, save_tensors

try:  # POSIX (Linux, macOS); Windows has no flock, and there claim_out_dir warns instead of locking
    import fcntl
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests/test_ppo.py
    fcntl = None  # type: ignore[assignment]


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by a trainer after Ctrl-C / SIGTERM once its checkpoint is saved; the message says
    what was kept and how to resume. The command line turns it, like any ``KeyboardInterrupt``,
    into exit code 130."""


class CsvLog:
    """Append-only CSV with fixed ``columns``; ``step_column`` orders rows for :meth:`trim`."""

    def __init__(self, path: str | Path, columns: Sequence[str], step_column: str = "frames") -> None:
        self.path, self.columns, self.step_column = Path(path), tuple(columns), step_column

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (missing columns stay empty; unknown keys raise ``ValueError``)."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"{self.path.name}: unknown column(s) {sorted(unknown)}")
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def trim(self, max_step: float) -> None:
        """Drop the rows whose ``step_column`` exceeds ``max_step`` (written after the checkpoint
        a run resumes from), and a torn last line left by a kill."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f)
                    if r.get(self.step_column) not in (None, "") and None not in r.values()
                    and float(r[self.step_column]) <= max_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def rows(self) -> Iterator[dict[str, str]]:
        if self.path.is_file():
            with self.path.open(newline="") as f:
                yield from csv.DictReader(f)


def curve_path(out_dir: str | Path) -> Path:
    """Where a run's learning curve is: ``out_dir/metrics.csv``, or ``out_dir`` itself when it is
    a curve kept as a ``.csv`` file."""
    return Path(out_dir) if Path(out_dir).suffix == ".csv" else Path(out_dir) / "metrics.csv"


def read_curve(out_dir: str | Path, as_pandas: bool = False) -> Any:
    """The learning curve at :func:`curve_path` of ``out_dir`` as ``{column: list of floats}``
    (empty cells: NaN) or a DataFrame."""
    path = curve_path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no learning curve at {path}")
    if as_pandas:
        import pandas as pd

        return pd.read_csv(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    return {c: [float(r[c]) if r[c] not in ("", None) else float("nan") for r in rows] for c in columns}


def atomic_save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """:func:`~xrlkit.checkpoint.save_tensors` to a temporary file, then rename: a kill during
    the write leaves the previous checkpoint whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_tensors(tmp, tensors, meta)
    os.replace(tmp, path)
    return path


def check_same_run(path: str | Path, run: dict[str, Any], hint: str = "resume=False") -> None:
    """Raise ``ValueError`` if the run recorded in checkpoint ``path`` differs from ``run``
    (game, encoder, seed, config ...); ``hint`` names the way to start afresh instead."""
    path = Path(path)
    meta = read_meta(path)
    diff = [f"{k}: stored {meta.get(k)!r}, asked {v!r}" for k, v in run.items() if meta.get(k) != v]
    if diff:
        raise ValueError(f"{path.parent} holds another run ({'; '.join(diff)}); use another output folder or {hint}")


def check_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check that files can be written there, before any work;
    a one-line ``ValueError`` otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".xrlkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to output folder {out} ({err.strerror or err})") from err
    return out


_claimed: dict[Path, int] = {}  # folder -> this process's open, locked descriptor of it (-1: no flock here)


def _lock_holder(folder: Path) -> str:
    """The pid holding an ``flock`` on ``folder``, read from Linux's ``/proc/locks``; ``"unknown"``
    where that cannot be read."""
    st = os.stat(folder)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                return fields[4]
    except OSError:
        pass
    return "unknown"


def claim_out_dir(out_dir: str | Path) -> Path:
    """:func:`check_out_dir`, then hold an exclusive lock on the folder itself for the rest of this
    process, so that a second command started on the same folder (a training run resumed while the
    first still runs) stops with a ``ValueError`` naming the process that writes there, before it
    touches anything. Nothing is written into the folder, and the kernel drops the lock when the
    process ends, however it ends (``kill -9`` too), so a stale lock never blocks a resume.
    Claiming a folder this process holds is a no-op. Where the OS has no ``flock`` (Windows) the
    folder is checked but not locked, with a ``RuntimeWarning`` saying so."""
    out = check_out_dir(out_dir)
    key = out.resolve()
    if key in _claimed:
        return out
    if fcntl is None:
        warnings.warn(f"this OS has no flock: {out} is not locked, so make sure no other xrlkit run writes there",
                      RuntimeWarning, stacklevel=2)
        _claimed[key] = -1
        return out
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _lock_holder(out)
        raise ValueError(f"output folder {out} is in use by another xrlkit run (pid {holder}); wait for it to end "
                         f"or stop it (kill -TERM {holder}: it saves a checkpoint), or give another folder") from None
    _claimed[key] = fd
    return out


def check_out_file(path: str | Path) -> Path:
    """Check, before any work, that the file ``path`` can be written: not a folder, its folder
    creatable and writable (:func:`check_out_dir`); a one-line ``ValueError`` otherwise."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; give a file path")
    check_out_dir(out.parent)
    return out


class StopFlag:
    """Turns SIGINT / SIGTERM into a flag a loop checks at a safe point (inside the ``with``
    block); the previous handlers come back on exit. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
