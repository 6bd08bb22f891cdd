"""Agent checkpoints: weights in safetensors, metadata as JSON in the same file's header.

A checkpoint is one ``.safetensors`` file. Its header metadata key ``"xrlkit"`` holds a JSON
object with at least ``kind`` (which agent class), ``config`` (constructor arguments),
``game``, ``n_actions`` and ``action_meanings``, plus anything the writer adds (protocol,
preset, steps, library versions, the command that produced it). Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

import xrlkit
from xrlkit.agents.policy import PolicyAgent, PolicyConfig
from xrlkit.agents.qnet import QAgent, QNetConfig
from xrlkit.games import resolve_game

META_KEY = "xrlkit"
#: the scales of an int8-stored tensor ([rows, groups], :func:`quantize_int8`) are stored beside it under this suffix
INT8_SCALE = ".int8_scale"
#: consecutive weights of a row that share one int8 scale (:func:`quantize_int8`)
INT8_GROUP = 64
#: an agent stored in int8 keeps weights with fewer entries than this in float16: int8 goes to
#: its fully connected layers (over 90% of its weights), not to the small convs that see the
#: 0-255 screen, where int8 moved a distilled Seaquest IFE agent's logits by up to 0.05 each
AGENT_INT8_MIN_NUMEL = 2**16
#: a VisionMask stored in int8 keeps weights with fewer entries than this in float16: its first
#: conv and the small depthwise convs, where int8 moved the Enduro model's masks by 0.056 (over the
#: 0.05 bound) and float16 for them (1% of the file) brings that to 0.017
VISIONMASK_INT8_MIN_NUMEL = 2**12


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for provenance."""
    import ale_py
    import gymnasium
    import numpy

    return {
        "xrlkit": xrlkit.__version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
        "ale_py": ale_py.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
    }


