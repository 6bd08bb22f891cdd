"""Prioritized n-step replay: sum-tree, PER frequencies and weights, n-step returns, stack rebuild."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrlkit.agents.replay import PrioritizedReplay, SumTree
from xrlkit.envs import make_vector_env

torch.set_num_threads(1)


def stack_of(values: list[int]) -> np.ndarray:
    """A [4, 84, 84] stack whose frame j is filled with values[j]."""
    return np.stack([np.full((84, 84), v % 256, dtype=np.uint8) for v in values])


def time_of(buf: PrioritizedReplay, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    slot, env = indices // buf.n_envs, indices % buf.n_envs
    last = buf.t - 1
    return last - ((last - slot) % buf.per_env), env


def test_sumtree_sets_and_finds() -> None:
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 0.0, 2.0, 0.0, 3.0]))
    assert tree.total == pytest.approx(6.0)
    found = tree.find(np.array([0.0, 0.999, 1.0, 2.9, 3.0, 5.999]))
    assert found.tolist() == [0, 0, 2, 2, 4, 4]
    tree.set(np.array([4, 4]), np.array([0.0, 0.0]))
    assert tree.total == pytest.approx(3.0)
    assert set(tree.find(np.linspace(0, 2.999, 50)).tolist()) <= {0, 2}


def fill_counter(buf: PrioritizedReplay, steps: int) -> None:
    """One env, frame t filled with t; never ends."""
    for t in range(steps):
        buf.add(stack_of([t - 3, t - 2, t - 1, t])[None], [t % 4], [1.0], [False], [False])


def test_per_frequencies_follow_priorities() -> None:
    buf = PrioritizedReplay(64, 1, n_step=1, alpha=0.5, seed=0)
    fill_counter(buf, 21)  # 20 complete transitions (times 0..19)
    assert len(buf) == 20
    all_idx = buf.sample(20, beta=1.0).indices
    times, _ = time_of(buf, all_idx)
    assert sorted(times.tolist()) == list(range(20))  # stratified: one per equal-mass segment
    # TD errors 1..20 -> priorities (|td|)^0.5
    td = np.arange(1, 21, dtype=np.float64)
    buf.update_priorities(all_idx, td[times])
    counts = np.zeros(20)
    for _ in range(200):
        b = buf.sample(64, beta=0.5)
        t, _ = time_of(buf, b.indices)
        np.add.at(counts, t, 1)
        assert np.array_equal(b.obs[:, -1, 0, 0], t % 256)
    expected = np.sqrt(td) / np.sqrt(td).sum() * counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45.3  # chi-square, 19 dof, p = 0.001
    # importance weights: (N P(i))^-beta, max-normalised
    b = buf.sample(256, beta=0.5)
    t, _ = time_of(buf, b.indices)
    w = (20 * np.sqrt(td[t]) / np.sqrt(td).sum()) ** -0.5
    np.testing.assert_allclose(b.weights, w / w.max(), rtol=1e-5)
    assert b.weights.max() == pytest.approx(1.0)


def test_alpha_zero_is_uniform() -> None:
    buf = PrioritizedReplay(64, 1, n_step=1, alpha=0.0, seed=1)
    fill_counter(buf, 11)
    b = buf.sample(10)
    buf.update_priorities(b.indices, np.linspace(0, 100, 10))
    b = buf.sample(500, beta=1.0)
    assert np.all(b.weights == 1.0)
    counts = np.bincount(time_of(buf, b.indices)[0], minlength=10)
    assert counts.min() == counts.max() == 50


def test_nstep_returns_by_hand() -> None:
    """n=3, gamma=0.5; env 0 terminates after step 4 and is truncated after step 8."""
    g, n = 0.5, 3
    buf = PrioritizedReplay(64, 2, n_step=n, gamma=g, alpha=0.0, seed=0)
    rewards = np.arange(1, 13, dtype=np.float32)  # r_t = t + 1
    term = np.zeros(12, dtype=bool)
    trunc = np.zeros(12, dtype=bool)
    term[4], trunc[8] = True, True
    start = 0
    for t in range(12):
        if t > 0 and (term[t - 1] or trunc[t - 1]):
            start = t
        # env 0 stacks are zero-padded after a reset; env 1 never ends (frames = 100 + t)
        s0 = stack_of([t - k if t - k >= start else 0 for k in (3, 2, 1, 0)])
        s1 = stack_of([100 + t - k for k in (3, 2, 1, 0)])
        final = np.stack([stack_of([200, 201, 202, 203]), s1])  # last state of the truncated episode
        buf.add(np.stack([s0, s1]), [0, 1], [rewards[t], 0.5], [term[t], False], [trunc[t], False],
                final_obs=final)
    # hand computation for env 0
    def expect(t: int) -> tuple[float, float, int | None]:
        ret, k = 0.0, 0
        while k < n:
            ret += g**k * rewards[t + k]
            if term[t + k]:
                return ret, 0.0, None
            if trunc[t + k]:
                return ret, g ** (k + 1), -1  # bootstraps from the stored final state
            k += 1
        return ret, g**n, t + n

    seen = set()
    for _ in range(30):
        b = buf.sample(32)
        times, envs = time_of(buf, b.indices)
        for i, (t, e) in enumerate(zip(times, envs)):
            assert b.obs[i, -1, 0, 0] == ((t if e == 0 else 100 + t) % 256)
            if e == 1:
                assert b.returns[i] == pytest.approx(0.5 * (1 + g + g**2))
                assert b.discounts[i] == pytest.approx(g**3)
                assert b.next_obs[i, -1, 0, 0] == 100 + t + 3
                continue
            ret, disc, nxt = expect(int(t))
            seen.add(int(t))
            assert b.returns[i] == pytest.approx(ret), t
            assert b.discounts[i] == pytest.approx(disc), t
            if nxt == -1:
                assert b.next_obs[i, :, 0, 0].tolist() == [200, 201, 202, 203]
            elif nxt is not None:
                assert b.next_obs[i, -1, 0, 0] == nxt
    # times 9..11 are still open (no end, window incomplete); everything before is sampleable
    assert seen == set(range(9))
    # the zero-padded first stacks after the termination at step 4 are rebuilt exactly
    b = buf.sample(64)
    times, envs = time_of(buf, b.indices)
    for i in np.flatnonzero((envs == 0) & (times >= 5) & (times <= 7)):
        t = int(times[i])
        assert b.obs[i, :, 0, 0].tolist() == [t - k if t - k >= 5 else 0 for k in (3, 2, 1, 0)]


def test_stacks_rebuilt_exactly_from_real_atari_with_wraparound() -> None:
    env = make_vector_env("Breakout", 2, "machado", train=True, seed=0, backend="ale")
    buf = PrioritizedReplay(2 * 60, 2, n_step=3, gamma=0.99, alpha=0.5, side_fraction=0.05, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    history: list[np.ndarray] = []
    for _ in range(400):
        actions = rng.integers(0, 4, 2)
        nxt, r, te, tr, info = env.step(actions)
        ended = te | tr
        final = info["final_obs"] if ended.any() else None
        buf.add(obs, actions, np.sign(r), te, tr, final_obs=final)
        history.append(obs.copy())
        obs = nxt
    env.close()
    assert buf.t == 400 and 0 < len(buf) <= buf.capacity
    b = buf.sample(256)
    times, envs = time_of(buf, b.indices)
    assert times.min() >= buf.oldest_valid
    truth = np.stack([history[t][e] for t, e in zip(times, envs)])
    np.testing.assert_array_equal(b.obs, truth)


def test_state_roundtrip_and_discard_pending() -> None:
    buf = PrioritizedReplay(64, 1, n_step=3, seed=3)
    fill_counter(buf, 30)
    arrays, meta = buf.state()
    other = PrioritizedReplay(64, 1, n_step=3, seed=99)
    other.load_state({k: v.copy() for k, v in arrays.items()}, meta)
    a, b = buf.sample(16), other.sample(16)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.next_obs, b.next_obs)
    before = len(other)
    other.discard_pending()
    other.add(stack_of([0, 0, 0, 7])[None], [0], [1.0], [False], [False])
    assert len(other) == before  # the open windows (times 27..29) never become sampleable
    c = other.sample(64)
    assert np.all(time_of(other, c.indices)[0] <= 26)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PrioritizedReplay(10, 2, n_step=3)
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedReplay(64, 1, alpha=-1)
    buf = PrioritizedReplay(64, 1)
    with pytest.raises(ValueError, match="no sampleable"):
        buf.sample(4)
    with pytest.raises(ValueError, match="uint8"):
        buf.add(np.zeros((1, 4, 84, 84), dtype=np.float32), [0], [0.0], [False], [False])
    with pytest.raises(ValueError, match="final_obs"):
        buf.add(np.zeros((1, 4, 84, 84), dtype=np.uint8), [0], [0.0], [False], [True])
