"""Games, environments, encoders, agents and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xrlkit.agents import Agent, QAgent, QNetConfig, RandomAgent, make_encoder
from xrlkit.checkpoint import load_agent, read_meta, save_agent
from xrlkit.envs import make_env, make_vector_env, rgb_frame
from xrlkit.shapes import OBS_SHAPE
from xrlkit.evaluation import evaluate
from xrlkit.games import ATARI_57, ATARI_100K, REFERENCE_SCORES, human_normalized_score, resolve_game, resolve_games


def test_game_lists_and_scores():
    assert len(ATARI_57) == 57 and len(ATARI_100K) == 26
    assert set(ATARI_100K) <= set(ATARI_57)
    assert all(human > random for random, human in REFERENCE_SCORES.values())
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("pong", -20.7) == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["Pong", "pong", "ALE/Pong-v5", "PongNoFrameskip-v4", "ms_pacman", "MsPacman"])
def test_resolve_game_accepts_common_spellings(name):
    assert resolve_game(name) in {"Pong", "MsPacman"}


def test_unknown_game_names_close_matches():
    with pytest.raises(ValueError, match="MsPacman"):
        resolve_game("MsPacmann")
    with pytest.raises(ValueError):
        resolve_games("Pong,NotAGame")
    assert resolve_games("all") == list(ATARI_57)


@pytest.mark.parametrize("protocol", ["ifepaper", "machado"])
def test_env_observations_and_raw_frames(protocol):
    env = make_env("Breakout", protocol, train=True, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == OBS_SHAPE and obs.dtype == np.uint8
    assert rgb_frame(env).shape == (210, 160, 3)
    rewards = [env.step(env.action_space.sample())[1] for _ in range(200)]
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}  # training rewards are sign-clipped
    env.close()


def test_episodic_life_only_in_training():
    def steps_to_first_terminal(train: bool) -> int:
        env = make_env("Breakout", "ifepaper", train=train, seed=1)
        env.reset(seed=1)
        for t in range(1, 5000):
            # FIRE launches the ball, NOOP lets it fall: each launch costs a life.
            _, _, term, trunc, _ = env.step(1 if t % 10 == 0 else 0)
            if term or trunc:
                return t
        return 5000

    assert steps_to_first_terminal(True) < steps_to_first_terminal(False)


def test_unknown_protocol_and_bad_vector_args():
    with pytest.raises(ValueError, match="protocol"):
        make_env("Pong", "v4-ish")
    with pytest.raises(ValueError, match="n_envs"):
        make_vector_env("Pong", 0)
    with pytest.raises(ValueError, match="unknown Atari game"):
        make_env("Pnog")


@pytest.mark.parametrize("backend", ["ale", "gym"])
def test_vector_env_same_step_autoreset(backend):
    env = make_vector_env("Pong", 2, train=False, seed=0, backend=backend)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, *OBS_SHAPE) and obs.dtype == np.uint8
    obs, reward, term, trunc, info = env.step(np.zeros(2, dtype=np.int64))
    assert obs.shape == (2, *OBS_SHAPE) and reward.shape == (2,)
    env.close()


@pytest.mark.parametrize("encoder,features", [("nature", 3136), ("nature-attention", 3136), ("s3ta-ff", 800),
                                              ("impala", 4096), ("ife", 4096)])
def test_encoder_shapes(encoder, features):
    enc = make_encoder(encoder)
    out = enc(torch.rand(3, 4, 84, 84))
    assert out.shape == (3, features) == (3, enc.out_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("encoder,grid", [("ife", (14, 14)), ("nature-attention", (7, 7)), ("s3ta-ff", (10, 10))])
def test_attention_is_a_distribution_over_the_grid(encoder, grid):
    enc = make_encoder(encoder)
    enc(torch.rand(5, 4, 84, 84))
    att = enc.attention
    assert att.shape == (5, *grid)
    assert (att >= 0).all()
    torch.testing.assert_close(att.flatten(1).sum(1), torch.ones(5))


def test_s3ta_heads_each_attend_and_answers_carry_where_they_looked():
    from xrlkit.agents.encoders import spatial_basis

    basis = spatial_basis(10, 10, 8)
    assert basis.shape == (64, 10, 10)
    torch.testing.assert_close(basis[0], torch.ones(10, 10))  # u = v = 0: constant
    assert len({tuple(basis[:, i, j].tolist()) for i in range(10) for j in range(10)}) == 100  # a code per cell
    enc = make_encoder("s3ta-ff")
    with torch.no_grad():  # every query picks the basis code of cell (2, 7): all heads look there
        enc.query[2].weight.zero_()
        enc.query[2].bias.copy_(torch.cat([torch.zeros(8), 50 * basis[:, 2, 7]]).repeat(4))
        features = enc(torch.rand(1, 4, 84, 84))
    assert enc.head_attention.shape == (1, 4, 10, 10)
    assert enc.attention[0].argmax().item() == 2 * 10 + 7 and enc.attention[0, 2, 7] > 0.9
    answer_basis = features[0, 64:128]  # head 0's answer: its 64 values, then the basis where it looked
    torch.testing.assert_close(answer_basis, basis[:, 2, 7], atol=0.1, rtol=0)


def test_uniform_attention_gives_the_features_back_at_their_scale():
    from xrlkit.agents.encoders import SoftAttention

    attend = SoftAttention(8, 16)
    torch.nn.init.zeros_(attend.score[2].weight)  # equal scores everywhere: uniform attention
    x = torch.rand(2, 8, 14, 14)
    weighted, att = attend(x)
    torch.testing.assert_close(att, torch.full((2, 14, 14), 1 / 196))
    torch.testing.assert_close(weighted, x)  # not shrunk 196-fold


def test_ife_hue_cells_see_only_their_6x6_patch():
    enc = make_encoder("ife")
    x = torch.rand(1, 4, 84, 84, requires_grad=True)
    enc.hue.convs(x)[0, :, 3, 5].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    assert rows.min() >= 18 and rows.max() < 24 and cols.min() >= 30 and cols.max() < 36


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("resnet")


@pytest.mark.parametrize("config", [QNetConfig("nature"), QNetConfig("ife", atoms=51, noisy=True)])
def test_qagent_protocol(config, breakout_states):
    agent = QAgent(4, config, seed=0).eval()
    assert isinstance(agent, Agent)
    logits = agent.logits(breakout_states[:8])
    assert logits.shape == (8, 4)
    actions = agent.act(breakout_states[:8])
    assert actions.shape == (8,) and np.array_equal(actions, logits.argmax(1).numpy())
    x = torch.as_tensor(breakout_states[:2]).float().requires_grad_()
    agent.logits(x)[:, 0].sum().backward()
    # the graph reaches the input; its size is not checked: the untrained distributional head saturates
    # (one atom), so its input gradient is ~1e-39, a denormal that importing xrlkit flushes to zero
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"\[B, 4, 84, 84\]"):
        agent.logits(breakout_states[0])


def test_ife_agent_attention_upsampling(breakout_states):
    agent = QAgent(4, QNetConfig("ife")).eval()
    small = agent.attention(breakout_states[:3])
    big = agent.attention(breakout_states[:3], size=(210, 160))
    assert small.shape == (3, 84, 84) and big.shape == (3, 210, 160)
    torch.testing.assert_close(big.sum((1, 2)), torch.ones(3))
    assert torch.equal(small[:, :6, :6], small[:, :1, :1].expand(3, 6, 6))  # one value per 6x6 cell
    with pytest.raises(ValueError, match="attention"):
        QAgent(4, QNetConfig("nature")).attention(breakout_states[:1])


def test_checkpoint_round_trip_and_mismatch(tmp_path, breakout_states):
    agent = QAgent(4, QNetConfig("ife"), ("NOOP", "FIRE", "RIGHT", "LEFT"), seed=3).eval()
    path = save_agent(agent, tmp_path / "a.safetensors", game="Breakout", steps=123, protocol="ifepaper")
    loaded = load_agent(path, game="breakout")
    torch.testing.assert_close(loaded.logits(breakout_states[:4]), agent.logits(breakout_states[:4]))
    assert read_meta(path)["steps"] == 123 and loaded.action_meanings == agent.action_meanings
    with pytest.raises(ValueError, match="trained on 'Breakout'"):
        load_agent(path, game="Pong")
    with pytest.raises(ValueError, match="actions"):
        load_agent(path, n_actions=6)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError):
        load_agent(corrupt)
    with pytest.raises(FileNotFoundError):
        load_agent(tmp_path / "missing.safetensors")


def test_a_write_killed_midway_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """``save_tensors`` writes beside the file and renames: a write that dies halfway leaves the
    old file whole and no temporary file behind."""
    import xrlkit.checkpoint as ck

    path = ck.save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(3)}, {"step": 1})

    def dies_halfway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a header")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ck.save_tensors(path, {"w": torch.zeros(3)}, {"step": 2})
    tensors, meta = ck.load_tensors(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["w.safetensors"]


def test_int8_storage_keeps_each_weight_within_half_a_step_of_its_group_scale(tmp_path):
    """``quantize_int8``: weights (2+ dims) to int8 with one scale per group of ``INT8_GROUP``
    entries of a row (a row it does not divide is one group), 1-D tensors and weights under
    ``min_numel`` to float16, integers untouched; a file saved with ``stored_dtype: int8`` loads
    as float32, and so does one written with one scale per row."""
    from xrlkit.checkpoint import INT8_GROUP, INT8_SCALE, load_tensors, quantize_int8, save_tensors

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 3, 3, 3, generator=g) * torch.logspace(-3, 1, 8)[:, None, None, None]
    weight[5] = 0.0  # an all-zero channel has no scale to divide by
    linear = torch.randn(4, 2 * INT8_GROUP, generator=g) * 1e-2
    linear[:, 0] = 10.0  # one large weight in each row's first group
    tensors = {"conv.weight": weight, "fc.weight": linear, "conv.bias": torch.randn(8, generator=g),
               "steps": torch.tensor([7])}
    stored = quantize_int8(tensors)
    assert stored["conv.weight"].dtype == torch.int8 and stored["conv.weight" + INT8_SCALE].shape == (8, 1)
    assert stored["fc.weight"].dtype == torch.int8 and stored["fc.weight" + INT8_SCALE].shape == (4, 2)
    assert stored["conv.bias"].dtype == torch.float16 and torch.equal(stored["steps"], tensors["steps"])
    path = save_tensors(tmp_path / "w.safetensors", stored, {"stored_dtype": "int8"})
    back, meta = load_tensors(path)
    assert set(back) == set(tensors) and meta["stored_dtype"] == "int8"
    assert back["conv.weight"].dtype == torch.float32 and torch.equal(back["conv.weight"][5], weight[5])
    step = weight.abs().amax(dim=(1, 2, 3)) / 127  # each channel's own resolution, from 1e-3 to 10
    assert ((back["conv.weight"] - weight).abs().amax(dim=(1, 2, 3)) <= step / 2 + 1e-7).all()
    # the second group keeps its own fine resolution; one scale per row would round it all to 0
    second = linear[:, INT8_GROUP:]
    assert ((back["fc.weight"][:, INT8_GROUP:] - second).abs() <= second.abs().amax() / 254 + 1e-7).all()
    assert back["fc.weight"][:, INT8_GROUP:].abs().amax() > 0
    torch.testing.assert_close(back["conv.bias"], tensors["conv.bias"], atol=1e-2, rtol=1e-3)

    small = quantize_int8(tensors, min_numel=weight.numel() + 1)
    assert small["conv.weight"].dtype == torch.float16 and "conv.weight" + INT8_SCALE not in small
    assert small["fc.weight"].dtype == torch.int8

    rowwise = {**stored, "fc.weight" + INT8_SCALE: torch.full((4,), 10.0 / 127)}
    rowwise["fc.weight"] = torch.round(linear / (10.0 / 127)).to(torch.int8)
    old, _ = load_tensors(save_tensors(tmp_path / "old.safetensors", rowwise, {"stored_dtype": "int8"}))
    assert torch.allclose(old["fc.weight"][:, 0], torch.full((4,), 10.0)) and old["fc.weight"].shape == linear.shape


def test_evaluate_reports_unclipped_returns():
    result = evaluate(RandomAgent(4, seed=0), "Breakout", n_episodes=3, seed=0)
    assert len(result.returns) == 3 and all(r >= 0 for r in result.returns)
    assert np.isfinite(result.hns)
    again = evaluate(RandomAgent(4, seed=0), "Breakout", n_episodes=3, seed=0)
    assert again.returns == result.returns  # seeded evaluation is reproducible


def test_vector_backend_auto_reproduces_protocol():
    with pytest.raises(ValueError, match="ale backend"):
        make_vector_env("Breakout", 2, "ifepaper", train=True, backend="ale")  # it would restart the game at a life loss
    env = make_vector_env("Breakout", 2, "ifepaper", train=True)
    assert isinstance(env, __import__("gymnasium").vector.SyncVectorEnv)
    env.close()


def test_agent_protocol_follows_the_checkpoint(tmp_path):
    from xrlkit.agents.load import agent_protocol, load_any_agent

    path = save_agent(QAgent(4, QNetConfig("nature")), tmp_path / "m.safetensors", game="Breakout", protocol="machado")
    assert agent_protocol(load_any_agent(path)) == "machado"
    assert agent_protocol(RandomAgent(4)) == "ifepaper"


def test_every_name_table_refuses_in_one_format_with_close_matches():
    from xrlkit.agents.encoders import ENCODERS
    from xrlkit.envs import get_protocol
    from xrlkit.explainers import make_explainer
    from xrlkit.metrics import make_metric
    from xrlkit.registry import choose

    assert choose("encoder", "ife", ENCODERS) == "ife"
    with pytest.raises(ValueError, match=r"unknown explainer 'gradcm'; choose one of grad, .*; did you mean 'gradcam'"):
        make_explainer("gradcm", None)
    with pytest.raises(ValueError, match=r"unknown protocol 'machadoo'; .*did you mean 'machado'\?$"):
        get_protocol("machadoo")
    with pytest.raises(ValueError, match=r"unknown metric 'zzz'; choose one of accuracy, [^?]*$"):  # nothing close: no hint
        make_metric("zzz")
