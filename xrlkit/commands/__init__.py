"""Subcommands of the ``xrlkit`` CLI, one module each (see :mod:`xrlkit.cli`), and the option
parsing they share."""

from __future__ import annotations

import json
from typing import Any


def parse_key_values(items: list[str], option: str) -> dict[str, Any]:
    """``["frames=100", "device=cpu"]`` -> ``{"frames": 100, "device": "cpu"}``: each VALUE is
    parsed as JSON when it is valid JSON, else kept as a string. ``option`` names the flag in errors."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