def command_line() -> str:
    """The command that started this process, for provenance: ``xrlkit ...`` for the command line
    (also after :func:`xrlkit.runtime.reexec_with_allocator` re-ran it as ``python -m xrlkit.cli``)."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    head = ["xrlkit"] if argv0 in ("xrlkit", "cli.py", "__main__.py") else [sys.argv[0]] if sys.argv else []
    return shlex.join(head + sys.argv[1:])


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: how provenance names a checkpoint (the agent a VisionMask explains,
    a student's teacher, the parent of a warm start, the data shards it read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def agent_identity(agent: Any, path: str | Path | None = None) -> dict[str, Any]:
    """What identifies an agent in provenance (the agent a VisionMask explains, the teacher of a
    student or of a kickstarted PPO run, the agent whose states were boxed): its class, action count
    and, when it was loaded from a file, the file's path and SHA-256 (for a scripted agent, its name)."""
    ident: dict[str, Any] = {"class": type(agent).__name__, "n_actions": int(agent.n_actions)}
    if path is not None and Path(path).is_file():
        ident.update(path=str(path), sha256=file_sha256(path))
    elif path is not None:
        ident["name"] = str(path)
    return ident


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to one safetensors file, atomically:
    into a temporary file beside it, then renamed over it, so a kill mid-write leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "versions": meta.get("versions", library_versions())}
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(cpu, str(tmp), metadata={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of an xrlkit safetensors file; clear ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({err})") from err
    if META_KEY not in header:
        raise ValueError(f"{path} has no xrlkit metadata; was it written by xrlkit?")
    return json.loads(header[META_KEY])


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of an xrlkit safetensors file; a file stored with
    ``stored_dtype: int8`` (:func:`quantize_int8`) comes back as float32."""
    meta = read_meta(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is corrupt ({err})") from err
    if meta.get("stored_dtype") == "int8":
        tensors = dequantize_int8(tensors)
    return tensors, meta


def quantize_int8(tensors: dict[str, torch.Tensor], min_numel: int = 0) -> dict[str, torch.Tensor]:
    """Weight-only int8 for storage (a quarter of float32, half of float16): every float tensor
    with two or more dims (conv and linear weights) and at least ``min_numel`` entries becomes
    int8, symmetric, each row (output channel) cut into groups of ``INT8_GROUP`` consecutive
    entries with one float32 scale each (a group's largest ``|w|`` maps to 127; a row that
    ``INT8_GROUP`` does not divide is one group), the scales ``[rows, groups]`` stored under
    ``name + INT8_SCALE``; other float tensors (biases, norms, small weights) become float16,
    the rest stays. Save the result with ``stored_dtype: "int8"`` in the metadata, so
    :func:`load_tensors` restores float32. Groups, as in weight-only int8 for language models,
    keep one large weight from coarsening a whole row: on the shipped Pong CNN-with-attention
    student they halve the logit change of its 3136-wide layer (0.045 -> 0.020)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = t
        elif t.dim() < 2 or t.numel() < min_numel:
            out[name] = t.half()
        else:
            rows = t.detach().float().reshape(t.shape[0], -1)
            group = INT8_GROUP if rows.shape[1] % INT8_GROUP == 0 else rows.shape[1]
            groups = rows.reshape(rows.shape[0], -1, group)
            scale = (groups.abs().amax(dim=2, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            out[name] = torch.round(groups / scale).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[name + INT8_SCALE] = scale[..., 0]
    return out


def dequantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 tensors of :func:`quantize_int8`'s output (also of files written before
    groups, whose scales are one per row, ``[rows]``)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(INT8_SCALE):
            continue
        scale = tensors.get(name + INT8_SCALE)
        if scale is not None:
            scale = scale.float().reshape(t.shape[0], -1)
            groups = t.float().reshape(t.shape[0], scale.shape[1], -1)
            out[name] = (groups * scale[..., None]).reshape(t.shape)
        else:
            out[name] = t.float() if t.is_floating_point() else t
    return out


def check_compatible(meta: dict[str, Any], path: str | Path, game: str | None = None, n_actions: int | None = None) -> None:
    """Raise ``ValueError`` if a checkpoint was made for another game or action count."""
    if game is not None and resolve_game(game) != meta.get("game"):
        raise ValueError(f"{path} was trained on {meta.get('game')!r}, not {resolve_game(game)!r}")
    if n_actions is not None and n_actions != meta.get("n_actions"):
        raise ValueError(f"{path} has {meta.get('n_actions')} actions, but {n_actions} were expected")


#: agent kind stored in a checkpoint -> (agent class, its config class)
AGENT_KINDS: dict[str, tuple[type, type]] = {"q": (QAgent, QNetConfig), "policy": (PolicyAgent, PolicyConfig)}


def save_agent(agent: QAgent | PolicyAgent, path: str | Path, *, game: str, **meta: Any) -> Path:
    """Save a :class:`QAgent` or :class:`PolicyAgent` with its config, game and any extra
    metadata (steps, protocol, ...); a policy's ``act_mode`` is stored with it. With
    ``stored_dtype="int8"`` in the metadata the weights of ``AGENT_INT8_MIN_NUMEL`` entries or
    more are stored by :func:`quantize_int8`, the rest in float16 (:func:`load_agent` gives them
    back in float32)."""
    kind = next(k for k, (cls, _) in AGENT_KINDS.items() if isinstance(agent, cls))
    if kind == "policy":
        meta = {"act_mode": agent.act_mode, **meta}
    info = {
        "kind": kind, "config": agent.config_dict(), "game": resolve_game(game),
        "n_actions": agent.n_actions, "action_meanings": list(agent.action_meanings), **meta,
    }
    tensors = agent.state_dict()
    if meta.get("stored_dtype") == "int8":
        tensors = quantize_int8(tensors, min_numel=AGENT_INT8_MIN_NUMEL)
    return save_tensors(path, tensors, info)


def load_agent(
    path: str | Path, *, game: str | None = None, n_actions: int | None = None, device: str | torch.device = "cpu",
    act_mode: str | None = None,
) -> QAgent | PolicyAgent:
    """Load an agent saved by :func:`save_agent`, in eval mode on ``device``.

    ``game`` / ``n_actions``, when given, must match the checkpoint's, else ``ValueError``.
    ``act_mode`` overrides a policy's stored one; value-based agents only act greedily.
    """
    tensors, meta = load_tensors(path, device)
    check_compatible(meta, path, game, n_actions)
    kind = meta.get("kind")
    if kind not in AGENT_KINDS:
        raise ValueError(f"{path} holds a {kind!r} model, not an agent (kinds: {sorted(AGENT_KINDS)})")
    cls, config_cls = AGENT_KINDS[kind]
    agent = cls(meta["n_actions"], config_cls(**meta["config"]), tuple(meta["action_meanings"]))
    try:
        agent.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored config ({err})") from err
    mode = act_mode or meta.get("act_mode", "greedy")
    if kind == "policy":
        agent.act_mode = mode
    elif mode != "greedy":
        raise ValueError(f"{path} holds a value-based agent, which acts greedily; act_mode={mode!r} needs a policy")
    agent.meta = meta  # type: ignore[attr-defined]
    return agent.to(device).eval()


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim.") -> dict[str, torch.Tensor]:
    """The per-parameter state of ``optimizer`` (e.g. Adam's moments) as flat tensors
    ``{prefix}{param_index}.{slot}``, for :func:`save_tensors`; param groups are rebuilt by the
    caller's own optimizer, so only the state travels."""
    return {
        f"{prefix}{pid}.{slot}": torch.as_tensor(value)
        for pid, slots in optimizer.state_dict()["state"].items()
        for slot, value in slots.items()
    }


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str = "optim.") -> None:
    """Load the state written by :func:`optimizer_tensors` into ``optimizer`` (same parameters,
    same hyperparameters), ignoring tensors without ``prefix``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, slot = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
