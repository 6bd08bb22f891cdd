"""Explainers: shapes, ranges, determinism, a region sanity check and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xrlkit.agents import QAgent, QNetConfig, TorchAgent
from xrlkit.explainers import EXPLAINERS, VisionMaskExplainer, last_conv_layer, make_explainer

torch.set_num_threads(1)

#: cheap settings so each explainer runs in well under a second on 1 core
FAST = {
    "ig": {"n_steps": 8},
    "occlusion": {"patch": 12, "stride": 12},
    "greydanus": {"stride": 12},
    "sarfa": {"stride": 12},
    "lime": {"n_samples": 64},
    "rise": {"n_masks": 64},
}
ROWS, COLS = slice(24, 36), slice(30, 50)  # a patch of Breakout's brick wall in 84x84


class RegionAgent(TorchAgent):
    """Two actions; logit 0 = 8 * mean of the region ``ROWS x COLS`` (all frames), logit 1 = 0.
    A 1x1 conv (weights 1/4, no bias) averages the frames first, so the agent has a conv layer."""

    def __init__(self) -> None:
        super().__init__(2, ("REGION", "NOOP"))
        self.conv = nn.Conv2d(4, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(x)[:, 0, ROWS, COLS].mean(dim=(1, 2))
        return torch.stack([8 * r, torch.zeros_like(r)], dim=1)


def region_mask() -> torch.Tensor:
    m = torch.zeros(84, 84, dtype=torch.bool)
    m[ROWS, COLS] = True
    return m


class FakeVisionMask:
    """Duck-typed VisionMask model: mask k of every state is constant (k + 1) / (K + 1)."""

    n_actions = 4

    def explain(self, states, actions=None):
        b = len(states)
        levels = (torch.arange(self.n_actions, dtype=torch.float32) + 1) / (self.n_actions + 1)
        return levels.view(1, -1, 1, 1).expand(b, -1, 84, 84).clone()


@pytest.fixture(scope="module")
def states(breakout_states):
    return breakout_states[::16][:4]  # 4 real states, spread over the rollout


@pytest.mark.parametrize("name", [n for n in EXPLAINERS if n not in ("ife", "visionmask")])
def test_shapes_and_non_negativity(name, tiny_agent, states):
    actions = np.array([0, 1, 2, 3])
    sal = make_explainer(name, tiny_agent, **FAST.get(name, {})).explain(states, actions)
    assert sal.shape == (4, 84, 84) and sal.dtype == torch.float32
    assert torch.isfinite(sal).all() and (sal >= 0).all() and sal.sum() > 0


def test_float_states_give_the_same_map_as_uint8(tiny_agent, states):
    e = make_explainer("grad", tiny_agent)
    a = np.zeros(len(states), dtype=int)
    torch.testing.assert_close(e.explain(states, a), e.explain(torch.as_tensor(states).float(), a))


def test_ife_attention_explainer(states):
    agent = QAgent(4, QNetConfig(encoder="ife"), seed=0).eval()
    e = make_explainer("ife", agent)
    sal0, sal3 = e.explain(states, np.zeros(4, int)), e.explain(states, np.full(4, 3))
    assert sal0.shape == (4, 84, 84) and (sal0 >= 0).all()
    torch.testing.assert_close(sal0.sum(dim=(1, 2)), torch.ones(4))
    torch.testing.assert_close(sal0, sal3)  # action-independent by design


def test_ife_explainer_refuses_agents_without_attention(tiny_agent):
    with pytest.raises(ValueError, match="no attention"):
        make_explainer("ife", tiny_agent)


def test_visionmask_adapter_gathers_the_action_mask(states):
    e = make_explainer("visionmask", None, model=FakeVisionMask())
    sal = e.explain(states, np.array([0, 3, 1, 2]))
    assert sal.shape == (4, 84, 84)
    torch.testing.assert_close(sal[:, 0, 0], torch.tensor([1, 4, 2, 3]) / 5.0)


def test_visionmask_adapter_checks_the_model(states):
    with pytest.raises(ValueError, match="explain"):
        VisionMaskExplainer(object())
    with pytest.raises(ValueError, match="model="):
        make_explainer("visionmask", None)
    bad = FakeVisionMask()
    bad.n_actions = 5  # claims 5 actions but returns 4 masks
    bad.explain = lambda s, a=None: torch.zeros(len(s), 4, 84, 84)
    with pytest.raises(ValueError, match="shape"):
        VisionMaskExplainer(bad).explain(states, np.zeros(4, int))


def test_seeded_explainers_are_deterministic(tiny_agent, states):
    a = np.array([0, 1, 2, 3])
    r1 = make_explainer("rise", tiny_agent, n_masks=32, seed=1).explain(states, a)
    r2 = make_explainer("rise", tiny_agent, n_masks=32, seed=1).explain(states, a)
    r3 = make_explainer("rise", tiny_agent, n_masks=32, seed=2).explain(states, a)
    torch.testing.assert_close(r1, r2)
    assert not torch.allclose(r1, r3)
    e1, e2 = make_explainer("random", tiny_agent, seed=5), make_explainer("random", tiny_agent, seed=5)
    first = e1.explain(states, a)
    torch.testing.assert_close(first, e2.explain(states, a))
    assert not torch.allclose(first, e1.explain(states, a))  # fresh maps on each call


@pytest.mark.parametrize("name", ["grad", "ig", "occlusion", "greydanus", "sarfa", "lime", "rise"])
def test_saliency_concentrates_on_the_region_the_agent_reads(name, states):
    agent = RegionAgent()
    kwargs = {"n_masks": 1000} if name == "rise" else {"n_samples": 300} if name == "lime" else FAST.get(name, {})
    sal = make_explainer(name, agent, **kwargs).explain(states, np.zeros(4, int))
    inside = region_mask()
    share = (sal[:, inside].sum(1) / sal.sum(dim=(1, 2))).min()
    if name in ("grad", "ig"):  # exact: nothing outside the region touches logit 0
        assert share > 0.999
    elif name in ("occlusion", "greydanus", "sarfa", "lime"):  # windows, blur, cells bleed around the region
        assert share > 0.25  # the region is 3.4% of the image
    # RISE maps carry a large constant offset (P(action) >= 0.5 under any mask), so compare means
    assert (sal[:, inside].mean(1) > sal[:, ~inside].mean(1)).all()
    peak = sal.flatten(1).argmax(1)
    r, c = peak // 84, peak % 84
    assert ((r >= 12) & (r < 48) & (c >= 18) & (c < 62)).all()


def test_sarfa_score_is_the_papers_formula():
    """Hand-made logits against the formula written with scipy: dP, K = 1 / (1 + KL(P_rem || P'_rem))
    over the other actions, S = 2 K dP / (K + dP) where dP > 0, else 0."""
    from scipy.special import softmax
    from scipy.stats import entropy

    agent = RegionAgent()
    sarfa = make_explainer("sarfa", agent, stride=42)
    base = torch.tensor([[2.0, 0.5, -1.0]])
    perturbed = torch.tensor([[[0.0, 0.5, -1.0],   # only the action drops: K = 1
                               [0.0, 1.5, -2.0],   # the action drops and the others reshuffle
                               [3.0, 0.5, -1.0],   # the action rises: 0
                               [2.0, 0.5, -1.0]]])  # nothing changes: 0
    got = sarfa.scores(base, perturbed, torch.tensor([0])).numpy()[0]
    expected = []
    for p in perturbed[0].numpy():
        d_p = softmax(base[0].numpy())[0] - softmax(p)[0]
        k = 1 / (1 + entropy(softmax(base[0, 1:].numpy()), softmax(p[1:])))
        expected.append(2 * k * d_p / (k + d_p) if d_p > 0 else 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert got[0] > 0 and got[1] > 0 and got[2] == got[3] == 0
    # the explained action picks the score: explaining action 1 in the same perturbations differs
    assert not np.allclose(sarfa.scores(base, perturbed, torch.tensor([1])).numpy()[0], got)


def test_lime_surrogate_is_weighted_ridge(states):
    """The closed-form surrogate against scikit-learn's Ridge with sample weights, and exact
    recovery of a linear target without penalty."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    lime = make_explainer("lime", RegionAgent(), cell=21, n_samples=50, seed=3)  # 16 features
    z = lime.patterns.numpy()
    y = np.random.default_rng(0).random((2, 50))
    ours = lime._surrogate(torch.from_numpy(y)).numpy()
    for row, coef in zip(y, ours):
        ref = sklearn.Ridge(alpha=1.0).fit(z, row, sample_weight=lime.weights.numpy())
        np.testing.assert_allclose(coef, ref.coef_, rtol=1e-6, atol=1e-9)
    lime.alpha = 0.0
    beta = np.linspace(-1, 1, 16)
    np.testing.assert_allclose(lime._surrogate(torch.from_numpy(z @ beta + 0.3)[None]).numpy()[0], beta, atol=1e-8)
    sal = lime.explain(states[:1], np.zeros(1, int))
    assert sal.shape == (1, 84, 84) and len(torch.unique(sal[0, :21, :21])) == 1  # one value per cell


def test_gradcam_uses_the_last_conv_layer(tiny_agent, states):
    assert last_conv_layer(tiny_agent) is tiny_agent.encoder.net[4]
    assert make_explainer("gradcam", tiny_agent).layer is tiny_agent.encoder.net[4]
    with pytest.raises(ValueError, match="Conv2d"):
        last_conv_layer(ConvFreeAgent())


class ConvFreeAgent(TorchAgent):
    """Logits from a linear layer on the mean of each frame, plus a conv layer it never uses."""

    def __init__(self) -> None:
        super().__init__(2, ("A", "B"))
        self.unused = nn.Conv2d(4, 1, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def test_clear_errors(tiny_agent, states):
    with pytest.raises(ValueError, match="unknown explainer 'nope'"):
        make_explainer("nope", tiny_agent)
    e = make_explainer("grad", tiny_agent)
    with pytest.raises(ValueError, match=r"\[B, 4, 84, 84\]"):
        e.explain(states[:, :3], np.zeros(4, int))
    with pytest.raises(ValueError, match="one per state"):
        e.explain(states, np.zeros(3, int))
    with pytest.raises(ValueError, match="lie in"):
        e.explain(states, np.full(4, 7))
    with pytest.raises(ValueError, match="integers"):
        e.explain(states, np.zeros(4))


def test_perturbed_batches_cover_every_state_mask_pair_once_with_the_blend():
    from xrlkit.explainers.base import perturbed_batches

    gen = torch.Generator().manual_seed(0)
    start, target = torch.rand(3, 4, 84, 84, generator=gen) * 255, torch.rand(3, 4, 84, 84, generator=gen) * 255
    masks = torch.rand(5, 84, 84, generator=gen)
    seen = []
    for pairs, b, k, states in perturbed_batches(start, target - start, masks, batch_size=4):
        assert len(pairs) <= 4 and torch.equal(pairs, b * 5 + k)
        m = masks[k].unsqueeze(1)
        torch.testing.assert_close(states, start[b] * (1 - m) + target[b] * m, rtol=0, atol=1e-3)
        seen += pairs.tolist()
    assert seen == list(range(15))
