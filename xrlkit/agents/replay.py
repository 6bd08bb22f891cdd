"""Prioritized n-step replay for vector envs, storing one uint8 frame per transition.

Layout: a ring of ``capacity_per_env = capacity // n_envs`` time slots for each env. Slot
``(t, e)`` holds what happened at time ``t`` in env ``e``: the newest 84x84 frame of the
stacked state ``s_t``, the action, the (already clipped) reward and the ``terminated`` /
``truncated`` flags of that step. A stacked state ``[4, 84, 84]`` is rebuilt from the newest
frames of slots ``t-3 .. t`` of the same env; where an episode starts (the env's stack is not a
shift of the previous one, e.g. zero- or repeat-padded after a reset) the whole stack goes to a
small side ring, as does the last state of a truncated episode (needed to bootstrap). The
next state of an n-step transition is referenced by index (slot ``t+m`` of the same env), not
stored again.

Memory per transition (``side_fraction = 1/8``): 7056 B frame + 3528 B side-ring share
+ ~30 B of action / reward / flags / indices / sum-tree = about 10.6 kB, i.e. ~11 GB for
2**20 transitions (storing ``s`` and ``s'`` stacks would take 56 kB). If episode starts are
more frequent than ``side_fraction`` of the steps, the oldest side entries are recycled and
the few transitions using them stop being sampled (priority 0); nothing wrong is returned.

n-step returns are computed at sampling time from the stored rewards, per env: the sum
``R = sum_{k<m} gamma^k r_{t+k}`` stops at the first step that ends the episode (``m <= n``);
a terminated end gives discount 0, a truncated one bootstraps from the stored last state
(truncation is not termination). A transition becomes sampleable once its window is complete.

Prioritized replay (Schaul et al. 2016): sampling probability ``p_i^alpha / sum_j p_j^alpha``
from a sum-tree, stratified over ``batch_size`` equal segments of the total mass; new
transitions get the largest priority seen so far; importance weights
``(N * P(i))^-beta`` are normalised by their maximum within the batch (as Dopamine does).
``alpha = 0`` is uniform replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrlkit.shapes import FRAME_SHAPE, FRAME_STACK


class SumTree:
    """Binary sum-tree over ``capacity`` non-negative leaves (float64), all numpy-vectorised.

    Leaves live at ``tree[size + i]``; node ``k`` holds ``tree[2k] + tree[2k + 1]``; the root
    (the total mass) is ``tree[1]``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.size = 1 << int(np.ceil(np.log2(max(capacity, 2))))
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, idx: np.ndarray) -> np.ndarray:
        """Leaf values at ``idx`` (int array)."""
        return self.tree[self.size + np.asarray(idx)]

    def set(self, idx: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``idx`` to ``values`` (>= 0) and update their ancestors."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        values = np.asarray(values, dtype=np.float64).ravel()
        if idx.size == 0:
            return
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("priorities must be finite and >= 0")
        node = self.size + idx
        self.tree[node] = values  # with duplicate indices the last value wins
        node = np.unique(node // 2)
        while node[0] >= 1:
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node // 2)

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index for each cumulative ``mass`` in [0, total): never a zero-priority leaf."""
        node = np.ones(len(mass), dtype=np.int64)
        mass = np.asarray(mass, dtype=np.float64).copy()
        while node[0] < self.size:
            left = self.tree[2 * node]
            right_ok = self.tree[2 * node + 1] > 0
            go_right = ((mass >= left) & right_ok) | (left <= 0)
            mass = np.where(go_right, mass - left, mass)
            node = 2 * node + go_right
        return node - self.size


@dataclass
class Batch:
    """A sampled batch. ``obs`` / ``next_obs``: ``uint8 [B, 4, 84, 84]``; ``actions`` int64
    ``[B]``; ``returns`` float32 ``[B]`` (n-step discounted reward sum); ``discounts`` float32
    ``[B]`` (``gamma^m``, 0 where the episode terminated); ``weights`` float32 ``[B]`` in
    (0, 1]; ``indices`` int64 ``[B]`` for :meth:`PrioritizedReplay.update_priorities`."""

    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    discounts: np.ndarray
    next_obs: np.ndarray
    weights: np.ndarray
    indices: np.ndarray


class PrioritizedReplay:
    """Prioritized (``alpha > 0``) or uniform (``alpha = 0``) n-step replay for ``n_envs`` envs.

    Call :meth:`add` once per vector-env step with the states the actions were taken in.
    """

    def __init__(
        self,
        capacity: int,
        n_envs: int,
        *,
        n_step: int = 3,
        gamma: float = 0.99,
        alpha: float = 0.5,
        eps: float = 1e-6,
        side_fraction: float = 1 / 8,
        seed: int = 0,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        per_env = capacity // n_envs
        if per_env < n_step + FRAME_STACK + 2:
            raise ValueError(
                f"capacity {capacity} gives {per_env} slots per env for {n_envs} envs; "
                f"need at least n_step + {FRAME_STACK + 2} = {n_step + FRAME_STACK + 2}"
            )
        self.n_envs, self.per_env, self.n_step, self.gamma = n_envs, per_env, n_step, gamma
        self.alpha, self.eps = alpha, eps
        self.capacity = per_env * n_envs
        e, c = n_envs, per_env
        self.frames = np.zeros((c, e, *FRAME_SHAPE), dtype=np.uint8)
        self.actions = np.zeros((c, e), dtype=np.int16)
        self.rewards = np.zeros((c, e), dtype=np.float32)
        self.terminated = np.zeros((c, e), dtype=bool)
        self.truncated = np.zeros((c, e), dtype=bool)
        self.ready = np.zeros((c, e), dtype=bool)
        self.anchor_dist = np.zeros((c, e), dtype=np.int8)  # steps since the stack anchor, capped at 3
        self.anchor_side = np.full((c, e), -1, dtype=np.int32)  # side entry holding the anchor stack
        self.final_side = np.full((c, e), -1, dtype=np.int32)  # side entry holding a truncated end's last state
        n_side = max(2 * n_envs, int(self.capacity * side_fraction))
        self.side = np.zeros((n_side, FRAME_STACK, *FRAME_SHAPE), dtype=np.uint8)
        self.side_owner = np.full((n_side, 2), -1, dtype=np.int64)  # (time, env) that wrote it
        self.tree = SumTree(self.capacity)
        self.max_priority = 1.0
        self.t = 0  # number of add() calls so far (the time of the next add)
        self.side_head = 0
        self.last_obs = np.zeros((e, FRAME_STACK, *FRAME_SHAPE), dtype=np.uint8)
        self.force_anchor = np.ones(e, dtype=bool)  # next state of this env starts a new stack chain
        self.rng = np.random.default_rng(seed)

    # ---- bookkeeping -------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of sampleable transitions."""
        return int(np.count_nonzero(self.tree.tree[self.tree.size:self.tree.size + self.capacity]))

    @property
    def oldest_valid(self) -> int:
        """Oldest time whose stacked state can still be rebuilt from the ring."""
        return max(0, self.t - self.per_env + FRAME_STACK - 1)

    def _flat(self, time: np.ndarray, env: np.ndarray) -> np.ndarray:
        return (np.asarray(time) % self.per_env) * self.n_envs + np.asarray(env)

    def _invalidate(self, time: np.ndarray, env: np.ndarray) -> None:
        """Make transitions never sampleable (priority 0, marked as handled)."""
        time, env = np.asarray(time).ravel(), np.asarray(env).ravel()
        keep = (time >= 0) & (time >= self.t - self.per_env) & (time <= self.t)
        time, env = time[keep], env[keep]
        self.ready[time % self.per_env, env] = True
        self.tree.set(self._flat(time, env), np.zeros(len(time)))

    def _write_side(self, stacks: np.ndarray, time: int, envs: np.ndarray) -> np.ndarray:
        """Store full stacks ``[k, 4, 84, 84]`` in the side ring; returns their indices.

        A recycled entry's previous owner (and the transitions that needed it) are
        invalidated if they still refer to it.
        """
        n = len(envs)
        idx = (self.side_head + np.arange(n)) % len(self.side)
        self.side_head = int((self.side_head + n) % len(self.side))
        for i in idx:
            t_old, e_old = self.side_owner[i]
            if t_old < 0 or t_old < self.t - self.per_env:
                continue
            slot = t_old % self.per_env
            if self.final_side[slot, e_old] == i:  # a truncated end: the windows that bootstrap from it
                self.final_side[slot, e_old] = -1
                self._invalidate(np.arange(t_old - self.n_step + 1, t_old + 1), np.full(self.n_step, e_old))
            times = np.arange(t_old, min(t_old + FRAME_STACK - 1, self.t))  # states still built on the anchor
            uses = self.anchor_side[times % self.per_env, e_old] == i
            self._invalidate(times[uses], np.full(int(uses.sum()), e_old))
            for lag in range(1, self.n_step + 1):  # transitions bootstrapping from those states
                self._invalidate(times[uses] - lag, np.full(int(uses.sum()), e_old))
        self.side[idx] = stacks
        self.side_owner[idx, 0] = time
        self.side_owner[idx, 1] = envs
        return idx.astype(np.int32)

    # ---- adding ------------------------------------------------------------------------
    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        final_obs: np.ndarray | None = None,
    ) -> None:
        """Record one vector step.

        ``obs``: ``uint8 [n_envs, 4, 84, 84]``, the states ``actions`` (int ``[n_envs]``) were
        taken in; ``rewards`` ``[n_envs]`` (clip them before if you want clipping);
        ``terminated`` / ``truncated`` bool ``[n_envs]``; ``final_obs`` ``[n_envs, 4, 84, 84]``
        holds the last state of every episode that ended (only truncated rows are read).
        """
        e = self.n_envs
        obs = np.asarray(obs)
        if obs.shape != (e, FRAME_STACK, *FRAME_SHAPE) or obs.dtype != np.uint8:
            raise ValueError(f"obs must be uint8 [{e}, {FRAME_STACK}, 84, 84], got {obs.dtype} {obs.shape}")
        actions, rewards = np.asarray(actions).reshape(e), np.asarray(rewards, dtype=np.float32).reshape(e)
        terminated = np.asarray(terminated, dtype=bool).reshape(e)
        truncated = np.asarray(truncated, dtype=bool).reshape(e) & ~terminated
        t, slot, envs = self.t, self.t % self.per_env, np.arange(e)

        # The slot is overwritten, and the oldest state whose stack used it becomes unbuildable.
        self._invalidate(np.full(e, t - self.per_env), envs)
        self._invalidate(np.full(e, t - self.per_env + FRAME_STACK - 1), envs)
        self.final_side[slot] = -1

        # Stack continuity: is obs[e] the previous stack shifted by one new frame?
        continuous = (obs[:, :-1] == self.last_obs[:, 1:]).reshape(e, -1).all(axis=1) & ~self.force_anchor
        self.force_anchor[:] = False
        prev = (t - 1) % self.per_env
        self.anchor_dist[slot] = np.where(continuous, np.minimum(self.anchor_dist[prev] + 1, FRAME_STACK - 1), 0)
        self.anchor_side[slot] = np.where(continuous, self.anchor_side[prev], -1)
        starts = np.flatnonzero(~continuous)
        if starts.size:
            self.anchor_side[slot, starts] = self._write_side(obs[starts], t, starts)

        self.frames[slot] = obs[:, -1]
        self.actions[slot] = actions
        self.rewards[slot] = rewards
        self.terminated[slot] = terminated
        self.truncated[slot] = truncated
        self.ready[slot] = False
        cut = np.flatnonzero(truncated)
        if cut.size:
            if final_obs is None:
                raise ValueError("final_obs is needed for truncated episodes (to bootstrap from their last state)")
            self.final_side[slot, cut] = self._write_side(np.asarray(final_obs)[cut], t, cut)
        self.last_obs[:] = obs
        self.t += 1

        # Newly complete windows: time t-n (bootstrap state s_t just stored) in every env, and
        # every pending time in envs whose episode just ended.
        lo = self.oldest_valid
        times = [np.full(e, t - self.n_step)]
        env_ids = [envs]
        ended = np.flatnonzero(terminated | truncated)
        for lag in range(self.n_step):
            times.append(np.full(len(ended), t - lag))
            env_ids.append(ended)
        time_all, env_all = np.concatenate(times), np.concatenate(env_ids)
        ok = time_all >= lo
        time_all, env_all = time_all[ok], env_all[ok]
        new = ~self.ready[time_all % self.per_env, env_all]
        time_all, env_all = time_all[new], env_all[new]
        self.ready[time_all % self.per_env, env_all] = True
        self.tree.set(self._flat(time_all, env_all), np.full(len(time_all), self.max_priority))

    def discard_pending(self) -> None:
        """Drop transitions whose n-step window is still open (e.g. before a resumed run starts
        new episodes, which must not be chained to the old ones)."""
        times = np.arange(max(self.oldest_valid, self.t - self.n_step), self.t)
        for env in range(self.n_envs):
            pending = times[~self.ready[times % self.per_env, env]]
            self._invalidate(pending, np.full(len(pending), env))
        self.force_anchor[:] = True

    # ---- sampling ----------------------------------------------------------------------
    def _stacks(self, time: np.ndarray, env: np.ndarray) -> np.ndarray:
        """Rebuild stacked states ``uint8 [B, 4, 84, 84]`` at ``time`` in ``env``."""
        slot = time % self.per_env
        dist = self.anchor_dist[slot, env].astype(np.int64)
        side = self.anchor_side[slot, env]
        out = np.empty((len(time), FRAME_STACK, *FRAME_SHAPE), dtype=np.uint8)
        for j in range(FRAME_STACK):
            k = j - (FRAME_STACK - 1) + dist  # position relative to the anchor; < 0: from the side stack
            from_ring = k >= 0
            src = (time - (FRAME_STACK - 1) + j) % self.per_env
            out[from_ring, j] = self.frames[src[from_ring], env[from_ring]]
            side_rows = ~from_ring
            out[side_rows, j] = self.side[side[side_rows], (j + dist)[side_rows]]
        return out

    def sample(self, batch_size: int, beta: float = 0.4) -> Batch:
        """Draw ``batch_size`` transitions (stratified by priority mass) with IS weights."""
        total = self.tree.total
        if total <= 0:
            raise ValueError("the replay buffer has no sampleable transition yet")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        mass = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        idx = self.tree.find(np.minimum(mass, np.nextafter(total, 0)))
        slot, env = idx // self.n_envs, idx % self.n_envs
        last = self.t - 1
        time = last - ((last - slot) % self.per_env)

        # n-step window: rewards until (and including) the first step that ends the episode.
        k = np.arange(self.n_step)
        win_t = time[:, None] + k[None, :]  # [B, n]
        stored = win_t <= last
        win_s = win_t % self.per_env
        ends = (self.terminated[win_s, env[:, None]] | self.truncated[win_s, env[:, None]]) & stored
        has_end = ends.any(axis=1)
        first_end = np.where(has_end, ends.argmax(axis=1), self.n_step - 1)
        m = first_end + 1
        use = k[None, :] < m[:, None]
        rewards = np.where(use, self.rewards[win_s, env[:, None]], 0.0)
        returns = (rewards * self.gamma ** k[None, :]).sum(axis=1).astype(np.float32)
        end_t = time + first_end
        end_s = end_t % self.per_env
        term = has_end & self.terminated[end_s, env]
        trunc = has_end & ~term
        discounts = np.where(term, 0.0, self.gamma ** m).astype(np.float32)

        obs = self._stacks(time, env)
        next_time = np.where(has_end, time, time + m)  # terminated rows: any state (discount 0)
        next_obs = self._stacks(next_time, env)
        if trunc.any():
            next_obs[trunc] = self.side[self.final_side[end_s[trunc], env[trunc]]]

        probs = self.tree.get(idx) / total
        weights = (len(self) * probs) ** (-beta)
        weights = (weights / weights.max()).astype(np.float32)
        return Batch(obs, self.actions[slot, env].astype(np.int64), returns, discounts, next_obs, weights, idx)

    def update_priorities(self, indices: np.ndarray, td: np.ndarray) -> None:
        """Set priorities ``(|td| + eps)^alpha`` for sampled ``indices`` (from :class:`Batch`).

        Indices whose transition was invalidated since sampling are left at 0.
        """
        indices = np.asarray(indices, dtype=np.int64)
        p = (np.abs(np.asarray(td, dtype=np.float64)) + self.eps) ** self.alpha
        alive = self.tree.get(indices) > 0
        self.tree.set(indices[alive], p[alive])
        if p.size:
            self.max_priority = max(self.max_priority, float(p.max()))

    # ---- persistence -------------------------------------------------------------------
    _ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated", "ready", "anchor_dist",
               "anchor_side", "final_side", "side", "side_owner", "last_obs", "force_anchor")

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-serialisable scalars (counters, RNG state) describing the buffer."""
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        arrays["tree"] = self.tree.tree
        meta = {
            "capacity": self.capacity, "n_envs": self.n_envs, "n_step": self.n_step, "gamma": self.gamma,
            "alpha": self.alpha, "eps": self.eps, "t": self.t, "side_head": self.side_head,
            "max_priority": self.max_priority, "rng": self.rng.bit_generator.state,
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned; the buffer's shape parameters must match."""
        for key in ("capacity", "n_envs", "n_step"):
            if meta[key] != getattr(self, key):
                raise ValueError(f"saved replay has {key}={meta[key]}, this buffer {getattr(self, key)}")
        for name in self._ARRAYS:
            if arrays[name].shape != getattr(self, name).shape:
                raise ValueError(f"saved replay array {name!r} has shape {arrays[name].shape}")
            getattr(self, name)[...] = arrays[name]
        self.tree.tree[...] = arrays["tree"]
        self.t, self.side_head = int(meta["t"]), int(meta["side_head"])
        self.max_priority = float(meta["max_priority"])
        self.rng.bit_generator.state = meta["rng"]
