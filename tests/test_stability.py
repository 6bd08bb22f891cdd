"""Explanation stability: map agreement against scipy, and the table on agents known to differ."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from test_explainers import RegionAgent

from xrlkit.explainers import make_explainer
from xrlkit.stability import ACROSS, AGAIN, map_agreement, stability_table


def test_agreement_matches_scipy_and_counts_top_pixels():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 84, 84, generator=gen)
    b = a + 0.5 * torch.rand(3, 84, 84, generator=gen)
    b[2] = (b[2] * 4).round()  # ties
    got = map_agreement(a, b, top=0.1)
    for i in range(3):
        assert got["spearman"][i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic, rel=1e-9)
    same = map_agreement(a, a)
    np.testing.assert_allclose(same["spearman"], 1.0)
    np.testing.assert_allclose(same["top_iou"], 1.0)
    flipped = map_agreement(a, -a)
    np.testing.assert_allclose(flipped["spearman"], -1.0)
    np.testing.assert_allclose(flipped["top_iou"], 0.0)
    assert map_agreement(a, torch.zeros_like(a))["spearman"].tolist() == [0.0, 0.0, 0.0]  # constant map
    with pytest.raises(ValueError, match="one shape"):
        map_agreement(a, a[:2])


class ShiftedRegionAgent(RegionAgent):
    """A RegionAgent reading a region 30 px to the right: plays alike, attends elsewhere."""

    def forward(self, x):
        return super().forward(torch.roll(x, shifts=-30, dims=3))


def test_table_tells_agents_that_look_elsewhere_apart():
    states = np.random.default_rng(0).integers(0, 256, (4, 4, 84, 84), dtype=np.uint8)
    agents = [RegionAgent(), RegionAgent(), ShiftedRegionAgent()]

    def make(name, agent, seed):
        return make_explainer(name, agent, **({"seed": seed} if name == "random" else {}))

    # top 3% < the region's 3.4%: the top pixels of a gradient map all lie in the region it reads
    table = stability_table(agents, states, make, ["grad", "random"], top=0.03)
    assert len(table) == 2 * 2 * 2 and (table["n_states"] == 4).all()
    assert (table["ci_low"] <= table["mean"] + 1e-12).all() and (table["mean"] <= table["ci_high"] + 1e-12).all()
    value = table.set_index(["explainer", "comparison", "measure"])["mean"]
    assert value[("grad", AGAIN, "spearman")] == pytest.approx(1.0)
    assert value[("grad", AGAIN, "top_iou")] == pytest.approx(1.0)
    # of the three pairs one agrees fully, two (one region against the other) not at all
    assert value[("grad", ACROSS, "top_iou")] == pytest.approx(1 / 3)
    # random maps agree with nothing
    assert abs(value[("random", AGAIN, "spearman")]) < 0.05 and value[("random", AGAIN, "top_iou")] < 0.1
    with pytest.raises(ValueError, match="two agents"):
        stability_table(agents[:1], states, make, ["grad"])


def test_stability_bars_draw_each_comparison_with_its_interval():
    import matplotlib

    matplotlib.use("Agg")
    from xrlkit import plotting

    table = pd.DataFrame([
        {"explainer": e, "comparison": c, "measure": m, "mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
        for e, base in (("grad", 0.5), ("random", 0.0)) for c, v0 in ((ACROSS, base), (AGAIN, 0.9))
        for m, v in (("spearman", v0), ("top_iou", v0 / 2))
    ])
    fig = plotting.stability_bars(table, title="Pong", top=0.1)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["rank correlation of the maps (higher: more alike)",
                                             "IoU of the top 10% pixels (higher: more alike)"]
    heights = [round(b.get_height(), 6) for b in axes[0].patches]
    assert heights == [0.5, 0.0, 0.9, 0.9]  # across agents for grad, random; then the same agent twice
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [ACROSS, AGAIN]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["grad", "random"]


def test_stability_script_refuses_a_game_without_a_second_seed(monkeypatch, tmp_path, capsys):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import stability_table as script

    with pytest.raises(SystemExit) as stop:
        script.main(["--games", "Boxing", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "no second seed ships for Boxing" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        script.main(["--games", "Pong", "--out", str(tmp_path / "file")])
    assert stop.value.code == 2 and "is a file" in capsys.readouterr().err
