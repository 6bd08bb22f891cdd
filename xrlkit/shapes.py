"""The shapes every part of xrlkit agrees on: what an agent sees and what an explainer returns.

In every world (Atari, highway-env, ViZDoom) a state is ``FRAME_STACK`` gray frames of
``SCREEN_SIZE x SCREEN_SIZE`` pixels, ``uint8 [4, 84, 84]`` (:data:`OBS_SHAPE`), the newest
last; a saliency map, a mask or an attention map is one such frame, ``float [84, 84]``
(:data:`FRAME_SHAPE`).
"""

from __future__ import annotations

FRAME_STACK = 4
SCREEN_SIZE = 84
#: one gray frame, and every map explaining a state
FRAME_SHAPE = (SCREEN_SIZE, SCREEN_SIZE)
#: one stacked state
OBS_SHAPE = (FRAME_STACK, *FRAME_SHAPE)
