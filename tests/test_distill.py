"""Distillation: the loss, a tiny DAgger run that learns the teacher's choice, resume, metadata."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from xrlkit.agents.distill import DistillConfig, distill, distillation_loss
from xrlkit.agents.load import load_any_agent
from xrlkit.agents.sb3 import read_xrlkit_meta
from xrlkit.envs import action_meanings


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


def test_ife_student_learns_the_teachers_choice_and_resumes(tmp_path):
    cfg = DistillConfig(hidden=16, rounds=2, states_per_round=48, epochs=4, batch_size=16, lr=3e-3, n_envs=2)
    out = distill(PreferRight(), "Breakout", tmp_path, cfg, protocol="ifepaper", teacher_id={"name": "prefer-right"},
                  eval_episodes=0, progress=False)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["states"]) for r in rows] == [48, 96]
    assert float(rows[1]["agreement"]) > 0.9  # after round 0 the student already chooses RIGHT
    student = load_any_agent(out, game="Breakout")
    states = np.load(tmp_path / "round1-data.npz")["states"]
    assert (student.act(states) == 2).mean() > 0.9
    assert student.attention(states[:2]).shape == (2, 84, 84)  # an IFE agent
    meta = read_xrlkit_meta(out)
    assert meta["encoder"] == "ife" and meta["trained_by"] == "distillation" and meta["teacher"] == {"name": "prefer-right"}

    distill(PreferRight(), "Breakout", tmp_path, cfg, protocol="ifepaper", eval_episodes=0, progress=False)
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 2  # finished rounds are not redone
    with pytest.raises(ValueError, match="other settings"):
        distill(PreferRight(), "Breakout", tmp_path, DistillConfig(rounds=3), protocol="ifepaper", progress=False)
