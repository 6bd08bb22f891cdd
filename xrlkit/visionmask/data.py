"""State datasets for training and evaluating VisionMask.

:func:`collect_states` rolls an agent out (by its ``act_mode``, epsilon-greedy) and stores, per state, the
stacked frames ``uint8 [4, 84, 84]``, the raw RGB screen ``uint8 [H, W, 3]`` (Atari 210x160), the agent's
logits ``float32 [A]``, its greedy action (``actions``, the argmax of the logits: the action to
explain) and the action actually taken (``taken``; differs from ``actions`` under epsilon or
when a policy agent samples its actions).

On-disk layout of a dataset directory (no pickle anywhere)::

    meta.json                     collection settings (game, agent identity, epsilon, seed, ...)
    index.json                    every finished shard: file, split, episode, n, sha256
    {train,val,test}/ep00012-003.npz   compressed shards; keys states, frames, logits,
                                  actions, taken, episode, step

Splits are by episode, so consecutive (near-identical) states never straddle train and test.
Each new episode goes to the split furthest below its target share (default 80/10/10 % of the
states collected so far, ties in train, val, test order), so the shares stay close to the
targets while every episode lies in one split. Episodes are cut after ``max_episode_steps``
agent steps (a stuck greedy agent would otherwise fill the dataset with one episode), and the
last episode is cut when ``n_states`` is reached. With ``every = k`` only every k-th state is
kept (the agent still acts at every step), so a dataset of a given size spans more of each
episode, late game included, with fewer near-duplicate neighbours.

Shards are written atomically as they fill, each followed by its index entry, so an interrupted
collection loses at most one partial shard (the interrupted episode is kept up to its last
complete shard); re-running with the same settings (and a possibly larger ``n_states``)
continues with the next episode. Episode ``e`` is reset with seed ``seed + e`` and explores with
its own RNG, so each episode's states do not depend on what was collected before it.

Every shard is checked when written (re-read, and the agent's action recomputed from the stored
uint8 states must equal the stored action) and every load checks the SHA-256 of each shard
(a corrupted file is a clear ``ValueError``); pass ``agent`` to :class:`StateDataset` to
recompute the actions again.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from xrlkit.agents.base import choose_actions
from xrlkit.envs import make_env, rgb_frame
from xrlkit.games import resolve_game
from xrlkit.registry import choose
from xrlkit.checkpoint import file_sha256

SPLITS = ("train", "val", "test")
FORMAT = "xrlkit-visionmask-states/1"
SHARD_KEYS = {
    # frames: the world's own RGB screen (Atari 210x160, ViZDoom 240x320, highway-env 150x600)
    "states": (np.uint8, (4, 84, 84)), "frames": (np.uint8, (None, None, 3)), "logits": (np.float32, None),
    "actions": (np.int64, ()), "taken": (np.int64, ()), "episode": (np.int64, ()), "step": (np.int64, ()),
}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is missing or not valid JSON ({err})") from err


@torch.no_grad()
def check_actions(agent: Any, states: np.ndarray, actions: np.ndarray, batch_size: int = 256, atol: float = 1e-4, where: str = "") -> None:
    """Raise ``ValueError`` unless the agent's greedy action on each of ``states [N, 4, 84, 84]``
    equals ``actions [N]``. A differing argmax is tolerated only for a near tie (the stored
    action's recomputed logit within ``atol`` of the maximum: float noise across batch sizes)."""
    bad: list[int] = []
    for i in range(0, len(states), batch_size):
        logits = agent.logits(states[i : i + batch_size]).float().cpu()
        stored = torch.as_tensor(actions[i : i + batch_size]).long()
        gap = logits.max(dim=1).values - logits.gather(1, stored[:, None]).squeeze(1)
        bad += (i + torch.nonzero(gap > atol).flatten()).tolist()
    if bad:
        raise ValueError(
            f"{where or 'states'}: the agent's recomputed action differs from the stored one for "
            f"{len(bad)} of {len(states)} states (first indices {bad[:5]}); wrong agent or corrupted data"
        )


def load_shard(path: Path, sha256: str | None = None, keys: tuple[str, ...] = tuple(SHARD_KEYS)) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of one shard, checked against ``sha256`` (if given), dtypes and shapes."""
    if not path.is_file():
        raise ValueError(f"dataset shard {path} is missing")
    if sha256 is not None and file_sha256(path) != sha256:
        raise ValueError(f"dataset shard {path} is corrupted (SHA-256 differs from index.json)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"dataset shard {path} is unreadable or incomplete ({err})") from err
    n = len(arrays[keys[0]])
    for k, arr in arrays.items():
        dtype, shape = SHARD_KEYS[k]
        fits = shape is None or (arr.ndim == len(shape) + 1 and all(s in (None, a) for s, a in zip(shape, arr.shape[1:])))
        if arr.dtype != dtype or len(arr) != n or not fits:
            want = "any" if shape is None else "[N, " + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"dataset shard {path}: array {k!r} has dtype {arr.dtype} shape {arr.shape}; "
                             f"expected {np.dtype(dtype)} {want} with N = {n}")
    return arrays


def _choose_split(counts: dict[str, int], fractions: tuple[float, float, float]) -> str:
    total = sum(counts.values()) + 1
    deficits = [f * total - counts[s] for s, f in zip(SPLITS, fractions)]
    return SPLITS[int(np.argmax(deficits))]


def collect_states(
    agent: Any,
    game: str,
    n_states: int,
    out_dir: str | Path,
    *,
    epsilon: float = 0.0,
    seed: int = 0,
    protocol: str = "ifepaper",
    max_episode_steps: int = 1000,
    every: int = 1,
    shard_size: int = 256,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    agent_id: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Roll ``agent`` out on ``game`` until ``out_dir`` holds ``n_states`` states (resumable).

    Returns ``out_dir``. A directory collected with other settings is refused (``ValueError``).
    """
    if min(n_states, shard_size, max_episode_steps, every) < 1:
        raise ValueError("n_states, shard_size, max_episode_steps and every must be >= 1")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three shares summing to 1, got {fractions}")
    root = Path(out_dir)
    settings = {
        "format": FORMAT, "game": resolve_game(game), "protocol": protocol, "epsilon": epsilon, "seed": seed,
        "max_episode_steps": max_episode_steps, "every": every, "shard_size": shard_size, "fractions": list(fractions),
        "act_mode": getattr(agent, "act_mode", "greedy"), "n_actions": int(agent.n_actions),
        "action_meanings": list(agent.action_meanings), "agent": agent_id or {},
    }
    meta_path, index_path = root / "meta.json", root / "index.json"
    if meta_path.exists():
        old = _read_json(meta_path)
        old.setdefault("every", 1)  # datasets collected before ``every`` existed kept every state
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise ValueError(f"{root} was collected with other settings ({', '.join(diff)}); use a new directory")
    root.mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, {**settings, "n_states": n_states})
    index = _read_json(index_path) if index_path.exists() else {"shards": []}
    counts = {s: sum(e["n"] for e in index["shards"] if e["split"] == s) for s in SPLITS}
    total = sum(counts.values())
    episode = 1 + max((e["episode"] for e in index["shards"]), default=-1)
    env = make_env(game, protocol)
    bar = tqdm(total=n_states, initial=min(total, n_states), desc=f"collect {settings['game']}", disable=not progress)
    try:
        while total < n_states:
            split = _choose_split(counts, fractions)
            rng = np.random.default_rng([seed, episode])
            obs, _ = env.reset(seed=seed + episode)
            buf: dict[str, list[Any]] = {k: [] for k in SHARD_KEYS}
            part, step, done = 0, 0, False
            while not done:
                with torch.no_grad():
                    logits = agent.logits(obs[None]).float().cpu()
                taken = int(choose_actions(logits, epsilon, rng, settings["act_mode"])[0])
                if step % every == 0:
                    for k, v in (("states", obs), ("frames", rgb_frame(env)), ("logits", logits[0].numpy()),
                                 ("actions", int(logits[0].argmax())), ("taken", taken), ("episode", episode), ("step", step)):
                        buf[k].append(v)
                    total += 1
                    bar.update(1)
                obs, _, term, trunc, _ = env.step(taken)
                step += 1
                done = term or trunc or step >= max_episode_steps or total >= n_states
                if len(buf["states"]) == shard_size or (done and buf["states"]):
                    entry = _write_shard(root, split, episode, part, buf, agent)
                    index["shards"].append(entry)
                    _write_json(index_path, index)
                    counts[split] += entry["n"]
                    buf = {k: [] for k in SHARD_KEYS}
                    part += 1
            episode += 1
    finally:
        bar.close()
        env.close()
    return root


