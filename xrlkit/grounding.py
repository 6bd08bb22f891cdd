"""Object grounding of saliency maps: do explanations point at the game's objects?

Boxes are ``(x, y, w, h)`` tuples in pixels of some screen (left, top, width, height), as
OCAtari's ``GameObject.xywh``. The raw ALE screen is 210 (rows) x 160 (columns); the agent sees it
resized to 84x84, so :func:`scale_boxes` maps ``x * 84/160`` and ``y * 84/210``.

The scoring functions take plain boxes and need nothing beyond torch. Boxes of the real game
objects come from OCAtari's RAM extraction (:class:`ObjectDetector`), an optional dependency:
OCAtari pins ``numpy<2``, so it lives in its own environment, ``environment-objects.yml``. There,
``scripts/object_boxes.py`` plays an agent over whole games and stores states with their boxes in
``xrlkit/data/objects/{game}.npz`` (:func:`record_object_states`, :func:`save_object_states`);
the main environment reads them with :func:`load_object_states` and scores any map with
:func:`grounding_table`.
"""

from __future__ import annotations

import math
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xrlkit.shapes import FRAME_SHAPE, FRAME_STACK, OBS_SHAPE

Box = tuple[float, float, float, float]
SCREEN_SIZE = (210, 160)  # raw ALE screen, (rows, columns)
#: where the shipped object-box files live, one ``{game}.npz`` per game
OBJECTS_DIR = Path(__file__).resolve().parent / "data" / "objects"
#: object categories that tile much of the screen (MsPacman's pills, Breakout's bricks): with them
#: in the boxes, almost any map lands "on an object", so grounding leaves them out by default
CROWD_LABELS = ("Pill", "Block")


