"""Shipped models and where the study notebooks find their agent and explainer.

Trained models that ship with xrlkit live in ``xrlkit/data/models`` and are listed in its
``manifest.json``: one entry per file with ``game``, ``role`` (``expert``: the agent that is
explained; ``ife``: an agent with the IFE encoder; ``visionmask``: the VisionMask model of the
game's expert), ``file``, the ``command`` that produced it and what it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xrlkit.games import resolve_game

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
ROLES = ("expert", "ife", "visionmask")


def shipped_models() -> list[dict[str, Any]]:
    """The manifest entries of every shipped model (empty when none ship)."""
    manifest = MODELS_DIR / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


def shipped(game: str, role: str) -> Path | None:
    """Path of the shipped model of ``role`` for ``game``, or ``None`` if none ships."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
    game = resolve_game(game)
    for entry in shipped_models():
        if entry["game"] == game and entry["role"] == role:
            return MODELS_DIR / entry["file"]
    return None


def find_model(game: str, role: str, out_dir: str | Path, trained_name: str) -> Path:
    """The model a notebook should use: the shipped one for ``game`` / ``role`` if there is one,
    else ``out_dir/trained_name`` (made by an earlier notebook). Clear error if neither exists."""
    path = shipped(game, role)
    if path is not None:
        return path
    trained = Path(out_dir) / trained_name
    if trained.exists():
        return trained
    raise FileNotFoundError(
        f"no shipped {role} model for {resolve_game(game)} and none trained at {trained}; "
        "run the earlier study notebooks first (xrlkit study runs them in order)"
    )