def _write_shard(root: Path, split: str, episode: int, part: int, buf: dict[str, list[Any]], agent: Any) -> dict[str, Any]:
    """Write one shard atomically, re-read it and check the stored actions; its index entry."""
    arrays = {k: np.asarray(v, dtype=SHARD_KEYS[k][0]) for k, v in buf.items()}
    rel = f"{split}/ep{episode:05d}-{part:03d}.npz"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    back = load_shard(path, keys=("states", "actions"))
    check_actions(agent, back["states"], back["actions"], where=str(path))
    return {"file": rel, "split": split, "episode": episode, "n": len(arrays["states"]), "sha256": file_sha256(path)}


def dataset_meta(root: str | Path) -> dict[str, Any]:
    """The collection settings (``meta.json``) of a dataset directory."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a VisionMask state dataset (no meta.json); make one with "
                                "'xrlkit visionmask collect' (in a study, notebook 3 does: --notebooks 3,4)")
    meta = _read_json(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown dataset format {meta.get('format')!r}")
    return meta


class StateDataset(Dataset):
    """One split of a collected dataset, held in memory.

    Item ``i`` is a dict: ``state`` uint8 ``[4, 84, 84]``, ``action`` int64 (the agent's greedy
    action), ``logits`` float32 ``[A]``, plus ``frame`` uint8 ``[H, W, 3]`` (the screen) if
    ``load_frames``. Attributes ``states``, ``actions``, ``logits`` (and ``frames``) hold the
    whole split as numpy arrays; ``episodes`` and ``steps`` (int64 ``[N]``) say where each state
    was met: the collection's episode number and the agent steps into that episode. Every shard's
    SHA-256 is checked; with ``agent`` the actions are recomputed and compared too (``ValueError``
    on any mismatch).
    """

    def __init__(self, root: str | Path, split: str = "train", agent: Any = None, load_frames: bool = False) -> None:
        choose("split", split, SPLITS)
        self.root = Path(root)
        self.meta = dataset_meta(self.root)
        self.split = split
        entries = [e for e in _read_json(self.root / "index.json")["shards"] if e["split"] == split]
        keys = ("states", "actions", "logits", "episode", "step") + (("frames",) if load_frames else ())
        shards = [load_shard(self.root / e["file"], e["sha256"], keys) for e in entries]
        n_actions = int(self.meta["n_actions"])
        self.states = np.concatenate([s["states"] for s in shards]) if shards else np.zeros((0, 4, 84, 84), np.uint8)
        self.actions = np.concatenate([s["actions"] for s in shards]) if shards else np.zeros(0, np.int64)
        self.logits = np.concatenate([s["logits"] for s in shards]) if shards else np.zeros((0, n_actions), np.float32)
        self.episodes, self.steps = (np.concatenate([s[k] for s in shards]) if shards else np.zeros(0, np.int64)
                                     for k in ("episode", "step"))
        self.frames = (
            (np.concatenate([s["frames"] for s in shards]) if shards else np.zeros((0, 210, 160, 3), np.uint8))
            if load_frames else None
        )
        if self.logits.shape[1:] != (n_actions,) or (len(self.actions) and self.actions.max() >= n_actions):
            raise ValueError(f"{self.root}: stored logits/actions do not match n_actions={n_actions}")
        if agent is not None:
            if int(agent.n_actions) != n_actions:
                raise ValueError(f"{self.root} was collected for {n_actions} actions, the agent has {agent.n_actions}")
            check_actions(agent, self.states, self.actions, where=f"{self.root} [{split}]")

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"state": torch.from_numpy(self.states[i]), "action": int(self.actions[i]), "logits": torch.from_numpy(self.logits[i])}
        if self.frames is not None:
            item["frame"] = torch.from_numpy(self.frames[i])
        return item
