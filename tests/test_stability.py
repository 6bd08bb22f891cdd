"""Explanation stability: map agreement against scipy, and the table on agents known to differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from test_explainers import RegionAgent

from xrlkit.explainers import make_explainer
from xrlkit.stability import map_agreement, stability_table


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
    table = stability_table(agents, states, make, ["grad", "random"], top=0.03).set_index(["explainer", "comparison"])
    grad_same = table.loc[("grad", "same agent, two runs")]
    grad_across = table.loc[("grad", "across agents")]
    assert grad_same["spearman"] == pytest.approx(1.0) and grad_same["top_iou"] == pytest.approx(1.0)
    # of the three pairs one agrees fully, two (one region against the other) not at all
    assert grad_across["top_iou"] == pytest.approx(1 / 3)
    rnd = table.loc[("random", "same agent, two runs")]
    assert abs(rnd["spearman"]) < 0.05 and rnd["top_iou"] < 0.1  # random maps agree with nothing
    with pytest.raises(ValueError, match="two agents"):
        stability_table(agents[:1], states, make, ["grad"])
