"""Reference states r: what a removed pixel is replaced with.

Masking explainers and faithfulness metrics replace "removed" pixels of a state s by a reference
r (VisionMask: x = m*s + (1-m)*r). All functions take and return float tensors
``[B, 4, 84, 84]`` in [0, 255].

Modes:
* ``black``: zeros;
* ``mean``: each frame's mean gray value, everywhere;
* ``blur``: the state blurred with a Gaussian (sigma 5 px by default, as in Greydanus et al.);
* ``background``: a per-game background image, the per-pixel median over many states
  (moving objects vanish, the static playfield stays); see :func:`estimate_background`.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

REFERENCE_MODES = ("black", "mean", "blur", "background")


def estimate_background(states: np.ndarray | torch.Tensor, max_states: int = 2048) -> torch.Tensor:
    """Per-pixel median over ``states [N, 4, 84, 84]`` (evenly subsampled to ``max_states``),
    as a float tensor ``[4, 84, 84]``. Use states from several episodes / times for a clean one."""
    t = torch.as_tensor(states)
    if t.ndim != 4:
        raise ValueError(f"expected states [N, 4, 84, 84], got shape {tuple(t.shape)}")
    if len(t) > max_states:
        t = t[torch.linspace(0, len(t) - 1, max_states).long()]
    return t.float().median(dim=0).values


def make_reference(
    states: torch.Tensor, mode: str = "black", background: torch.Tensor | None = None, sigma: float = 5.0
) -> torch.Tensor:
    """The reference ``r`` for each state in ``states [B, 4, 84, 84]`` (float, [0, 255])."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference mode {mode!r}; choose one of {REFERENCE_MODES}")
    states = states.float()
    if mode == "black":
        return torch.zeros_like(states)
    if mode == "mean":
        return states.mean(dim=(2, 3), keepdim=True).expand_as(states).clone()
    if mode == "blur":
        k = 2 * int(3 * sigma) + 1
        return gaussian_blur(states, kernel_size=[k, k], sigma=[sigma, sigma])
    if background is None:
        raise ValueError("reference mode 'background' needs a background image; see estimate_background()")
    bg = background.to(states.device, torch.float32)
    if bg.shape != states.shape[1:]:
        raise ValueError(f"background has shape {tuple(bg.shape)}, states have {tuple(states.shape[1:])}")
    return bg.expand_as(states).clone()