def scale_boxes(boxes: Sequence[Box], from_size: tuple[int, int] = SCREEN_SIZE,
                to_size: tuple[int, int] = FRAME_SHAPE) -> list[Box]:
    """Map ``(x, y, w, h)`` boxes from a ``from_size = (rows, cols)`` image to ``to_size``."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return [(x * sx, y * sy, w * sx, h * sy) for x, y, w, h in boxes]


def boxes_mask(boxes: Sequence[Box], size: tuple[int, int] = FRAME_SHAPE, tolerance: float = 0.0) -> torch.Tensor:
    """``bool [rows, cols]``: pixels whose cell ``[c, c+1) x [r, r+1)`` overlaps any box grown by
    ``tolerance`` px on every side (boxes already in the coordinates of ``size``)."""
    mask = torch.zeros(size, dtype=torch.bool)
    for x, y, w, h in boxes:
        if w < 0 or h < 0:
            raise ValueError(f"box {(x, y, w, h)} has a negative width or height")
        c0, r0 = max(0, math.floor(x - tolerance)), max(0, math.floor(y - tolerance))
        c1, r1 = min(size[1], math.ceil(x + w + tolerance)), min(size[0], math.ceil(y + h + tolerance))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def _check(saliency: np.ndarray | torch.Tensor, boxes: Sequence[Sequence[Box]]) -> torch.Tensor:
    sal = torch.as_tensor(saliency).detach().float().cpu()
    if sal.ndim != 3:
        raise ValueError(f"expected saliency [B, H, W], got shape {tuple(sal.shape)}")
    if len(boxes) != len(sal):
        raise ValueError(f"{len(boxes)} box lists for {len(sal)} saliency maps (need one list per state)")
    return sal


def pointing_game(saliency: np.ndarray | torch.Tensor, boxes: Sequence[Sequence[Box]],
                  tolerance: float = 1.0) -> np.ndarray:
    """Pointing game (Zhang et al. 2018) per state: 1.0 if the saliency argmax lies in one of the
    state's boxes grown by ``tolerance`` px, else 0.0; where several pixels share the maximum, the
    share of them inside the boxes (the expected hit of a random pick among them: raster order
    would favour the top of the screen); NaN for states without boxes. ``saliency [B, H, W]``; ``boxes[b]`` in the same pixel coordinates (use
    :func:`scale_boxes` for OCAtari boxes). Returns ``float64 [B]``."""
    sal = _check(saliency, boxes)
    out = np.full(len(sal), np.nan)
    for b, (m, bx) in enumerate(zip(sal, boxes)):
        if len(bx):
            peaks = m == m.max()
            out[b] = float(boxes_mask(bx, tuple(m.shape), tolerance)[peaks].double().mean())
    return out


def mass_in_objects(saliency: np.ndarray | torch.Tensor, boxes: Sequence[Sequence[Box]],
                    tolerance: float = 0.0) -> np.ndarray:
    """Share of each map's total saliency inside the union of its boxes (grown by ``tolerance``),
    in [0, 1]; NaN for states without boxes or with an all-zero map. Returns ``float64 [B]``."""
    sal = _check(saliency, boxes)
    if (sal < 0).any():
        raise ValueError("saliency must be non-negative")
    out = np.full(len(sal), np.nan)
    for b, (m, bx) in enumerate(zip(sal, boxes)):
        total = float(m.sum())
        if len(bx) and total > 0:
            out[b] = float(m[boxes_mask(bx, tuple(m.shape), tolerance)].sum()) / total
    return out


def iou_top(saliency: np.ndarray | torch.Tensor, boxes: Sequence[Sequence[Box]],
            tolerance: float = 0.0) -> np.ndarray:
    """Per state, the intersection over union of the map's top-k pixels with the union of the
    boxes (grown by ``tolerance``), where ``k`` is the boxes' own pixel count: a map that ranks
    exactly the box pixels first scores 1.0. Pixels tied with the k-th value all join the top
    region, so a constant map gets the boxes' share of the screen, not a lucky raster-order pick.
    NaN for states without boxes. Returns ``float64 [B]``."""
    sal = _check(saliency, boxes)
    out = np.full(len(sal), np.nan)
    for b, (m, bx) in enumerate(zip(sal, boxes)):
        inside = boxes_mask(bx, tuple(m.shape), tolerance)
        k = int(inside.sum())
        if k:
            top = m >= m.flatten().topk(k).values[-1]
            out[b] = float((top & inside).sum()) / float((top | inside).sum())
    return out


#: the grounding measures of :func:`grounding_table`, each ``f(saliency, boxes) -> float64 [B]``
GROUNDING_MEASURES = {"pointing": pointing_game, "mass_in_boxes": mass_in_objects, "iou_topk": iou_top}


def grounding_table(maps: Mapping[str, np.ndarray | torch.Tensor], boxes: Sequence[Sequence[Box]], *,
                    game: str = "", baseline: str = "random", seed: int = 0) -> Any:
    """Every map set in ``maps`` (``method name -> saliency [N, H, W]``, non-negative, one per state
    of ``boxes``) scored by every measure of :data:`GROUNDING_MEASURES`.

    Returns a long table, one row per (method, measure): ``game``, ``method``, ``measure``,
    ``mean`` over the states where the measure is defined, its 95% bootstrap interval
    ``ci_low`` / ``ci_high``, ``n_states`` and, where ``maps`` holds a ``baseline`` method (a
    random map: chance), ``beats_random``: whether the 95% interval of the per-state difference
    to it lies above 0 (empty for the baseline itself)."""
    import pandas as pd

    from xrlkit.metrics import mean_ci

    rows = []
    for measure, score in GROUNDING_MEASURES.items():
        values = {method: score(sal, boxes) for method, sal in maps.items()}
        for method, v in values.items():
            defined = v[~np.isnan(v)]
            if not len(defined):
                raise ValueError(f"{method}: no state has boxes (or a non-zero map) to score {measure} on")
            low, high = mean_ci(defined, seed=seed)
            row = {"game": game, "method": method, "measure": measure, "mean": float(defined.mean()),
                   "ci_low": low, "ci_high": high, "n_states": len(defined)}
            if baseline in values and method != baseline:
                diff = v - values[baseline]
                row["beats_random"] = bool(mean_ci(diff[~np.isnan(diff)], seed=seed)[0] > 0)
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class ObjectStates:
    """States with the boxes of the objects in their stacked frames.

    ``states uint8 [N, 4, 84, 84]``; ``boxes[i]`` the ``(x, y, w, h)`` boxes of state ``i`` in
    84x84 pixels, ``labels[i]`` their OCAtari categories (``"Ball"``, ``"Player"``, ...) and
    ``ages[i]`` which frame of the stack each box is from (0: the newest, 3: the oldest): a map
    of stacked frames may rightly point at where the ball was three frames ago; ``meta``: how
    they were made (game, agent, seeds, command, OCAtari version)."""

    states: np.ndarray
    boxes: list[list[Box]]
    labels: list[list[str]]
    ages: list[list[int]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.states.ndim != 4 or self.states.shape[1:] != OBS_SHAPE or self.states.dtype != np.uint8:
            raise ValueError(f"states must be uint8 [N, {', '.join(map(str, OBS_SHAPE))}], "
                             f"got {self.states.dtype} {tuple(self.states.shape)}")
        if not len(self.states) == len(self.boxes) == len(self.labels) == len(self.ages):
            raise ValueError(f"{len(self.states)} states, {len(self.boxes)} box lists, {len(self.labels)} label lists, "
                             f"{len(self.ages)} age lists")

    def spread(self, n_states: int, ignore: Sequence[str] = CROWD_LABELS) -> tuple[np.ndarray, list[list[Box]], list[str]]:
        """At most ``n_states`` states evenly spaced over the stored ones (so over whole games),
        their boxes without the ``ignore`` categories, and the categories kept (sorted)."""
        pick = np.unique(np.linspace(0, len(self.states) - 1, min(n_states, len(self.states))).round().astype(int))
        kept = sorted({lab for lb in self.labels for lab in lb} - set(ignore))
        boxes = self.only(kept)
        return self.states[pick], [boxes[i] for i in pick], kept

    def only(self, labels: Sequence[str] | None = None, max_age: int = FRAME_STACK - 1) -> list[list[Box]]:
        """Per state, the boxes of the objects whose category is in ``labels`` (default: all) in
        the newest ``max_age + 1`` frames of the stack (``max_age=0``: the newest frame only)."""
        return [[b for b, lab, age in zip(bx, lb, ag) if (labels is None or lab in labels) and age <= max_age]
                for bx, lb, ag in zip(self.boxes, self.labels, self.ages)]


def save_object_states(path: str | Path, objects: ObjectStates) -> Path:
    """Write ``objects`` as one compressed ``.npz`` (boxes flattened with their state index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = [(i, *b) for i, bx in enumerate(objects.boxes) for b in bx]
    names = sorted({lab for lb in objects.labels for lab in lb})
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(
        tmp, states=objects.states, box_state=np.array([f[0] for f in flat], dtype=np.int32),
        box_xywh=np.array([f[1:] for f in flat], dtype=np.float32).reshape(-1, 4),
        box_label=np.array([names.index(lab) for lb in objects.labels for lab in lb], dtype=np.int16),
        box_age=np.array([age for ag in objects.ages for age in ag], dtype=np.int8),
        label_names=np.array(names), meta=np.array(json.dumps(objects.meta)),
    )
    tmp.replace(path)
    return path


def load_object_states(game_or_path: str | Path) -> ObjectStates:
    """The states and object boxes shipped for a game (``xrlkit/data/objects/{game}.npz``) or
    stored at a path by :func:`save_object_states`."""
    from xrlkit.games import resolve_game

    text = str(game_or_path)
    path = Path(text) if text.endswith(".npz") else OBJECTS_DIR / f"{resolve_game(text)}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"no object boxes at {path}: make them in the objects environment (environment-objects.yml) with "
            f"`python scripts/object_boxes.py --game GAME`")
    try:
        with np.load(path) as d:
            states, index, xywh, label, age = d["states"], d["box_state"], d["box_xywh"], d["box_label"], d["box_age"]
            names, meta = [str(n) for n in d["label_names"]], json.loads(str(d["meta"]))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not an object-box file ({err})") from err
    boxes: list[list[Box]] = [[] for _ in range(len(states))]
    labels: list[list[str]] = [[] for _ in range(len(states))]
    ages: list[list[int]] = [[] for _ in range(len(states))]
    for i, b, lab, a in zip(index, xywh, label, age):
        boxes[i].append(tuple(float(v) for v in b))
        labels[i].append(names[lab])
        ages[i].append(int(a))
    return ObjectStates(states, boxes, labels, ages, meta)


