"""One check for every name table of xrlkit (encoders, explainers, metrics, presets, protocols,
reference modes, ...): :func:`choose` accepts a known name and refuses any other in one format,
listing the choices and the closest ones."""

from __future__ import annotations

import difflib
from typing import Iterable, TypeVar

T = TypeVar("T")


def choose(kind: str, name: T, choices: Iterable[T]) -> T:
    """``name`` if it is one of ``choices``; else ``ValueError("unknown <kind> 'x'; choose one of
    a, b, c; did you mean 'b'?")`` (the hint only where a choice is close)."""
    options = list(choices)
    if name in options:
        return name
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(map(str, options))}{hint}")
