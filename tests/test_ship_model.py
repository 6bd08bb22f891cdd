"""scripts/ship_model.py replaces a shipped model only after every check has passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xrlkit.checkpoint import save_agent
from xrlkit.evaluation import EvalResult


@pytest.fixture
def ship_model(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import ship_model

    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(ship_model, "MODELS_DIR", models)
    return ship_model


def test_a_failed_evaluation_leaves_the_shipped_model_and_manifest_as_they_were(ship_model, tiny_agent, tmp_path, monkeypatch):
    models = ship_model.MODELS_DIR
    (models / "manifest.json").write_text("[]\n")
    shipped = models / "Breakout-rainbow-nature-expert.safetensors"
    shipped.write_bytes(b"the model that ships today")
    parent = {"file": "parent.safetensors", "sha256": "ab" * 32, "frames": 600, "origin": "rl", "value_trained": True}
    teacher = {"class": "PolicyAgent", "n_actions": 4, "path": "expert.safetensors", "sha256": "cd" * 32}
    src = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout", frames=1000, seed=3,
                     init_from=parent, frames_this_run=400, kickstart_teacher=teacher)  # train --init-from --teacher
    argv = ["xrlkit", str(src), "--game", "Breakout", "--command", "xrlkit train ...", "--episodes", "1"]

    def crash(*args, **kwargs):
        raise RuntimeError("killed while evaluating")

    monkeypatch.setattr(ship_model, "evaluate", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ship_model.main(argv)
    assert shipped.read_bytes() == b"the model that ships today"
    assert (models / "manifest.json").read_text() == "[]\n"
    assert sorted(p.name for p in models.iterdir()) == ["Breakout-rainbow-nature-expert.safetensors", "manifest.json"]

    monkeypatch.setattr(ship_model, "evaluate", lambda *a, **k: EvalResult("Breakout", returns=[5.0], lengths=[100]))
    assert ship_model.main(argv) == 0
    assert shipped.read_bytes() != b"the model that ships today"  # replaced, now that it passed
    (entry,) = json.loads((models / "manifest.json").read_text())
    assert entry["file"] == shipped.name and entry["eval_mean"] == 5.0 and entry["seed"] == 3
    assert (entry["init_from"], entry["frames"], entry["frames_this_run"]) == (parent, 1000, 400)
    assert entry["kickstart_teacher"] == teacher
    assert not (models / ".staging").exists()


def test_a_world_agent_ships_with_random_play_and_its_episode_stats(ship_model, tmp_path, monkeypatch):
    """Worlds have no human score: the entry carries random play on the same seeds, and the
    world's episode statistics (highway: crashes and speed) for both."""
    from xrlkit.agents.qnet import QAgent, QNetConfig
    from xrlkit.envs import action_meanings

    (ship_model.MODELS_DIR / "manifest.json").write_text("[]\n")
    meanings = action_meanings("highway-fast-v0")
    agent = QAgent(len(meanings), QNetConfig(encoder="nature"), meanings, seed=0).eval()
    src = save_agent(agent, tmp_path / "agent.safetensors", game="highway-fast-v0", frames=1000, seed=1)
    played = []

    def fake_evaluate(policy, game, episodes, **kwargs):
        played.append(type(policy).__name__)
        crashed = [0.0, 0.0] if len(played) == 1 else [1.0, 1.0]
        return EvalResult(game, returns=[20.0, 22.0] if len(played) == 1 else [7.0, 9.0], lengths=[30, 30],
                          stats={"crashed": crashed, "speed": [24.0, 26.0]})

    monkeypatch.setattr(ship_model, "evaluate", fake_evaluate)
    monkeypatch.setattr("xrlkit.competence.evaluate", fake_evaluate)  # random play goes through competence
    argv = ["xrlkit", str(src), "--game", "highway-fast-v0", "--command", "xrlkit train ...", "--episodes", "2"]
    assert ship_model.main(argv) == 0
    (entry,) = json.loads((ship_model.MODELS_DIR / "manifest.json").read_text())
    assert played == ["QAgent", "RandomAgent"]
    assert entry["eval_mean"] == 21.0 and entry["random_eval_mean"] == 8.0 and entry["eval_hns"] is None
    assert entry["eval_stats"] == {"crashed": 0.0, "speed": 25.0} and entry["random_eval_stats"]["crashed"] == 1.0


