"""Per-state scores kept on disk (xrlkit.scores) and reused by per_state_scores and by
``xrlkit evaluate-explainers``: only new or changed explainers are scored again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xrlkit.explainers import make_explainer
from xrlkit.metrics import Deletion, Sparseness, per_state_scores, score_table
from xrlkit.scores import ScoreStore, fingerprint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def states(breakout_states):
    return breakout_states[::16][:4]


class Counting:
    """An explainer that counts its calls and can be told to fail (a run killed half-way)."""

    def __init__(self, inner, fail: bool = False) -> None:
        self.inner, self.fail, self.calls = inner, fail, 0
        self.name = inner.name

    def explain(self, states, actions):
        self.calls += 1
        if self.fail:
            raise KeyboardInterrupt("killed")
        return self.inner.explain(states, actions)


def test_known_scores_are_reused_and_only_missing_metrics_computed(tiny_agent, states) -> None:
    metrics = {"deletion": Deletion(n_steps=4), "sparseness": Sparseness()}
    grad = Counting(make_explainer("grad", tiny_agent))
    first = per_state_scores(tiny_agent, states, {"grad": grad}, metrics, batch_size=2)
    assert grad.calls == 2 and set(first["grad"]) == {"deletion", "sparseness"}

    again = per_state_scores(tiny_agent, states, {"grad": grad}, metrics, batch_size=2, known=first)
    assert grad.calls == 2  # every metric known: not explained again
    np.testing.assert_array_equal(again["grad"]["deletion"], first["grad"]["deletion"])

    partial = {"grad": {"deletion": first["grad"]["deletion"]}}
    done = []
    mixed = per_state_scores(tiny_agent, states, {"grad": grad}, metrics, batch_size=2, known=partial,
                             on_explainer=lambda name, s: done.append((name, sorted(s))))
    assert grad.calls == 4 and done == [("grad", ["deletion", "sparseness"])]
    np.testing.assert_allclose(mixed["grad"]["sparseness"], first["grad"]["sparseness"])
    with pytest.raises(ValueError, match="other states"):
        per_state_scores(tiny_agent, states, {"grad": grad}, metrics, known={"grad": {"deletion": np.zeros(3)}})


def test_score_table_adds_derived_metrics_and_paired_comparisons() -> None:
    s = {"a": {"insertion": np.array([0.6, 0.8]), "deletion": np.array([0.2, 0.2])},
         "random": {"insertion": np.array([0.5, 0.5]), "deletion": np.array([0.5, 0.5])}}
    t = score_table(s, {"insertion": True, "deletion": False}).set_index(["explainer", "metric"])
    assert t.loc[("a", "srg"), "value"] == pytest.approx(0.5) and t.loc[("a", "deletion"), "vs_random"] == pytest.approx(0.3)
    assert bool(t.loc[("a", "srg"), "higher_is_better"]) and not bool(t.loc[("a", "deletion"), "higher_is_better"])


def test_store_keeps_scores_per_setup_and_explainer_fingerprint(tmp_path, capsys) -> None:
    path = tmp_path / "t.scores.safetensors"
    setup = fingerprint("Breakout", arrays=(np.zeros((2, 4, 84, 84), np.uint8),))
    ids = {"grad": fingerprint("grad"), "visionmask": fingerprint("visionmask", "sha-1")}
    store = ScoreStore(path, setup, ids)
    assert store.known == {} and not path.exists()
    store.add("grad", {"deletion": np.array([0.1, 0.2])})
    store.add("visionmask", {"deletion": np.array([0.3, 0.4])})

    again = ScoreStore(path, setup, ids)
    np.testing.assert_array_equal(again.known["visionmask"]["deletion"], [0.3, 0.4])
    # a retrained VisionMask: its scores are dropped, the others' reused
    retrained = ScoreStore(path, setup, {**ids, "visionmask": fingerprint("visionmask", "sha-2")})
    assert set(retrained.known) == {"grad"} and "visionmask changed" in capsys.readouterr().out
    # a run that asks for one explainer keeps the others' scores in the file
    ScoreStore(path, setup, {"visionmask": ids["visionmask"]}).add("visionmask", {"deletion": np.array([0.5, 0.6])})
    assert ScoreStore(path, setup, ids).known["grad"]["deletion"].tolist() == [0.1, 0.2]
    # other states: nothing is reused
    other = fingerprint("Breakout", arrays=(np.ones((2, 4, 84, 84), np.uint8),))
    assert other != setup and ScoreStore(path, other, ids).known == {}
    assert "other states" in capsys.readouterr().out


def test_a_killed_run_keeps_the_explainers_it_finished(tiny_agent, states, tmp_path) -> None:
    path, setup = tmp_path / "s.scores.safetensors", fingerprint("x")
    ids = {"grad": fingerprint("grad"), "random": fingerprint("random")}
    store = ScoreStore(path, setup, ids)
    grad, killed = Counting(make_explainer("grad", tiny_agent)), Counting(make_explainer("random", tiny_agent), fail=True)
    with pytest.raises(KeyboardInterrupt):
        per_state_scores(tiny_agent, states, {"grad": grad, "random": killed}, [Sparseness()],
                         known=store.known, on_explainer=store.add)
    resumed = ScoreStore(path, setup, ids)
    assert set(resumed.known) == {"grad"}
    killed.fail = False
    per_state_scores(tiny_agent, states, {"grad": grad, "random": killed}, [Sparseness()],
                     known=resumed.known, on_explainer=resumed.add)
    assert grad.calls == 1 and killed.calls == 2  # grad ran once in all; random failed once, then ran


def test_a_file_that_is_not_a_scores_file_is_a_clear_error(tmp_path, tiny_agent) -> None:
    from xrlkit.checkpoint import save_agent

    agent_file = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout")
    with pytest.raises(ValueError, match="not explainer scores"):
        ScoreStore(agent_file, "s", {})
    corrupt = tmp_path / "c.scores.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="c.scores.safetensors"):
        ScoreStore(corrupt, "s", {})


def test_command_rerun_scores_only_what_changed(tmp_path, tiny_agent, capsys) -> None:
    from xrlkit.checkpoint import save_agent
    from xrlkit.cli import main

    ckpt = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout")
    out = tmp_path / "t.csv"
    args = ["evaluate-explainers", "--game", "Breakout", "--agent", str(ckpt), "--explainers", "grad,random",
            "--metrics", "deletion,sparseness", "--n-states", "3", "--every", "1", "--out", str(out)]
    assert main(args) == 0 and out.with_suffix(".scores.safetensors").is_file()
    first = pd.read_csv(out)
    capsys.readouterr()
    assert main(args) == 0
    assert "reusing the scores of grad, random" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out), first)
    assert main([*args[:-4], "--n-states", "2", "--every", "1", "--out", str(out)]) == 0
    assert "other states" in capsys.readouterr().out
