"""VisionMask's contrastive loss.

For a state ``s`` (``[4, 84, 84]``, [0, 255]), its reference ``r`` and the K masks ``m_k``
(``[84, 84]``, [0, 1], shared by the four frames):

* masked states ``x_k = m_k * s + (1 - m_k) * r`` and complement states
  ``xbar_k = (1 - m_k) * s + m_k * r``;
* the frozen agent's logits on them form two K x A matrices ``L`` and ``Lbar`` (row k: the state
  masked by mask k; K = A). For value-based agents the "logits" are Q-values.

With ``a*`` the agent's action on ``s``, the terms (each averaged over the batch) are

* ``action``: ``1/2 [CE(L[a*, :], a*) + CE(L[:, a*], a*)]``: the a*-masked state alone must make
  the agent pick a* (softmax over actions), and among the K masks, mask a* must give action a*
  the highest logit (softmax over masks);
* ``complement``: ``lambda_e * 1/2 [negH_actions(Lbar) + negH_masks(Lbar)]`` where
  ``negH_actions`` is ``sum_a p log p`` of ``softmax(Lbar[k, :])`` averaged over the K rows and
  ``negH_masks`` is ``sum_k q log q`` of ``softmax(Lbar[:, a])`` averaged over the A columns:
  minimising it drives what the masks leave out towards carrying no information about any action
  (all rows and columns, not just a*'s, as in the official code);
* ``area``: ``mean(m) + lambda_area * |mean(m) - t|`` with ``mean(m)`` the mean of all K masks
  over the whole batch (one scalar, as the official code; ``t`` = ``target_area``);
* ``tv`` (optional, ``lambda_tv`` = 0 by default): ``lambda_tv`` times the mean absolute
  difference between vertically plus horizontally adjacent mask pixels.

``total`` is their sum, plus ``rank``, the weighted :func:`ranking_loss` that is not in the paper,
where the caller passes it (0 otherwise).

Why a ranking term: the paper's loss scores the soft blend of one mask at one area (``t`` = 30% on
average), while insertion and deletion (:class:`xrlkit.metrics.InsertionDeletion`) move the mask's
*top* pixels, hard, at every share from 0 to 100%. Nothing in the paper's loss asks that the
highest 5% of a mask be the most telling 5% of the state. The ``rank`` term does: for a few shares
``f`` it keeps (insertion) or removes (deletion) the top-``f`` pixels of mask ``a*``, nearly hard,
and asks the agent to keep picking ``a*`` in the first case and to stop in the second. It is off
(``lambda_rank`` = 0) unless asked for.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def neg_entropy(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum p log p`` of ``softmax(logits, dim)`` along ``dim``, averaged over all other entries."""
    logp = F.log_softmax(logits, dim=dim)
    return (logp.exp() * logp).sum(dim=dim).mean()