def test_an_agent_stored_in_int8_is_checked_on_its_own_play_and_loads_back(ship_model, tiny_agent, tmp_path, monkeypatch):
    """--stored-dtype int8: a quarter of float32's size, logits within the bound on states of play,
    and the loaded agent is float32 again; a bound it breaks stops the shipping with nothing written."""
    import torch

    from xrlkit.checkpoint import load_agent

    (ship_model.MODELS_DIR / "manifest.json").write_text("[]\n")
    src = save_agent(tiny_agent, tmp_path / "agent.safetensors", game="Breakout", frames=1000, seed=3)
    monkeypatch.setattr(ship_model, "evaluate", lambda *a, **k: EvalResult("Breakout", returns=[5.0], lengths=[100]))
    argv = ["xrlkit", str(src), "--game", "Breakout", "--command", "xrlkit train ...", "--episodes", "1",
            "--stored-dtype", "int8", "--eval-seed", "7"]
    assert ship_model.main(argv) == 0
    (entry,) = json.loads((ship_model.MODELS_DIR / "manifest.json").read_text())
    assert entry["stored_dtype"] == "int8" and entry["max_logit_change_int8"] <= 0.05 and "init_from" not in entry
    assert entry["logit_change_on"] == "64 states of the agent's play (every 8th step, seed 7)"
    packed = ship_model.MODELS_DIR / entry["file"]
    assert packed.stat().st_size < 0.3 * src.stat().st_size
    assert next(load_agent(packed, game="Breakout").parameters()).dtype == torch.float32

    # a storage that doubles every weight breaks the bound
    monkeypatch.setattr("xrlkit.checkpoint.quantize_int8", lambda t, **kw: {k: v * 2 for k, v in t.items()})
    with pytest.raises(SystemExit, match="int8 weights change the logits by .* on 64 states of the agent's play"):
        ship_model.main(argv)
    assert [e["file"] for e in json.loads((ship_model.MODELS_DIR / "manifest.json").read_text())] == [entry["file"]]


def test_a_visionmask_stored_in_int8_keeps_its_small_convs_in_float16(ship_model, tiny_agent, tmp_path, monkeypatch):
    """--stored-dtype int8 for a VisionMask: weights of VISIONMASK_INT8_MIN_NUMEL entries or more in
    int8, the first conv and the other small ones in float16; the masks checked on states of the
    expert's play; the manifest entry says how it is stored."""
    from safetensors import safe_open

    from xrlkit.checkpoint import INT8_SCALE, VISIONMASK_INT8_MIN_NUMEL
    from xrlkit.checkpoint import agent_identity
    from xrlkit.visionmask import VisionMask

    (ship_model.MODELS_DIR / "manifest.json").write_text("[]\n")
    expert = save_agent(tiny_agent, tmp_path / "expert.safetensors", game="Breakout", frames=1000, seed=3)
    monkeypatch.setattr(ship_model, "shipped", lambda game, role: expert)
    model = VisionMask(4, "mobilenet", reference_mode="black", action_meanings=tiny_agent.action_meanings,
                       game="Breakout", agent_id=agent_identity(tiny_agent, expert), head_channels=16)
    src = model.save(tmp_path / "vm.safetensors", train_config={"lambda_rank": 1.0})
    argv = ["visionmask", str(src), "--game", "Breakout", "--command", "bash scripts/train_default_visionmask.sh ...",
            "--stored-dtype", "int8"]
    assert ship_model.main(argv) == 0
    (entry,) = json.loads((ship_model.MODELS_DIR / "manifest.json").read_text())
    assert entry["stored_dtype"] == "int8" and entry["max_mask_change"] <= ship_model.MASK_CHANGE_BOUND
    assert entry["lambda_rank"] == 1.0  # the loss it was trained with
    with safe_open(str(ship_model.MODELS_DIR / entry["file"]), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    weights = {k: v for k, v in model.state_dict().items() if v.is_floating_point() and v.dim() >= 2}
    first = next(iter(weights))
    assert weights[first].numel() < VISIONMASK_INT8_MIN_NUMEL and dtypes[first] == "F16"
    big = [k for k, v in weights.items() if v.numel() >= VISIONMASK_INT8_MIN_NUMEL]
    assert big and all(dtypes[k] == "I8" and k + INT8_SCALE in dtypes for k in big)


def test_a_student_of_a_copy_of_the_shipped_expert_names_the_shipped_file(ship_model, tiny_agent, tmp_path, monkeypatch):
    """A student distilled from (or kickstarted by) a copy of the shipped expert (same SHA-256, another
    path) names the shipped file, which a clone has; a teacher with other bytes keeps the path it was
    read from."""
    import os

    from xrlkit.checkpoint import file_sha256

    models = ship_model.MODELS_DIR
    expert = models / "Breakout-ppo-nature-expert.safetensors"
    expert.write_bytes(b"the shipped expert's weights")
    monkeypatch.setattr(ship_model, "shipped", lambda game, role: expert if role == "expert" else None)
    monkeypatch.setattr(ship_model, "evaluate", lambda *a, **k: EvalResult("Breakout", returns=[5.0], lengths=[100]))
    for weights, named in ((expert.read_bytes(), os.path.relpath(expert, models.parents[2])), (b"another expert", None)):
        (models / "manifest.json").write_text("[]\n")
        copy = tmp_path / "runs" / "teacher.safetensors"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(weights)
        teacher = {"class": "PolicyAgent", "n_actions": 4, "path": str(copy), "sha256": file_sha256(copy)}
        src = save_agent(tiny_agent, tmp_path / "student.safetensors", game="Breakout", frames=0, seed=1,
                         origin="distilled", teacher=teacher, heldout_agreement=0.95, kickstart_teacher=teacher)
        argv = ["xrlkit", str(src), "--game", "Breakout", "--role", "ife", "--command", "xrlkit distill ...", "--episodes", "1"]
        assert ship_model.main(argv) == 0
        (entry,) = json.loads((models / "manifest.json").read_text())
        assert entry["teacher"] == entry["kickstart_teacher"] == {**teacher, "path": named or str(copy)}
