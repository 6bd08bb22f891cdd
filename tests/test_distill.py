"""Distillation: the loss, a tiny DAgger run that learns the teacher's choice, resume, metadata."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from xrlkit.agents import distill as distill_module
from xrlkit.agents.distill import DistillConfig, distill, distillation_loss
from xrlkit.agents.load import load_any_agent
from xrlkit.envs import action_meanings
from xrlkit.runtime import resolve_runtime


class PreferRight:
    """A teacher that always prefers RIGHT (action 2 of Breakout's 4), with FIRE second."""

    n_actions = 4
    action_meanings = action_meanings("Breakout")
    device = torch.device("cpu")

    def logits(self, obs):
        return torch.tensor([[0.0, 1.0, 3.0, 0.0]]).repeat(len(obs), 1)

    def act(self, obs, epsilon=0.0):
        return np.full(len(obs), 2)


def test_loss_is_cross_entropy_to_teacher_distribution():
    student, teacher = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 0.0, 0.0]])
    p = torch.softmax(teacher / 2.0, 1)
    expected = -(p * torch.log_softmax(student / 2.0, 1)).sum()
    assert torch.isclose(distillation_loss(student, teacher, 2.0), expected)
    assert distillation_loss(teacher, teacher) < distillation_loss(student, teacher)
    with pytest.raises(ValueError, match="two \\[B, A\\]"):
        distillation_loss(student, teacher[:, :2])


TINY = dict(hidden=16, rounds=2, states_per_round=48, updates_per_round=40, batch_size=16, lr=3e-3, n_envs=2,
            heldout_states=32)


def run(out, cfg=None, **kwargs):
    return distill(PreferRight(), "Breakout", out, cfg or DistillConfig(**TINY), protocol="ifepaper",
                   teacher_id={"name": "prefer-right"}, runtime=resolve_runtime(precision="fp32"), eval_episodes=0,
                   progress=False, **kwargs)


def test_ife_student_learns_the_teachers_choice_and_says_it_was_distilled(tmp_path):
    out = run(tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["states"]) for r in rows] == [48, 96]
    assert float(rows[1]["agreement_before"]) > 0.9  # after round 0 the student already chooses RIGHT
    student = load_any_agent(out, game="Breakout")
    assert student.meta["heldout_agreement"] > 0.9 and student.meta["heldout_states"] == 32
    states = np.load(tmp_path / "round1-data.npz")["states"]
    assert (student.act(states) == 2).mean() > 0.9
    assert student.attention(states[:2]).shape == (2, 84, 84)  # an IFE agent
    meta = student.meta
    assert meta["encoder"] == "ife" and meta["origin"] == "distilled" and meta["teacher"] == {"name": "prefer-right"}
    assert meta["value_trained"] is False and meta["distill"]["updates_per_round"] == 40
    mtime = out.stat().st_mtime_ns
    assert run(tmp_path) == out and out.stat().st_mtime_ns == mtime  # a finished run is not redone
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path, DistillConfig(**{**TINY, "rounds": 3}))


def test_a_crash_loses_nothing_after_the_last_checkpoint(tmp_path, monkeypatch):
    whole = load_any_agent(run(tmp_path / "whole"), game="Breakout")
    calls = {"n": 0}

    def crash_at_update_13(*args):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("killed")
        return distillation_loss(*args)

    monkeypatch.setattr(distill_module, "distillation_loss", crash_at_update_13)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "crashed", checkpoint_every=5)
    monkeypatch.setattr(distill_module, "distillation_loss", distillation_loss)
    resumed = load_any_agent(run(tmp_path / "crashed", checkpoint_every=5), game="Breakout")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # resumed at update 10 with the same minibatches and Adam state


def test_init_from_starts_from_a_students_weights_and_records_it(tmp_path):
    """A student started from another (here: with a near-zero learning rate) keeps its weights,
    records the file it came from, and a resume must name the same file; a student of another
    hidden width is refused before anything is written."""
    from xrlkit.checkpoint import file_sha256

    parent = run(tmp_path / "parent")
    still = DistillConfig(**{**TINY, "lr": 1e-12})
    child = load_any_agent(run(tmp_path / "child", still, init_from=parent), game="Breakout")
    fresh = load_any_agent(run(tmp_path / "fresh", still), game="Breakout")
    obs = np.random.default_rng(0).integers(0, 256, (4, 4, 84, 84), dtype=np.uint8)
    assert torch.allclose(child.logits(obs), load_any_agent(parent).logits(obs), atol=1e-4)
    assert not torch.allclose(fresh.logits(obs), load_any_agent(parent).logits(obs), atol=1e-4)
    assert child.meta["init_from"]["sha256"] == file_sha256(parent) and child.meta["init_from"]["origin"] == "distilled"
    assert fresh.meta["init_from"] is None
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path / "fresh", still, init_from=parent)
    with pytest.raises(ValueError, match="hidden layer of 16 units, not 32; pass --hidden 16"):
        run(tmp_path / "wide", DistillConfig(**{**TINY, "hidden": 32}), init_from=parent)
    assert not (tmp_path / "wide").exists()


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        DistillConfig(rounds=0)
    with pytest.raises(ValueError, match="encoder"):
        DistillConfig(encoder="resnet")
    with pytest.raises(ValueError, match="4 actions, Pong has 6"):
        distill(PreferRight(), "Pong", tmp_path, DistillConfig(**TINY), progress=False)
    run(tmp_path / "ok", DistillConfig(**{**TINY, "rounds": 1}))
    (tmp_path / "ok" / "round0-data.npz").write_bytes(b"not a zip")
    (tmp_path / "ok" / "agent.safetensors").unlink()
    with pytest.raises(ValueError, match="not a distillation round file"):
        run(tmp_path / "ok", DistillConfig(**{**TINY, "rounds": 1}))
