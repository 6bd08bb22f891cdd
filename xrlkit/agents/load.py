"""Load any agent checkpoint xrlkit knows, by file type."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from xrlkit.agents.base import Agent


def load_any_agent(path: str | Path, *, game: str | None = None, device: str | torch.device = "cpu",
                   act_mode: str | None = None) -> Agent:
    """An :class:`Agent` from an xrlkit ``.safetensors`` checkpoint, a Stable-Baselines3 ``.zip``, or
    the name of a scripted agent (:data:`xrlkit.agents.scripted.SCRIPTED`, e.g. ``pong-tracker``).

    ``game``, when given, must match the game the checkpoint was trained on. ``act_mode``
    (``"greedy"`` / ``"sample"``) overrides how a policy-gradient agent acts (default: as stored);
    value-based agents (xrlkit Rainbow, SB3 DQN) only act greedily.
    """
    from xrlkit.agents.scripted import SCRIPTED, make_scripted_agent

    if str(path) in SCRIPTED and not Path(path).exists():
        if act_mode not in (None, "greedy"):
            raise ValueError(f"the scripted agent {path} acts greedily; act_mode={act_mode!r} needs a policy")
        return make_scripted_agent(str(path), game)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path} (nor a scripted agent: {sorted(SCRIPTED)})")
    if path.suffix == ".zip":
        from xrlkit.agents.sb3 import load_sb3_agent

        return load_sb3_agent(path, game=game, device=device, act_mode=act_mode)
    from xrlkit.checkpoint import load_agent

    return load_agent(path, game=game, device=device, act_mode=act_mode)


def agent_protocol(agent: Agent) -> str:
    """The env protocol an agent was trained under, so it is evaluated and explained on what it
    saw: ``agent.meta["protocol"]`` when the checkpoint stored one, else ``rlzoo`` for
    Stable-Baselines3 agents (RL-Zoo's wrappers) and ``ifepaper`` for the rest."""
    meta = getattr(agent, "meta", None) or {}
    if "protocol" in meta:
        return str(meta["protocol"])
    from xrlkit.agents.sb3 import SB3Agent

    return "rlzoo" if isinstance(agent, SB3Agent) else "ifepaper"


def agent_origin(meta: Mapping[str, Any]) -> str:
    """How an agent learnt, from its checkpoint metadata or manifest entry: ``"distilled"`` (imitated
    a teacher, ``xrlkit distill``), ``"distilled+RL"`` (a student fine-tuned by reward: a PPO run
    started from it, ``xrlkit train --init-from``) or ``"RL"``."""
    if meta.get("origin") == "distilled":
        return "distilled"
    return "distilled+RL" if (meta.get("init_from") or {}).get("origin") == "distilled" else "RL"


def origin_description(meta: Mapping[str, Any]) -> str:
    """:func:`agent_origin` in words, naming the teacher or the student it started from where the
    metadata records them, e.g. ``"distilled from Pong-ppo-nature-expert.safetensors"``."""
    origin = agent_origin(meta)
    if origin == "distilled":
        return f"distilled from {Path((meta.get('teacher') or {}).get('path', 'its teacher')).name}"
    if origin == "distilled+RL":
        return (f"a distilled student ({meta['init_from']['file']}) fine-tuned by PPO for "
                f"{meta.get('frames_this_run', 0):,} frames")
    return "trained by RL"
