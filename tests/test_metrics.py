"""Metrics: agreement with Quantus (LLE, sparseness) and with slow reference code
(insertion / deletion), sanity orderings on a hand-built agent, the evaluation table, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from test_explainers import COLS, ROWS, RegionAgent, region_mask

from xrlkit.evaluation import rollout
from xrlkit.explainers import make_explainer
from xrlkit.metrics import (
    DERIVED_METRICS, METRICS, ROAD, Accuracy, Deletion, Insertion, LocalLipschitzEstimate, Sparseness,
    evaluate_explainers, make_metric, metric_sanity, pixels_per_step,
)
from xrlkit.references import impute_linear, make_reference

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def states(breakout_states):
    return breakout_states[::16][:4]


@pytest.fixture(scope="module")
def grad_saliency(tiny_agent, states):
    return make_explainer("grad", tiny_agent).explain(states, np.array([0, 1, 2, 3]))


def slow_curve(agent, state, action, saliency, n_steps, insert, reference="black"):
    """P(action) per step for ONE state, pixel order by np.argsort (stable), one forward per step."""
    s = torch.as_tensor(state).float()
    r = make_reference(s[None], reference)[0]
    order = np.argsort(-saliency.numpy().reshape(-1), kind="stable")
    probs = []
    for k in range(n_steps + 1):
        n_px = int(round(k * 84 * 84 / n_steps))
        rows, cols = order[:n_px] // 84, order[:n_px] % 84
        x = r.clone() if insert else s.clone()
        x[:, rows, cols] = s[:, rows, cols] if insert else r[:, rows, cols]
        with torch.no_grad():
            probs.append(float(agent.logits(x[None]).softmax(1)[0, action]))
    return np.array(probs)


@pytest.mark.parametrize("cls", [Insertion, Deletion])
def test_insertion_deletion_match_slow_reference(cls, tiny_agent, states, grad_saliency):
    actions, n_steps = np.array([0, 1, 2, 3]), 7
    metric = cls(n_steps=n_steps, batch_size=5)  # batch size not dividing B * (n_steps + 1)
    curves = metric.curves(tiny_agent, states, actions, grad_saliency)
    expected = np.stack([slow_curve(tiny_agent, s, a, m, n_steps, cls is Insertion)
                         for s, a, m in zip(states, actions, grad_saliency)])
    np.testing.assert_allclose(curves, expected, rtol=1e-5, atol=1e-6)
    auc = metric(tiny_agent, states, actions, grad_saliency)
    np.testing.assert_allclose(auc, np.trapezoid(expected, np.linspace(0, 1, n_steps + 1), axis=1), rtol=1e-6)


def test_pixels_per_step_covers_the_image():
    assert pixels_per_step(4) == [0, 1764, 3528, 5292, 7056]


def test_region_agent_orderings(states):
    """A good explainer beats random: insertion > deletion for gradients, and the reverse-ish for random."""
    agent, a = RegionAgent(), np.zeros(4, int)
    good = make_explainer("grad", agent).explain(states, a)
    rnd = make_explainer("random", agent, seed=0).explain(states, a)
    ins, dele = Insertion(n_steps=10), Deletion(n_steps=10)
    assert (ins(agent, states, a, good) > dele(agent, states, a, good) + 0.2).all()
    assert ins(agent, states, a, good).mean() > ins(agent, states, a, rnd).mean() + 0.1
    assert dele(agent, states, a, good).mean() < dele(agent, states, a, rnd).mean() - 0.1
    assert Sparseness()(None, None, None, good).mean() > Sparseness()(None, None, None, rnd).mean()
    acc = Accuracy(top_q=0.05)
    assert acc(agent, states, a, good).mean() == 1.0


class ThresholdRegionAgent(RegionAgent):
    """Action REGION while the region's mean value is above 64, else NOOP: the decision rests on
    3.4% of the screen."""

    def forward(self, x):
        region = super().forward(x)[:, 0]
        return torch.stack([region, torch.full_like(region, 8 * 0.25)], dim=1)  # inputs scaled to [0, 1]


def test_top_accuracy_tells_a_real_map_from_flat_and_random():
    states = torch.as_tensor(np.random.default_rng(0).integers(128, 256, (6, 4, 84, 84)), dtype=torch.uint8)
    agent = ThresholdRegionAgent()
    a = agent.act(states)
    assert (a == 0).all()
    maps = {"grad": make_explainer("grad", agent).explain(states, a), "flat": torch.ones(6, 84, 84),
            "random": make_explainer("random", agent, seed=0).explain(states, a)}
    soft, top = Accuracy(), make_metric("top_accuracy")
    assert soft(agent, states, a, maps["flat"]).tolist() == [1.0] * 6  # the soft mask keeps a flat map's whole state
    assert top(agent, states, a, maps["grad"]).tolist() == [1.0] * 6  # the region is in the top 10%
    assert top(agent, states, a, maps["flat"]).tolist() == [0.0] * 6  # a random tenth of the region stays: NOOP
    assert top(agent, states, a, maps["random"]).tolist() == [0.0] * 6
    assert top.top_q == 0.1 and top.name == "top_accuracy"


def test_accuracy_extremes(tiny_agent, states):
    a = tiny_agent.act(states)
    assert Accuracy()(tiny_agent, states, a, torch.ones(4, 84, 84)).tolist() == [1.0] * 4  # m = 1 keeps s
    black = tiny_agent.act(np.zeros((1, 4, 84, 84), np.uint8))[0]
    zero_map = Accuracy()(tiny_agent, states, a, torch.zeros(4, 84, 84))  # m = 0: the black reference
    np.testing.assert_array_equal(zero_map, (a == black).astype(float))


def test_sparseness_matches_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    maps = np.stack([rng.random((84, 84)), rng.random((84, 84)) ** 8, np.zeros((84, 84))]).astype(np.float32)
    maps[2, 40, 40] = 1.0
    ours = Sparseness()(None, None, None, torch.as_tensor(maps))
    ref = quantus.Sparseness(normalise=False, disable_warnings=True, display_progressbar=False)(
        model=None, x_batch=np.zeros((3, 1, 84, 84), np.float32), y_batch=np.zeros(3, int),
        a_batch=maps[:, None].copy(), device="cpu",
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert ours[2] > 0.99 > ours[1] > ours[0]


class _Logits(nn.Module):
    def __init__(self, agent):
        super().__init__()
        self.agent = agent

    def forward(self, x):
        return self.agent.logits(x)


def test_local_lipschitz_clips_by_default_and_gives_the_unclipped_ratio_on_request(tiny_agent, states):
    n, sigma, seed = 2, 6.0, 3
    explainer, a = make_explainer("grad", tiny_agent), np.array([0, 1, 2, 3])
    e = explainer.explain(states, a)

    def by_hand(clip: bool) -> np.ndarray:
        gen, x, best = torch.Generator().manual_seed(seed), torch.as_tensor(states).float(), np.zeros(len(states))
        norm = lambda m: (m / m.flatten(1).max(1).values[:, None, None]).flatten(1).double()  # noqa: E731
        for _ in range(n):
            xp = x + sigma * torch.randn(x.shape, generator=gen)
            xp = xp.clamp(0, 255) if clip else xp
            ratio = (norm(e) - norm(explainer.explain(xp, a))).norm(dim=1) / (x - xp).flatten(1).double().norm(dim=1)
            best = np.maximum(best, ratio.numpy())
        return best

    clipped = LocalLipschitzEstimate(n_samples=n, sigma=sigma, seed=seed)(tiny_agent, states, a, e, explainer)
    unclipped = LocalLipschitzEstimate(n_samples=n, sigma=sigma, seed=seed, clip=False)(tiny_agent, states, a, e, explainer)
    np.testing.assert_allclose(clipped, by_hand(True), rtol=1e-4)
    np.testing.assert_allclose(unclipped, by_hand(False), rtol=1e-4)
    assert not np.allclose(clipped, unclipped)  # Atari screens are mostly black: the clip matters


def test_tied_saliency_is_not_ranked_in_raster_order():
    from xrlkit.metrics import top_pixels

    flat = torch.zeros(2, 84, 84)
    flat[1, 60, 60] = 1.0  # one clear winner, the rest tied
    top = top_pixels(flat, 0.1)
    rows = top[0].nonzero()[:, 0].float()
    assert 30 < rows.mean() < 54 and rows.min() < 10 and rows.max() > 74  # spread over the screen, not its top
    assert top[1, 60, 60] and torch.equal(top_pixels(flat, 0.1), top)  # the order is fixed, run to run
    distinct = torch.arange(84 * 84.0).view(1, 84, 84)  # no ties: plain order by value
    assert top_pixels(distinct, 1 / 84)[0, -1].all() and top_pixels(distinct, 1 / 84).sum() == 84


def test_local_lipschitz_matches_quantus(tiny_agent, states):
    quantus = pytest.importorskip("quantus")
    n, sigma, seed = 3, 4.0, 7
    explainer, a = make_explainer("grad", tiny_agent), np.array([0, 1, 2, 3])
    lle = LocalLipschitzEstimate(n_samples=n, sigma=sigma, seed=seed)
    ours = lle(tiny_agent, states, a, explainer.explain(states, a), explainer)

    # Quantus with the same perturbations (documented draw order) and max-normalised maps.
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(states.shape, generator=gen).numpy() for _ in range(n)]
    x = states.astype(np.float32)

    def perturb(arr, indices, **_):
        return np.clip(arr + sigma * noise.pop(0).reshape(arr.shape), 0, 255)

    def explain(model, inputs, targets, **_):
        m = explainer.explain(torch.as_tensor(inputs).float(), torch.as_tensor(targets)).numpy()
        return (m / m.reshape(len(m), -1).max(1)[:, None, None])[:, None]

    ref = quantus.LocalLipschitzEstimate(
        nr_samples=n, normalise=False, abs=False, perturb_func=perturb, disable_warnings=True,
        display_progressbar=False, return_nan_when_prediction_changes=False,
    )(model=_Logits(tiny_agent).eval(), x_batch=x, y_batch=a, a_batch=explain(None, x, a), explain_func=explain,
      device="cpu")
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    assert (ours > 0).all()


def test_lle_is_deterministic_and_random_is_least_robust(tiny_agent, states):
    a = np.zeros(4, int)
    lle = LocalLipschitzEstimate(n_samples=2)
    grad = make_explainer("grad", tiny_agent)
    g = grad.explain(states, a)
    np.testing.assert_array_equal(lle(tiny_agent, states, a, g, grad), lle(tiny_agent, states, a, g, grad))
    rnd = make_explainer("random", tiny_agent)
    assert lle(tiny_agent, states, a, rnd.explain(states, a), rnd).mean() > lle(tiny_agent, states, a, g, grad).mean()


def test_evaluate_explainers_table(tiny_agent, states):
    explainers = [make_explainer("grad", tiny_agent), make_explainer("random", tiny_agent)]
    metrics = [make_metric(m, **({"n_steps": 4} if m in ("insertion", "deletion") else
                                 {"n_samples": 1} if m == "lle" else {})) for m in METRICS]
    table = evaluate_explainers(tiny_agent, states, explainers, metrics, batch_size=3)
    assert list(table.columns) == ["explainer", "metric", "value", "std", "n_states", "higher_is_better", "ci_low",
                                   "ci_high", "vs_random", "vs_random_low", "vs_random_high", "beats_random"]
    names = set(METRICS) | set(DERIVED_METRICS)
    assert len(table) == 2 * len(names) and (table.n_states == 4).all()
    assert table.value.notna().all() and (table.ci_low <= table.value + 1e-12).all()
    assert (table.value <= table.ci_high + 1e-12).all()
    assert set(table.explainer) == {"grad", "random"} and set(table.metric) == names
    assert table[table.explainer == "random"].beats_random.isna().all()
    t = table.set_index(["explainer", "metric"]).value
    np.testing.assert_allclose(t["grad", "srg"], t["grad", "insertion"] - t["grad", "deletion"])
    np.testing.assert_allclose(t["grad", "road"], t["grad", "road_lerf"] - t["grad", "road_morf"])


def test_rollout_plays_the_agent(tiny_agent):
    r = rollout(tiny_agent, "Breakout", 3, seed=0, every=2, epsilon=0.0)
    assert r.states.shape == (3, 4, 84, 84) and r.states.dtype == np.uint8
    assert r.frames.shape == (3, 210, 160, 3) and r.actions.shape == r.rewards.shape == (3,)
    assert r.step.tolist() == [0, 2, 4] and r.episode.tolist() == [0, 0, 0]  # steps into the first game
    np.testing.assert_array_equal(r.actions, tiny_agent.act(r.states))  # greedy: recorded = recomputed
    np.testing.assert_array_equal(r.states, rollout(tiny_agent, "Breakout", 3, seed=0, every=2).states)


def test_metric_errors(tiny_agent, states, grad_saliency):
    a = np.zeros(4, int)
    with pytest.raises(ValueError, match="unknown metric"):
        make_metric("nope")
    with pytest.raises(ValueError, match="non-negative"):
        Insertion()(tiny_agent, states, a, -grad_saliency - 1)
    with pytest.raises(ValueError, match=r"\[4, 84, 84\]"):
        Deletion()(tiny_agent, states, a, grad_saliency[:2])
    with pytest.raises(ValueError, match="explainer="):
        LocalLipschitzEstimate()(tiny_agent, states, a, grad_saliency)
    with pytest.raises(ValueError, match="top_q"):
        Accuracy(top_q=0)
    with pytest.raises(ValueError, match="unknown order"):
        ROAD(order="middle")
    with pytest.raises(ValueError, match="fractions"):
        ROAD(fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="random"):
        metric_sanity(evaluate_explainers(tiny_agent, states, [make_explainer("grad", tiny_agent)],
                                          [Sparseness()]))


def test_evaluate_explainers_command(tmp_path, tiny_agent, monkeypatch):
    import json

    import pandas as pd

    from xrlkit.checkpoint import save_agent
    from xrlkit.commands import evaluate_explainers as command
    from xrlkit.cli import main

    ckpt = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout")
    out = tmp_path / "res" / "table.csv"
    rc = main(["evaluate-explainers", "--game", "breakout", "--agent", str(ckpt), "--explainers", "grad,random",
               "--metrics", "deletion,sparseness", "--n-states", "2", "--every", "1", "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns)[:8] == ["explainer", "metric", "value", "std", "n_states", "game", "agent",
                                       "higher_is_better"]
    assert {"ci_low", "ci_high", "beats_random"} <= set(table.columns)
    assert len(table) == 4 and (table.game == "Breakout").all()
    assert len(json.loads(out.with_suffix(".json").read_text())) == 4
    assert main(["evaluate-explainers", "--game", "Breakout", "--agent", str(ckpt), "--explainers", "nope"]) == 2
    # the shipped expert and VisionMask by name, the background reference; unwritable --out fails first
    shipped_out = tmp_path / "shipped.csv"
    assert main(["evaluate-explainers", "--game", "Breakout", "--agent", "shipped", "--visionmask", "shipped",
                 "--explainers", "visionmask,random", "--metrics", "accuracy,sparseness", "--reference", "background",
                 "--n-states", "2", "--every", "1", "--out", str(shipped_out)]) == 0
    shipped_table = pd.read_csv(shipped_out).set_index("explainer")
    assert set(shipped_table.index) == {"visionmask", "random"}
    # random is compared with VisionMask on the same states (the default --compare-with), not with itself
    assert shipped_table.loc["random", "vs_visionmask"].notna().all()
    assert shipped_table.loc["visionmask", "vs_visionmask"].isna().all()
    played = []  # a bad --compare-with name is refused before the agent plays a step
    monkeypatch.setattr(command, "rollout", lambda *a, **k: played.append(1))
    assert main(["evaluate-explainers", "--game", "Breakout", "--agent", str(ckpt), "--compare-with", "nope",
                 "--out", str(tmp_path / "never.csv")]) == 2 and not (tmp_path / "never.csv").exists() and not played
    assert main(["evaluate-explainers", "--game", "Boxing", "--agent", "shipped", "--visionmask", "shipped",
                 "--out", str(shipped_out)]) == 2  # nothing ships for Boxing: refused before any work
    (tmp_path / "file").write_text("")
    assert main(["evaluate-explainers", "--game", "Breakout", "--agent", str(ckpt),
                 "--out", str(tmp_path / "file" / "t.csv")]) == 2


def test_least_relevant_first_deletion_is_insertion(tiny_agent, states, grad_saliency):
    """Why there is no deletion_lerf metric: deleting the least salient pixels first shows the
    images insertion shows, in reverse order (reversing the ranking of a map with no ties)."""
    a, n = np.array([0, 1, 2, 3]), 5
    rank = torch.stack([torch.from_numpy(np.argsort(np.argsort(-m.numpy().ravel(), kind="stable"))).float()
                        for m in grad_saliency]).view(4, 84, 84)  # high value = least salient
    lerf = Deletion(n_steps=n).curves(tiny_agent, states, a, rank)
    np.testing.assert_allclose(lerf, Insertion(n_steps=n).curves(tiny_agent, states, a, grad_saliency)[:, ::-1], rtol=1e-6)


def test_imputation_keeps_kept_pixels_and_fills_from_neighbours():
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(84.0), torch.arange(84.0), indexing="ij")
    ramp = (40 + 1.5 * cols + 0.5 * rows).expand(2, 4, 84, 84).clone()  # linear: its own neighbour mean
    removed = torch.zeros(2, 84, 84, dtype=torch.bool)
    removed[0, 20:50, 10:60] = True  # an interior block
    removed[1] = torch.rand(84, 84, generator=gen) < 0.7
    removed[1, :, [0, 83]] = False  # the border stays known, so a linear image is reproduced exactly
    removed[1, [0, 83], :] = False
    exact = impute_linear(ramp, removed, noise=0.0)
    torch.testing.assert_close(exact, ramp, rtol=0, atol=1e-3)
    # one removed pixel: the 1/6 - 1/12 weighted mean of its 8 known neighbours
    img = torch.rand(1, 4, 84, 84, generator=gen) * 255
    one = torch.zeros(1, 84, 84, dtype=torch.bool)
    one[0, 40, 40] = True
    nb = img[0, :, 39:42, 39:42]
    w = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    torch.testing.assert_close(impute_linear(img, one, noise=0.0)[0, :, 40, 40], (nb * w).sum(dim=(1, 2)))
    # a corner pixel: its 3 neighbours' weights renormalised to sum to 1
    corner = torch.zeros(1, 84, 84, dtype=torch.bool)
    corner[0, 0, 0] = True
    expected = (2 * img[0, :, 0, 1] + 2 * img[0, :, 1, 0] + img[0, :, 1, 1]) / 5
    torch.testing.assert_close(impute_linear(img, corner, noise=0.0)[0, :, 0, 0], expected)
    # with noise: kept pixels unchanged, removed ones perturbed, reproducible from the generator
    noisy = impute_linear(ramp, removed, noise=0.01, generator=torch.Generator().manual_seed(3))
    kept = ~removed.unsqueeze(1).expand_as(ramp)
    assert torch.equal(noisy[kept], ramp[kept])
    assert 0.5 < (noisy - exact)[~kept].std() < 5.0  # std 0.01 * 255
    torch.testing.assert_close(noisy, impute_linear(ramp, removed, noise=0.01,
                                                    generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="every pixel"):
        impute_linear(ramp[:1], torch.ones(1, 84, 84, dtype=torch.bool))
    with pytest.raises(ValueError, match="removed"):
        impute_linear(ramp, removed[0])


class _RegionExplainer:
    """The known-correct explanation of :class:`RegionAgent`: 1 on its region, 0 elsewhere."""

    name = "correct"

    def explain(self, states, actions):
        return region_mask().float().expand(len(states), 84, 84).clone()


def test_a_correct_explanation_beats_random_on_every_removal_metric():
    """States: dark screens with the region the agent reads lit to varied levels. Removing the
    region (by a black reference or by imputation from its dark surround) removes the evidence."""
    gen = torch.Generator().manual_seed(0)
    states = (torch.rand(8, 4, 84, 84, generator=gen) * 30).to(torch.uint8)
    levels = 150 + torch.arange(8) * 12
    states[:, :, ROWS, COLS] = levels.view(8, 1, 1, 1).to(torch.uint8)
    agent = RegionAgent()
    metrics = [Insertion(n_steps=10), Deletion(n_steps=10), ROAD("morf"), ROAD("lerf")]
    table = evaluate_explainers(agent, states, [_RegionExplainer(), make_explainer("random", agent, seed=1)],
                                metrics, actions=np.zeros(8, int), compare_with=("random", "correct"))
    correct = table[table.explainer == "correct"].set_index("metric")
    assert set(correct.index) == {"insertion", "deletion", "road_morf", "road_lerf", "srg", "road"}
    assert correct.beats_random.all(), correct[["value", "vs_random", "vs_random_low"]]
    # the same comparison seen from the other side: random's paired gain over the correct map is below 0
    rand = table[table.explainer == "random"].set_index("metric")
    assert (rand.vs_correct_high < 0).all() and correct.vs_correct.isna().all()
    np.testing.assert_allclose(rand.vs_correct, -correct.vs_random)
    sanity = metric_sanity(table)
    assert sanity.separates.all() and (sanity.explainers == 1).all()


def test_ranks_and_bars_read_each_metric_in_its_direction(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from xrlkit import plotting
    from xrlkit.metrics import explainer_ranks

    table = pd.DataFrame([
        {"explainer": e, "metric": m, "value": v, "higher_is_better": m != "deletion", "ci_low": v - 0.01,
         "ci_high": v + 0.01, "beats_random": b}
        for e, b, (ins, dele) in [("good", True, (0.8, 0.1)), ("poor", False, (0.5, 0.4)), ("random", None, (0.5, 0.5))]
        for m, v in [("insertion", ins), ("deletion", dele)]
    ])
    ranks = explainer_ranks(table, ["insertion", "deletion"])
    assert ranks.loc["good"].tolist() == [1, 1] and ranks.loc["random", "deletion"] == 3
    assert ranks.loc["poor", "insertion"] == ranks.loc["random", "insertion"] == 2  # ties share the better rank
    with pytest.raises(ValueError, match="no metric"):
        explainer_ranks(table, ["road"])
    fig = plotting.metric_bars(table, title="t")
    ax = fig.axes[0]
    assert ax.get_title() == "insertion (higher is better)" and fig.axes[1].get_title() == "deletion (lower is better)"
    good, poor, rnd = ax.patches
    assert rnd.get_facecolor()[:3] == matplotlib.colors.to_rgb("tab:red")
    assert poor.get_hatch() == "//" and not good.get_hatch()
    fig.savefig(tmp_path / "bars.png")


def test_bars_of_several_games_one_row_each():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from xrlkit import plotting

    table = pd.DataFrame([{"game": g, "explainer": e, "metric": m, "value": 0.5, "higher_is_better": True}
                          for g in ("Pong", "Breakout") for e in ("grad", "random") for m in ("insertion", "road")])
    fig = plotting.metric_bars(table, marks={"Pong": "AGENT NOT COMPETENT"})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Pong: insertion (higher is better)\nAGENT NOT COMPETENT", "Pong: road (higher is better)\nAGENT NOT COMPETENT",
                      "Breakout: insertion (higher is better)", "Breakout: road (higher is better)"]
    assert fig.axes[0].title.get_color() == "red" and fig.axes[2].title.get_color() == "black"