def record_object_states(agent: Any, game: str, n_states: int, *, every: int = 16, protocol: str = "ifepaper",
                         seed: int = 0, hud: bool = False) -> ObjectStates:
    """Play ``agent`` (its ``act``) over whole games of ``game`` from ``seed`` on and keep every
    ``every``-th step with at least one object box until ``n_states`` are kept, so the states
    span early and late game. Each state gets the boxes of all four stacked frames, with their
    age. Needs OCAtari (:class:`ObjectDetector`): run it in the objects environment. Boxes are
    stored in 84x84 pixels (:func:`scale_boxes`)."""
    from xrlkit.envs import make_env

    if n_states < 1 or every < 1:
        raise ValueError(f"n_states and every must be >= 1, got {n_states} and {every}")
    detect = ObjectDetector(game, hud)
    states: list[np.ndarray] = []
    boxes: list[list[Box]] = []
    labels: list[list[str]] = []
    ages: list[list[int]] = []
    episode = 0
    while len(states) < n_states:
        env = make_env(game, protocol, seed=seed + episode)
        obs, _ = env.reset(seed=seed + episode)
        detect.reset()
        stack: deque[list[tuple[str, Box]]] = deque(maxlen=FRAME_STACK)  # newest first
        step, done = 0, False
        while not done and len(states) < n_states:
            stack.appendleft(detect.labelled(env))
            if step % every == 0 and stack[0]:
                found = [(age, lab, box) for age, frame in enumerate(stack) for lab, box in frame]
                states.append(np.asarray(obs, dtype=np.uint8).copy())
                ages.append([age for age, _, _ in found])
                labels.append([lab for _, lab, _ in found])
                boxes.append(scale_boxes([box for _, _, box in found]))
            obs, _, terminated, truncated, _ = env.step(int(agent.act(np.asarray(obs)[None])[0]))
            done, step = terminated or truncated, step + 1
        env.close()
        episode += 1
    return ObjectStates(np.stack(states), boxes, labels, ages, {"game": detect.game, "every": every, "protocol": protocol,
                                                          "seeds": [seed, seed + episode - 1], "hud": hud})


