"""The model-parameter randomisation test: explanations of the shipped expert must change when its
weights are randomised; explainers that never read the weights must be caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrlkit.agents import QAgent, QNetConfig
from xrlkit.agents.load import load_any_agent
from xrlkit.defaults import shipped
from xrlkit.explainers import EXPLAINERS, make_explainer
from xrlkit.sanity import model_randomisation, randomisation_table, randomised_copy, rank_correlation

FAST = {"ig": {"n_steps": 8}, "rise": {"n_masks": 256}, "lime": {"n_samples": 128}}


@pytest.fixture(scope="module")
def expert():
    return load_any_agent(shipped("Breakout", "expert"), game="Breakout")


def test_randomised_copy_changes_every_layer_and_leaves_the_agent(expert, breakout_states):
    before = expert.logits(breakout_states[:4]).detach().clone()
    twin = randomised_copy(expert, seed=1)
    assert torch.equal(expert.logits(breakout_states[:4]).detach(), before)  # the original is untouched
    assert not torch.allclose(twin.logits(breakout_states[:4]).detach(), before)
    again = randomised_copy(expert, seed=1)
    assert torch.equal(twin.logits(breakout_states[:4]).detach(), again.logits(breakout_states[:4]).detach())
    with pytest.raises(ValueError, match="no layers with weights"):
        randomised_copy(load_any_agent("pong-tracker", game="Pong"))


def test_rank_correlation():
    a = torch.rand(3, 84, 84, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[1] = 1 - a[1]
    b[2] = 0.0
    rho = rank_correlation(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0) and np.isnan(rho[2])


#: explainers whose maps on Breakout are mostly the input's own structure: with a black baseline or
#: reference, black pixels (most of the screen) get zero (IG: (x - 0) * gradient) or near-equal
#: saliency for any agent, so the trained and the random agent's maps share most of their ranks.
#: Measured on 8 of the expert's own states: IG 0.95, RISE 0.80, occlusion 0.69 (grad 0.27).
INPUT_DOMINATED = ("ig", "occlusion", "rise")


@pytest.mark.parametrize("name", [n for n in EXPLAINERS if n not in ("ife", "visionmask", "random")])
def test_every_explainer_of_the_expert_depends_on_its_weights(name, expert, breakout_states):
    states = breakout_states[::16][:4]
    rho = model_randomisation(expert, lambda agent: make_explainer(name, agent, **FAST.get(name, {})), states, seed=0)
    # an explainer that never read the weights would give 1.0 on every state
    assert np.nanmean(rho) < (0.97 if name in INPUT_DOMINATED else 0.5), rho


def test_the_table_flags_explainers_that_ignore_the_agent(expert, breakout_states):
    states = breakout_states[::16][:4]
    table = randomisation_table(expert, {
        "grad": lambda agent: make_explainer("grad", agent),
        "random": lambda agent: make_explainer("random", agent, seed=0),  # same seed, same map: ignores the agent
    }, states).set_index("explainer")
    assert table.loc["grad", "passes"] and not table.loc["random", "passes"]
    assert table.loc["random", "spearman"] == pytest.approx(1.0) and table.loc["grad", "n_states"] == 4


def test_attention_of_an_ife_agent_depends_on_its_weights(breakout_states):
    agent = QAgent(4, QNetConfig(encoder="ife"), seed=0).eval()
    rho = model_randomisation(agent, lambda a: make_explainer("ife", a), breakout_states[::16][:4], seed=3)
    assert np.nanmean(rho) < 0.9, rho


def test_randomised_copy_of_an_ife_agent_after_a_gradient_explainer(breakout_states):
    """The IFE encoder keeps its last attention map, which a gradient explainer leaves inside an
    autograd graph; the study's randomisation cell copied such an agent and crashed."""
    agent = QAgent(4, QNetConfig(encoder="ife"), seed=0).eval()
    states = torch.as_tensor(breakout_states[:2])
    make_explainer("grad", agent).explain(states, agent.act(states))
    twin = randomised_copy(agent, seed=0)
    x = states.float()
    assert not torch.allclose(twin.logits(x), agent.logits(x))
