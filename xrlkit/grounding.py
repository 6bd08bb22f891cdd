"""Object grounding of saliency maps: do explanations point at the game's objects?

Boxes are ``(x, y, w, h)`` tuples in pixels of some screen (left, top, width, height), as
OCAtari's ``GameObject.xywh``. The raw ALE screen is 210 (rows) x 160 (columns); the agent sees it
resized to 84x84, so :func:`scale_boxes` maps ``x * 84/160`` and ``y * 84/210``.

The scoring functions take plain boxes and need nothing beyond torch. Boxes of the real game
objects come from OCAtari's RAM extraction (:class:`ObjectDetector`), an optional dependency:
OCAtari pins ``numpy<2``, so install it in its own environment, ``environment-objects.yml``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xrlkit.shapes import FRAME_SHAPE

Box = tuple[float, float, float, float]
SCREEN_SIZE = (210, 160)  # raw ALE screen, (rows, columns)


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
        self._detect = detect_objects_ram
        self._objects = init_objects(self.game, hud)

    def __call__(self, env: Any) -> list[Box]:
        ram = np.asarray(env.unwrapped.ale.getRAM())
        self._detect(self._objects, ram, self.game, self.hud)
        return [tuple(float(v) for v in o.xywh) for o in self._objects
                if o and o.w > 0 and o.h > 0]  # falsy: None, NoObject or invisible
