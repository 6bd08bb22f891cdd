"""Stable-Baselines3 side: loading zips as agents, RL-Zoo observation compatibility, IFE
extractor, hub errors and the train_sb3 loop (tiny untrained models on real Breakout frames)."""

from __future__ import annotations

import csv
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from xrlkit.checkpoint import command_line
from xrlkit.agents.base import greedy_actions
from xrlkit.agents.encoders import IFE
from xrlkit.agents.sb3 import (
    HubError, SB3Agent, XrlkitExtractor, load_from_hub, load_sb3_agent, make_sb3_train_env,
    read_xrlkit_meta, sb3_to_xrlkit_obs, train_sb3, write_xrlkit_meta,
)
from xrlkit.envs import make_env, make_vector_env
from xrlkit.evaluation import evaluate

torch.set_num_threads(1)

SMALL = {
    "ppo": (PPO, "CnnPolicy", {"n_steps": 16, "batch_size": 32, "n_epochs": 1}),
    "a2c": (A2C, "CnnPolicy", {"n_steps": 5}),
    "dqn": (DQN, "CnnPolicy", {"buffer_size": 64, "learning_starts": 0}),
    "qrdqn": (QRDQN, "CnnPolicy", {"buffer_size": 64, "learning_starts": 0, "policy_kwargs": {"n_quantiles": 8}}),
    "recurrentppo": (RecurrentPPO, "CnnLstmPolicy", {"n_steps": 16, "batch_size": 32, "n_epochs": 1,
                                                     "policy_kwargs": {"lstm_hidden_size": 32}}),
}


@pytest.fixture(scope="module")
def sb3_env() -> VecEnv:
    """RL-Zoo's Breakout VecEnv with 2 envs: observations ``[2, 84, 84, 4]``."""
    return make_sb3_train_env("Breakout", n_envs=2, seed=0)


@pytest.fixture(scope="module")
def sb3_obs(sb3_env: VecEnv) -> np.ndarray:
    """16 VecFrameStack observations ``uint8 [16, 84, 84, 4]`` of random play."""
    rng = np.random.default_rng(0)
    obs, out = sb3_env.reset(), []
    for _ in range(8):
        obs, *_ = sb3_env.step(rng.integers(0, 4, 2))
        out.append(obs)
    return np.concatenate(out)


@pytest.fixture(scope="module")
def saved(sb3_env: VecEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[BaseAlgorithm, Path]]:
    """One small untrained model per algorithm (PPO learns one rollout), saved as a zip."""
    out = {}
    root = tmp_path_factory.mktemp("sb3")
    for algo, (cls, policy, kwargs) in SMALL.items():
        model = cls(policy, sb3_env, seed=0, device="cpu", **kwargs)
        if algo == "ppo":
            model.learn(32)
        path = root / f"{algo}.zip"
        model.save(path)
        out[algo] = (model, path)
    return out


