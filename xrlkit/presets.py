"""Hyperparameter presets as data: a named dict of dataclass fields, with overrides checked."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from xrlkit.registry import choose

T = TypeVar("T")


def config_from_preset(cls: type[T], presets: dict[str, dict[str, Any]], preset: str, overrides: dict[str, Any],
                       what: str) -> T:
    """``cls(**presets[preset])`` with ``overrides`` applied (``None`` values ignored); a
    ``ValueError`` names an unknown preset or field. ``what`` names the config in errors (``"PPO"``)."""
    choose(f"{what} preset", preset, presets)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {what} config field(s) {unknown}; valid: {sorted(fields)}")
    return cls(**{**presets[preset], **{k: v for k, v in overrides.items() if v is not None}})