class ObjectDetector:
    """Object boxes of a running game from its RAM, with OCAtari's per-game RAM extraction.

    ``detector(env)`` reads the emulator RAM of ``env`` (any gymnasium ALE env, e.g. from
    :func:`xrlkit.envs.make_env`, whose screen is the same emulator's) and returns the visible
    objects' boxes in 210x160 screen pixels; call it after every step (OCAtari tracks objects
    between frames), and use :func:`scale_boxes` for the 84x84 maps. ``hud`` adds score / lives
    objects. Needs OCAtari (``environment-objects.yml``): raises ``ImportError`` otherwise.
    """

    def __init__(self, game: str, hud: bool = False) -> None:
        try:
            from ocatari.ram.extract_ram_info import detect_objects_ram, init_objects
        except ImportError as err:
            raise ImportError(
                "object grounding needs OCAtari, which pins numpy<2: create its own environment with "
                "`conda env create -f environment-objects.yml` (see xrlkit.grounding)"
            ) from err
        from xrlkit.games import resolve_game

        self.game, self.hud = resolve_game(game), hud
        self._detect, self._init = detect_objects_ram, init_objects
        self.reset()

    def reset(self) -> None:
        """Forget the tracked objects (call at the start of each game)."""
        self._objects = self._init(self.game, self.hud)

    def labelled(self, env: Any) -> list[tuple[str, Box]]:
        """``(category, box)`` of every visible object, boxes in 210x160 screen pixels."""
        ram = np.asarray(env.unwrapped.ale.getRAM())
        self._detect(self._objects, ram, self.game, self.hud)
        return [(o.category, tuple(float(v) for v in o.xywh)) for o in self._objects
                if o and o.w > 0 and o.h > 0]  # falsy: None, NoObject or invisible

    def __call__(self, env: Any) -> list[Box]:
        return [box for _, box in self.labelled(env)]
