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

from xrlkit.registry import choose

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
    choose("reference mode", mode, REFERENCE_MODES)
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


# The 8 neighbours of a pixel and their weights in ROAD's noisy linear imputation: 1/6 for the
# 4 direct neighbours, 1/12 for the diagonal ones (Rong et al. 2022).
_NEIGHBOURS = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]


def impute_linear(
    states: torch.Tensor, removed: torch.Tensor, noise: float = 0.01, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022, "A Consistent and Efficient Evaluation
    Strategy for Attribution Methods"): every removed pixel becomes the weighted mean of its 8
    neighbours (weights 1/6 direct, 1/12 diagonal, renormalised at the border), removed
    neighbours included, which is one sparse linear system per state solved for all 4 frames at
    once; then Gaussian noise of std ``noise * 255`` is added to the removed pixels only and the
    result clipped to [0, 255]. Kept pixels are returned unchanged.

    ``states float [B, 4, 84, 84]`` in [0, 255], ``removed bool [B, 84, 84]`` (the same pixels on
    all 4 frames, at least one pixel kept per state); returns ``float [B, 4, 84, 84]``.

    Written here because the package that ships ROAD (Quantus) is LGPL and an optional
    dependency of xrlkit. Each equation is multiplied by its pixel's total neighbour weight, which
    makes the system symmetric (the weight from p to q is the weight from q to p) without
    changing its solution; scipy's sparse LU then solves it in symmetric mode with a minimum
    degree ordering: 71 against 119 ms a Breakout state for ROAD's 5 fractions of a gradient map
    (one Zen 3 core) with the row-normalised system and scipy's default ordering before.
    """
    import scipy.sparse
    import scipy.sparse.linalg

    x = states.float()
    if x.ndim != 4 or tuple(removed.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"expected states [B, C, H, W] and removed [B, H, W], got {tuple(x.shape)} and "
                         f"{tuple(removed.shape)}")
    out = x.detach().cpu().clone()
    masks = removed.detach().cpu().numpy().astype(bool)
    _, c, h, w = out.shape
    for b in range(len(out)):
        unknown = np.flatnonzero(masks[b])
        if len(unknown) == 0:
            continue
        if len(unknown) == h * w:
            raise ValueError("cannot impute a state with every pixel removed")
        index = np.full(h * w, -1)
        index[unknown] = np.arange(len(unknown))
        ys, xs = np.divmod(unknown, w)
        values = out[b].reshape(c, h * w).numpy().astype(np.float64)
        total = np.zeros(len(unknown))  # each pixel's neighbour weight inside the frame: the diagonal
        rows, cols, weights = [np.arange(len(unknown))], [np.arange(len(unknown))], [total]  # summed below
        rhs = np.zeros((len(unknown), c))
        for dy, dx, wt in _NEIGHBOURS:
            ny, nx = ys + dy, xs + dx
            i = np.flatnonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))  # each pixel once per direction
            total[i] += wt
            j = (ny * w + nx)[i]
            is_unknown = index[j] >= 0
            rows.append(i[is_unknown])
            cols.append(index[j[is_unknown]])
            weights.append(np.full(int(is_unknown.sum()), -wt))
            rhs[i[~is_unknown]] += wt * values[:, j[~is_unknown]].T
        a = scipy.sparse.csc_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                                    shape=(len(unknown), len(unknown)))
        lu = scipy.sparse.linalg.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0, options={"SymmetricMode": True})
        solved = lu.solve(rhs).reshape(len(unknown), c)
        filled = torch.from_numpy(solved.T).float()
        if noise > 0:
            filled += noise * 255.0 * torch.randn(filled.shape, generator=generator)
        flat_out = out[b].view(c, h * w)
        flat_out[:, unknown] = filled.clamp(0, 255)
    return out.to(x.device)