@pytest.mark.parametrize("algo", list(SMALL))
def test_load_logits_act_and_gradient(algo: str, saved: dict, sb3_obs: np.ndarray) -> None:
    model, path = saved[algo]
    agent = load_sb3_agent(path, game="Breakout")
    assert agent.algo == algo and agent.n_actions == 4 and agent.action_meanings[1] == "FIRE"
    states = sb3_to_xrlkit_obs(sb3_obs)
    logits = agent.logits(states)
    assert logits.shape == (16, 4) and logits.dtype == torch.float32
    expected, _ = model.predict(sb3_obs, deterministic=True)
    np.testing.assert_array_equal(agent.act(states), expected)
    x = torch.tensor(states[:4], dtype=torch.float32, requires_grad=True)
    agent.logits(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("algo", list(SMALL))
def test_every_explainer_runs_on_sb3_agents(algo: str, saved: dict, sb3_obs: np.ndarray) -> None:
    """Grad-CAM hooks a layer the logits go through (not DQN's target network), and every other
    explainer runs on the SB3 adapter too."""
    from test_explainers import FAST

    from xrlkit.explainers import EXPLAINERS, make_explainer

    agent = load_sb3_agent(saved[algo][1], game="Breakout")
    states, actions = sb3_to_xrlkit_obs(sb3_obs[:2]), np.array([0, 3])
    layer = make_explainer("gradcam", agent).layer
    if algo in ("dqn", "qrdqn"):
        net = "q_net" if algo == "dqn" else "quantile_net"
        assert any(layer is m for m in getattr(agent.policy, net).modules())
        assert not any(layer is m for m in getattr(agent.policy, f"{net}_target").modules())
    for name in (n for n in EXPLAINERS if n not in ("ife", "visionmask")):
        sal = make_explainer(name, agent, **FAST.get(name, {})).explain(states, actions)
        assert sal.shape == (2, 84, 84) and torch.isfinite(sal).all() and (sal >= 0).all(), name


def test_sampling_act_mode_draws_from_the_policy(saved: dict, sb3_obs: np.ndarray, tmp_path: Path) -> None:
    """``act_mode="sample"`` draws actions with the policy's probabilities (what SB3's
    ``predict(deterministic=False)`` does); it is stored in the metadata and refused for Q-values."""
    _, path = saved["ppo"]
    states = sb3_to_xrlkit_obs(sb3_obs[:1]).repeat(4000, axis=0)
    agent = load_sb3_agent(path, game="Breakout", act_mode="sample")
    with torch.no_grad():
        probs = torch.softmax(agent.logits(states[:1]), dim=1)[0].numpy()
    counts = np.bincount(agent.act(states), minlength=4) / len(states)
    np.testing.assert_allclose(counts, probs, atol=0.03)
    assert len(set(agent.act(states[:64]))) > 1  # an untrained policy is near uniform
    # explanations are of the action the policy prefers, not of a draw
    np.testing.assert_array_equal(greedy_actions(agent, states[:300], batch_size=128), np.full(300, probs.argmax()))
    shipped = tmp_path / "ppo.zip"
    shipped.write_bytes(path.read_bytes())
    write_xrlkit_meta(shipped, {"game": "Breakout", "algo": "ppo", "act_mode": "sample"})
    assert load_sb3_agent(shipped).act_mode == "sample"
    assert load_sb3_agent(shipped, act_mode="greedy").act_mode == "greedy"
    with pytest.raises(ValueError, match="Q-values"):
        load_sb3_agent(saved["dqn"][1], act_mode="sample")
    with pytest.raises(ValueError, match="unknown act mode"):
        agent.act_mode = "boltzmann"


def test_rollout_in_sb3_vecenv_matches_xrlkit(saved: dict) -> None:
    """Actions chosen by the SB3 model in its own VecEnv are recomputed from the stored states;
    the xrlkit rlzoo protocol produces the same observations from the same seeds and actions."""
    model, path = saved["ppo"]
    agent = load_sb3_agent(path, game="Breakout")
    venv = make_sb3_train_env("Breakout", n_envs=2, seed=7)
    xenv = make_vector_env("Breakout", 2, "rlzoo", train=True, seed=7)
    obs, (xobs, _) = venv.reset(), xenv.reset(seed=7)
    rng = np.random.default_rng(1)
    stored, chosen = [], []
    for _ in range(60):
        np.testing.assert_array_equal(sb3_to_xrlkit_obs(obs), xobs)
        action, _ = model.predict(obs, deterministic=True)
        stored.append(obs)
        chosen.append(action)
        action = np.where(rng.random(2) < 0.5, rng.integers(0, 4, 2), action)  # also reach other states
        obs, *_ = venv.step(action)
        xobs, *_ = xenv.step(action)
    states = sb3_to_xrlkit_obs(np.concatenate(stored))
    np.testing.assert_array_equal(agent.act(states), np.concatenate(chosen))


def test_rlzoo_eval_env_plays_whole_game() -> None:
    env = make_env("Breakout", "rlzoo", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and not obs[:3].any()  # zero-padded stack
    lives_lost, done, steps = 0, False, 0
    while not done:
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        lives_lost += bool(info.get("life_lost"))
        done, steps = term or trunc, steps + 1
    assert lives_lost == 4 and steps > 50


def test_recurrent_session_matches_predict_with_state(saved: dict) -> None:
    model, path = saved["recurrentppo"]
    agent = load_sb3_agent(path, game="Breakout")
    venv = make_sb3_train_env("Breakout", n_envs=2, seed=3)
    obs, state, start = venv.reset(), None, np.ones(2, bool)
    session = agent.session(2)
    for _ in range(40):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        np.testing.assert_array_equal(session.act(sb3_to_xrlkit_obs(obs), start), action)
        obs, _, start, _ = venv.step(action)
    assert session.state is not None and session.state[0].abs().sum() > 0


@pytest.mark.parametrize("cls", [PPO, RecurrentPPO])
def test_ife_extractor_trains_and_gives_attention(cls: type, sb3_env: VecEnv, sb3_obs: np.ndarray,
                                                  tmp_path: Path) -> None:
    policy = "CnnLstmPolicy" if cls is RecurrentPPO else "CnnPolicy"
    kwargs = {"features_extractor_class": XrlkitExtractor,
              "features_extractor_kwargs": {"encoder": "ife", "hidden": 64}}
    if cls is RecurrentPPO:
        kwargs["lstm_hidden_size"] = 16
    model = cls(policy, sb3_env, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu", policy_kwargs=kwargs)
    before = [p.detach().clone() for p in model.policy.features_extractor.encoder.parameters()]
    model.learn(16)
    after = list(model.policy.features_extractor.encoder.parameters())
    assert isinstance(model.policy.features_extractor.encoder, IFE)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    model.save(tmp_path / "ife.zip")
    agent = load_sb3_agent(tmp_path / "ife.zip", game="Breakout")
    states = sb3_to_xrlkit_obs(sb3_obs[:5])
    torch.testing.assert_close(agent.logits(states), SB3Agent(model).logits(states))
    att = agent.attention(states)
    assert att.shape == (5, 84, 84)
    torch.testing.assert_close(att.sum(dim=(1, 2)), torch.ones(5))
    assert agent.attention(states, size=(210, 160)).shape == (5, 210, 160)


def test_attention_needs_ife(saved: dict) -> None:
    agent = load_sb3_agent(saved["ppo"][1])
    with pytest.raises(ValueError, match="no IFE attention"):
        agent.attention(np.zeros((1, 4, 84, 84), np.uint8))


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable zip"):
        load_sb3_agent(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model"):
        load_sb3_agent(other)
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("data", "{}")
        zf.writestr("policy.pth", b"")
    with pytest.raises(ValueError, match="cannot tell which SB3 algorithm"):
        load_sb3_agent(odd)
    with pytest.raises(FileNotFoundError):
        load_sb3_agent(tmp_path / "missing.zip")


def test_game_mismatch(saved: dict, tmp_path: Path) -> None:
    _, path = saved["dqn"]
    with pytest.raises(ValueError, match="4 actions but Pong has 6"):
        load_sb3_agent(path, game="Pong")
    tagged = tmp_path / "tagged.zip"
    tagged.write_bytes(path.read_bytes())
    write_xrlkit_meta(tagged, {"game": "Breakout", "algo": "dqn", "n_actions": 4})
    assert read_xrlkit_meta(tagged)["game"] == "Breakout"
    with pytest.raises(ValueError, match="trained on 'Breakout', not 'Seaquest'"):
        load_sb3_agent(tagged, game="Seaquest")  # Seaquest has 18 actions, but the metadata decides
    assert load_sb3_agent(tagged).action_meanings[1] == "FIRE"


def test_hub_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_sb3", None)  # not installed
    with pytest.raises(HubError, match="pip install huggingface_sb3"):
        load_from_hub("sb3/ppo-SeaquestNoFrameskip-v4")
    offline = types.ModuleType("huggingface_sb3")

    def fail(repo_id: str, filename: str) -> str:
        raise ConnectionError("huggingface.co unreachable")

    offline.load_from_hub = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_sb3", offline)
    with pytest.raises(HubError, match="could not download ppo-SeaquestNoFrameskip-v4.zip .*load_sb3_agent"):
        load_from_hub("sb3/ppo-SeaquestNoFrameskip-v4")


def _steps_logged(out: Path) -> list[int]:
    with (out / "metrics.csv").open() as f:
        return [int(row["steps"]) for row in csv.DictReader(f)]


def test_train_sb3_writes_loadable_model_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kw = dict(game="Breakout", algo="ppo", encoder="nature", seed=0, device="cpu", out_dir=out, n_envs=2,
              protocol="rlzoo", progress=False, checkpoint_every=64, eval_every=128, eval_episodes=1,
              eval_max_steps=30, hyperparams={"n_steps": 32, "batch_size": 64, "n_epochs": 1})
    final = train_sb3(total_steps=128, **kw)
    meta = read_xrlkit_meta(final)
    assert meta is not None and meta["steps"] == 128 and meta["game"] == "Breakout" and meta["protocol"] == "rlzoo"
    assert meta["hyperparams"]["learning_rate"] == "lin_2.5e-4" and meta["command"] == command_line()  # one provenance helper
    assert load_sb3_agent(final, game="Breakout").algo == "ppo"
    assert _steps_logged(out) == [128]
    assert (out / "checkpoints" / "ppo_128_steps.zip").is_file()
    final = train_sb3(total_steps=256, **kw)  # resumes from 128
    assert read_xrlkit_meta(final)["steps"] == 256
    assert _steps_logged(out) == [128, 256]
    assert train_sb3(total_steps=256, **kw) == final and _steps_logged(out) == [128, 256]  # already done
    with pytest.raises(ValueError, match="trained on 'Breakout'"):
        load_sb3_agent(final, game="Pong")


def test_evaluate_keeps_lstm_state_through_episodes(saved: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = load_sb3_agent(saved["recurrentppo"][1], game="Breakout")
    sessions: list[int] = []
    session = agent.session
    monkeypatch.setattr(agent, "session", lambda n: sessions.append(n) or session(n))
    result = evaluate(agent, "Breakout", 3, protocol="rlzoo", n_envs=2, max_steps=25)
    assert sessions == [2]  # acted through a stateful session, not state by state
    assert result.lengths == [25, 25]  # an episode cut at max_steps ends its env's share
    result = evaluate(agent, "Breakout", 3, protocol="rlzoo", n_envs=2, max_steps=5000)
    assert len(result.returns) == 3 and all(n < 5000 for n in result.lengths)


def test_image_and_discrete_spaces_are_rebuilt_without_unpickling(saved: dict) -> None:
    """So a zip saved under numpy 2 loads under numpy<2 (OCAtari's objects environment), where its
    pickled spaces fail with ModuleNotFoundError: numpy._core."""
    import gymnasium as gym

    from xrlkit.agents.sb3 import _custom_objects, _read_zip

    data, _ = _read_zip(saved["ppo"][1])
    objects = _custom_objects(data)
    assert objects["observation_space"] == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert objects["action_space"] == gym.spaces.Discrete(4)
    assert objects["_last_obs"] is None  # the last rollout's observations are training state
    assert "observation_space" not in _custom_objects({"observation_space": {":type:": "<class 'gymnasium.spaces.dict.Dict'>"}})
