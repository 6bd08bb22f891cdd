"""Shipped models and where the study notebooks find their agent and explainer.

Trained models that ship with xrlkit live in ``xrlkit/data/models`` and are listed in its
``manifest.json``: one entry per file with ``game``, ``role`` (``expert``: the agent that is
explained; ``second-seed``: the expert's recipe trained from another seed, to measure how
stable explanations are across agent seeds; ``ife`` and ``nature-attention``: agents with the IFE
encoder and with the CNN-with-attention baseline's, whose ``origin`` says whether RL or
distillation from the expert trained them;
``visionmask``: the VisionMask model of the game's expert), ``file``, the ``command`` that produced it and what it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xrlkit.games import resolve_game
from xrlkit.registry import choose

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
ROLES = ("expert", "second-seed", "ife", "nature-attention", "visionmask")


def shipped_models() -> list[dict[str, Any]]:
    """The manifest entries of every shipped model (empty when none ship)."""
    manifest = MODELS_DIR / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


def shipped(game: str, role: str) -> Path | None:
    """Path of the shipped model of ``role`` for ``game``, or ``None`` if none ships."""
    choose("role", role, ROLES)
    game = resolve_game(game)
    for entry in shipped_models():
        if entry["game"] == game and entry["role"] == role:
            return MODELS_DIR / entry["file"]
    return None


def model_path(spec: str | Path, game: str, role: str) -> str:
    """The checkpoint a command-line ``--agent`` / ``--visionmask`` value names: ``spec`` itself,
    or for ``"shipped"`` the game's shipped ``role`` model (``ValueError`` if none ships)."""
    if str(spec) != "shipped":
        return str(spec)
    path = shipped(game, role)
    if path is None:
        have = sorted({e["game"] for e in shipped_models() if e["role"] == role})
        raise ValueError(f"xrlkit ships no {role} model for {resolve_game(game)} (it ships one for: "
                         f"{', '.join(have) or 'no game'}); pass a checkpoint instead of 'shipped'")
    return str(path)


#: where the study notebooks put the models they train, per role, most preferred first:
#: notebook 1's PPO expert (trained when ``expert_frames > 0``), else its Rainbow agent with the
#: IFE encoder (a few hundred frames by default: a toy)
STUDY_TRAINED: dict[str, tuple[str, ...]] = {
    "expert": ("ppo-expert/agent.safetensors", "rainbow-ife/agent.safetensors"),
    "ife": ("rainbow-ife/agent.safetensors",),
}


def find_model(game: str, role: str, out_dir: str | Path) -> Path:
    """The model a study notebook should use: the shipped one for ``game`` / ``role`` if there
    is one, else the first of :data:`STUDY_TRAINED` that an earlier notebook made in ``out_dir``.
    Clear error if none exists."""
    path = shipped(game, role)
    if path is not None:
        return path
    candidates = [Path(out_dir) / name for name in STUDY_TRAINED[role]]
    for trained in candidates:
        if trained.exists():
            return trained
    raise FileNotFoundError(
        f"no shipped {role} model for {resolve_game(game)} and none trained at "
        f"{' or '.join(map(str, candidates))}; run the earlier study notebooks first (xrlkit study runs them in order)"
    )