def total_variation(masks: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically + horizontally adjacent pixels of ``masks [..., H, W]``."""
    dv = (masks[..., 1:, :] - masks[..., :-1, :]).abs().mean()
    dh = (masks[..., :, 1:] - masks[..., :, :-1]).abs().mean()
    return dv + dh


def masked_inputs(states: torch.Tensor, masks: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked and complement states, each ``float [B * K, 4, 84, 84]`` (row ``b * K + k``).

    ``states``, ``reference``: ``[B, 4, 84, 84]`` in [0, 255]; ``masks``: ``[B, K, 84, 84]`` in [0, 1].
    """
    if masks.ndim != 4 or masks.shape[0] != states.shape[0] or masks.shape[-2:] != states.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not fit states {tuple(states.shape)}")
    s = states.float().unsqueeze(1)  # [B, 1, 4, H, W]
    r = reference.float().unsqueeze(1)
    m = masks.unsqueeze(2)  # [B, K, 1, H, W]
    keep = m * s + (1 - m) * r
    drop = (1 - m) * s + m * r
    return keep.flatten(0, 1), drop.flatten(0, 1)


def mask_logits(agent: Any, states: torch.Tensor, masks: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit matrices ``L`` and ``Lbar``, each ``float [B, K, A]``, of ``agent`` on the masked
    and complement states (see :func:`masked_inputs`); differentiable w.r.t. ``masks``."""
    keep, drop = masked_inputs(states, masks, reference)
    both = agent.logits(torch.cat([keep, drop]))
    b, k = masks.shape[:2]
    logits, logits_bar = both.float().split(b * k)
    return logits.reshape(b, k, -1), logits_bar.reshape(b, k, -1)


#: the shares of pixels the ranking term keeps or removes
RANK_SHARES = (0.05, 0.15, 0.3, 0.5)


def soft_top(mask: torch.Tensor, share: float, temperature: float = 0.1) -> torch.Tensor:
    """A nearly binary ``[B, H, W]`` mask, ~1 on the top ``share`` of each ``mask [B, H, W]``'s pixels.

    ``sigmoid((mask - t) / (temperature * std))`` with ``t`` the per-state value that ``share`` of
    the pixels exceed (not differentiated) and ``std`` the per-state spread of ``mask``; gradients
    reach the pixels near the cut, which is where the ranking is decided.
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    flat = mask.flatten(1)
    k = max(1, int(round(share * flat.shape[1])))
    cut = flat.detach().topk(k, dim=1).values[:, -1:]
    scale = temperature * flat.detach().std(dim=1, keepdim=True) + 1e-6
    return torch.sigmoid((flat - cut) / scale).view_as(mask)


def ranking_loss(agent: Any, states: torch.Tensor, masks: torch.Tensor, reference: torch.Tensor,
                 actions: torch.Tensor, shares: tuple[float, ...] = RANK_SHARES) -> torch.Tensor:
    """The ``rank`` term (a scalar, before its weight): the mean over ``shares`` of
    ``1/2 [CE(agent(top * s + (1 - top) * r), a*) - log(1 - P(a* | (1 - top) * s + top * r))]``
    with ``top`` = :func:`soft_top` of mask ``a*``; differentiable w.r.t. ``masks``.

    ``states``, ``reference``: ``[B, 4, 84, 84]`` in [0, 255]; ``masks``: ``[B, K, 84, 84]`` in [0, 1];
    ``actions``: ``int64 [B]``, the agent's action on each unmasked state.
    """
    b = states.shape[0]
    chosen = masks[torch.arange(b, device=masks.device), actions]
    tops = torch.stack([soft_top(chosen, f) for f in shares], dim=1)  # [B, F, H, W]
    keep, drop = masked_inputs(states, tops, reference)
    logp = F.log_softmax(agent.logits(torch.cat([keep, drop])).float(), dim=1)
    target = actions.repeat_interleave(len(shares))
    rows = torch.arange(len(target), device=logp.device)
    insertion = -logp[: len(target)][rows, target].mean()
    p_deleted = logp[len(target):][rows, target].exp()
    deletion = -torch.log1p(-p_deleted.clamp(max=1 - 1e-6)).mean()
    return (insertion + deletion) / 2


def visionmask_loss(
    logits: torch.Tensor,
    logits_bar: torch.Tensor,
    masks: torch.Tensor,
    actions: torch.Tensor,
    lambda_e: float = 1.0,
    lambda_area: float = 1.0,
    target_area: float = 0.3,
    lambda_tv: float = 0.0,
    rank: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms (scalars) ``action``, ``complement``, ``area``, ``tv``, ``rank`` and ``total``.

    ``logits``, ``logits_bar``: ``[B, K, A]`` with K = A; ``masks``: ``[B, K, H, W]`` in [0, 1];
    ``actions``: ``int64 [B]``, the agent's action on each unmasked state; ``rank``: the weighted
    :func:`ranking_loss` (a scalar), or ``None`` for the paper's loss alone.
    """
    if logits.ndim != 3 or logits.shape != logits_bar.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and logits_bar {tuple(logits_bar.shape)} must both be [B, K, A]")
    b, k, a = logits.shape
    if k != a:
        raise ValueError(f"VisionMask needs one mask per action, got {k} masks for {a} actions")
    if masks.shape[:2] != (b, k):
        raise ValueError(f"masks {tuple(masks.shape)} do not match logits {tuple(logits.shape)}")
    actions = torch.as_tensor(actions, device=logits.device).long()
    if actions.shape != (b,):
        raise ValueError(f"actions must have shape [{b}], got {tuple(actions.shape)}")
    idx = torch.arange(b, device=logits.device)
    row = F.cross_entropy(logits[idx, actions, :], actions)  # softmax over actions
    col = F.cross_entropy(logits[idx, :, actions], actions)  # softmax over masks
    action_term = (row + col) / 2
    complement = lambda_e * (neg_entropy(logits_bar, dim=2) + neg_entropy(logits_bar, dim=1)) / 2
    area_mean = masks.mean()
    area = area_mean + lambda_area * (area_mean - target_area).abs()
    tv = lambda_tv * total_variation(masks) if lambda_tv else masks.new_zeros(())
    rank = masks.new_zeros(()) if rank is None else rank.float()
    total = action_term + complement + area + tv + rank
    return {"action": action_term, "complement": complement, "area": area, "tv": tv, "rank": rank, "total": total}
