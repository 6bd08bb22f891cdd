"""Rainbow learner: Q heads on every encoder, C51 projection, learning on real Atari data,
resume after a kill, bad inputs, and the train / evaluate CLI."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xrlkit.agents.encoders import ENCODERS
from xrlkit.agents.qnet import QAgent, QNetConfig
from xrlkit.agents.rainbow import PRESETS, RainbowLearner, learning_curve, make_config, train
from xrlkit.agents.replay import Batch, PrioritizedReplay
from xrlkit.checkpoint import load_agent, load_tensors, read_meta
from xrlkit.cli import main
from xrlkit.envs import make_vector_env
from xrlkit.runtime import resolve_runtime

torch.set_num_threads(1)
CPU_FP32 = resolve_runtime("cpu", "fp32", channels_last=False, threads=1)

#: a tiny fastrainbow run: Nature CNN, 2 envs, small batch and buffer, no evaluation
TINY = dict(preset="fastrainbow", encoder="nature", n_envs=2, batch_size=4, buffer_size=2000,
            learning_starts_frames=400, target_update_frames=800, eval_episodes=0, progress=False)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_q_heads_on_every_encoder(encoder: str, breakout_states: np.ndarray) -> None:
    agent = QAgent(4, QNetConfig(encoder=encoder, noisy=True, atoms=51), seed=0).train()
    x = torch.as_tensor(breakout_states[:2]).float() / 255
    assert agent.dist_logits(x).shape == (2, 4, 51)
    q = agent.logits(breakout_states[:2])
    assert q.shape == (2, 4) and torch.isfinite(q).all()
    if agent.has_attention:
        att = agent.encoder.attention
        assert att.shape == {"ife": (2, 14, 14), "nature-attention": (2, 7, 7), "s3ta-ff": (2, 10, 10)}[encoder]
        torch.testing.assert_close(att.flatten(1).sum(1), torch.ones(2))
        assert agent.attention(breakout_states[:2]).shape == (2, 84, 84)
    assert agent.has_attention == (encoder in ("ife", "nature-attention", "s3ta-ff"))


def test_c51_projection_by_hand() -> None:
    cfg = make_config("der")
    learner = RainbowLearner(4, cfg, "nature", CPU_FP32)
    probs = torch.zeros(3, 51)
    probs[:, 25] = 1.0  # all mass on z = 0
    returns = torch.tensor([1.0, 0.2, 50.0])
    discounts = torch.tensor([0.5, 0.0, 0.9])
    m = learner._project(probs, returns, discounts)
    torch.testing.assert_close(m.sum(1), torch.ones(3))
    # z spacing 0.4: R=1.0 -> b = 27.5 (half on atoms 27, 28); R=0.2 -> b = 25.5; 50 -> clipped to 10 (atom 50)
    assert m[0, 27] == pytest.approx(0.5) and m[0, 28] == pytest.approx(0.5)
    assert m[1, 25] == pytest.approx(0.5) and m[1, 26] == pytest.approx(0.5)
    assert m[2, 50] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def breakout_replay() -> PrioritizedReplay:
    """1000 transitions of random Breakout play (2 envs), 3-step returns, clipped rewards."""
    env = make_vector_env("Breakout", 2, train=True, seed=0)
    buf = PrioritizedReplay(2000, 2, n_step=3, gamma=0.99, alpha=0.5, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(500):
        actions = rng.integers(0, 4, 2)
        nxt, r, te, tr, info = env.step(actions)
        buf.add(obs, actions, np.sign(r), te, tr, info.get("final_obs"))
        obs = nxt
    env.close()
    return buf


def rewarding_batch(buf: PrioritizedReplay, size: int) -> Batch:
    """A fixed batch of distinct transitions, half of them (up to) with a non-zero n-step return."""
    pool = buf.sample(2048, beta=1.0)
    _, first = np.unique(pool.indices, return_index=True)
    nonzero = [i for i in first if pool.returns[i] != 0][: size // 2]
    assert nonzero, "no rewarded transition in the replay"
    zero = [i for i in first if pool.returns[i] == 0][: size - len(nonzero)]
    rows = np.array(nonzero + zero)
    return Batch(*(getattr(pool, f.name)[rows] for f in dataclasses.fields(Batch)))


@pytest.mark.parametrize("preset", ["fastrainbow", "der"])
def test_updates_reduce_td_loss_on_fixed_batch(preset: str, breakout_replay: PrioritizedReplay) -> None:
    """Adam steps on one batch of real Breakout transitions (target net fixed) fit it."""
    cfg = make_config(preset, batch_size=32, lr=5e-4)
    learner = RainbowLearner(4, cfg, "nature", CPU_FP32, seed=0)
    fixed = rewarding_batch(breakout_replay, 32)
    if preset == "der":
        # C51's target is the projection of the (near-uniform, untrained) target net's
        # distribution, so its cross-entropy starts at its floor and the expected Q barely moves.
        # Terminal targets (discount 0) make the target distribution the return itself, fixed,
        # whose cross-entropy must fall from ~ln(51) towards its entropy (<= ln 2).
        fixed = dataclasses.replace(fixed, discounts=np.zeros_like(fixed.discounts))

    def fixed_loss() -> float:
        """Mean squared TD error of the expected Q-values (the C51 cross-entropy has an entropy
        floor, so its value is not compared), double-DQN target, same noise each time."""
        torch.manual_seed(1)
        learner.online.reset_noise()
        learner.target.reset_noise()
        obs, nxt = (torch.from_numpy(x).float() / 255 for x in (fixed.obs, fixed.next_obs))
        with torch.no_grad():
            q = learner.online(obs)[torch.arange(32), torch.from_numpy(fixed.actions)]
            a_next = learner.online(nxt).argmax(1)
            y = torch.from_numpy(fixed.returns) + torch.from_numpy(fixed.discounts) * learner.target(nxt)[
                torch.arange(32), a_next]
            return float(((q - y) ** 2).mean())

    before = fixed_loss()
    losses = []
    for _ in range(100):
        loss, priorities = learner.update(fixed)
        assert np.isfinite(loss) and priorities.shape == (32,) and (priorities >= 0).all()
        losses.append(loss)
    breakout_replay.update_priorities(fixed.indices, priorities)
    if preset == "der":
        assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])
    else:
        after = fixed_loss()
        assert after < 0.5 * before, (before, after)


def test_learner_state_roundtrip(breakout_replay: PrioritizedReplay) -> None:
    cfg = make_config("fastrainbow", batch_size=8)
    a = RainbowLearner(4, cfg, "nature", CPU_FP32, seed=0)
    for _ in range(3):
        a.update(breakout_replay.sample(8))
    tensors, meta = a.state()
    b = RainbowLearner(4, cfg, "nature", CPU_FP32, seed=5)
    b.load_state({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta)))
    batch = breakout_replay.sample(8)
    a.update(batch)
    b.update(batch)
    assert b.updates == a.updates == 4
    for pa, pb in zip(a.online.parameters(), b.online.parameters()):
        torch.testing.assert_close(pa, pb)


def test_train_writes_agent_and_learning_curve(tmp_path: Path) -> None:
    path = train("Breakout", total_frames=1600, out_dir=tmp_path, **{**TINY, "eval_episodes": 1},
                 eval_every_frames=800, eval_max_steps=30, checkpoint_every_frames=0)
    assert path == tmp_path / "agent.safetensors"
    meta = read_meta(path)
    assert (meta["frames"], meta["steps"], meta["preset"], meta["encoder"], meta["protocol"]) == (
        1600, 400, "fastrainbow", "nature", "ifepaper")
    assert meta["updates"] > 0 and meta["seed"] == 0 and "command" in meta
    agent = load_agent(path, game="Breakout")
    assert agent.config.encoder == "nature" and not agent.config.noisy
    curve = learning_curve(tmp_path)
    assert curve["frames"] == [800.0, 1600.0]
    assert {"eval_mean", "eval_hns", "train_return_recent"} <= set(curve)
    assert len(learning_curve(tmp_path, as_pandas=True)) == 2


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    kwargs = {**TINY, "total_frames": 2400, "checkpoint_every_frames": 800, "save_replay": True,
              "eval_episodes": 1, "eval_every_frames": 800, "eval_max_steps": 30}
    killed = tmp_path / "killed"
    code = (
        "from xrlkit.agents.rainbow import train\n"
        f"train('Breakout', out_dir={str(killed)!r}, **{kwargs!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume_file = killed / "resume.safetensors"
    deadline = time.time() + 120
    while not resume_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    assert resume_file.exists(), err.decode()[-2000:]
    killed_at = read_meta(resume_file)["counters"]["env_steps"]
    assert 0 < killed_at < 600, "the run finished before it could be killed"
    assert not (killed / "agent.safetensors").exists()

    path = train("Breakout", out_dir=killed, **kwargs)
    meta = read_meta(path)
    assert meta["resumed_from"] == [killed_at]
    assert meta["steps"] == 600 and meta["frames"] == 2400

    # the same run without interruption: the same weights, updates and learning curve
    whole = read_meta(train("Breakout", out_dir=tmp_path / "whole", **kwargs))
    assert whole["updates"] == meta["updates"] > 0
    a, b = load_agent(path, game="Breakout"), load_agent(tmp_path / "whole" / "agent.safetensors", game="Breakout")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    curve_a, curve_b = learning_curve(killed), learning_curve(tmp_path / "whole")
    assert curve_a["frames"] == curve_b["frames"] == [800.0, 1600.0, 2400.0]
    for column in set(curve_a) - {"elapsed_s"}:
        np.testing.assert_array_equal(curve_a[column], curve_b[column], err_msg=column)

    # running again with the same budget resumes at the end and trains no further
    again = read_meta(train("Breakout", out_dir=killed, **kwargs))
    assert again["steps"] == 600 and again["updates"] == meta["updates"]
    assert again["resumed_from"] == [killed_at, 600]


def test_sigint_and_sigterm_save_a_checkpoint_and_say_how_to_resume(tmp_path: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name
        kwargs = {**TINY, "total_frames": 400_000, "checkpoint_every_frames": 0}
        code = ("import signal, sys\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal, even when started in the background
                "from xrlkit.agents.rainbow import train\n"
                "from xrlkit.runlog import TrainingInterrupted\n"
                f"try:\n    train('Breakout', out_dir={str(out)!r}, **{kwargs!r})\n"
                "except TrainingInterrupted as stop:\n    print(stop, file=sys.stderr); sys.exit(130)\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        # the trainer prints its expected time just before its loop; a checkpoint is only written on the signal
        while not (line := proc.stderr.readline()).startswith("expected time"):
            assert line, f"the run ended before training: {proc.communicate()[1][-2000:]}"
        time.sleep(1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert "run the same command again to resume" in err and "Traceback" not in err
        assert read_meta(out / "resume.safetensors")["counters"]["env_steps"] > 0
        assert not (out / "agent.safetensors").exists()


def test_resume_without_saved_replay_starts_new_episodes(tmp_path: Path) -> None:
    kwargs = {**TINY, "checkpoint_every_frames": 800}
    train("Breakout", out_dir=tmp_path, total_frames=1200, **kwargs)
    first = read_meta(tmp_path / "resume.safetensors")
    assert "actions" not in load_tensors(tmp_path / "resume.safetensors")[0]
    meta = read_meta(train("Breakout", out_dir=tmp_path, total_frames=2400, **kwargs))
    assert meta["resumed_from"] == [first["counters"]["env_steps"]] == [300]
    assert meta["steps"] == 600 and meta["updates"] > first["learner"]["updates"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown Rainbow preset"):
        make_config("nope")
    with pytest.raises(ValueError, match="unknown Rainbow config field"):
        make_config("der", batch=3)
    with pytest.raises(ValueError, match="bad Rainbow config"):
        make_config("der", loss="l1")
    with pytest.raises(ValueError, match="unknown encoder"):
        train("Breakout", encoder="resnet", total_frames=8, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown Atari game"):
        train("Brekout", total_frames=8, out_dir=tmp_path, progress=False)
    train("Breakout", total_frames=16, out_dir=tmp_path / "run", **TINY)
    with pytest.raises(ValueError, match="holds another run.*game"):
        train("Pong", total_frames=16, out_dir=tmp_path / "run", **TINY)
    with pytest.raises(ValueError, match="holds another run.*encoder"):
        train("Breakout", total_frames=16, out_dir=tmp_path / "run", **{**TINY, "encoder": "impala"})
    with pytest.raises(ValueError, match="holds another run.*preset"):
        train("Breakout", total_frames=16, out_dir=tmp_path / "run", **{**TINY, "preset": "der"})


def test_presets_are_data() -> None:
    assert set(PRESETS) == {"fastrainbow", "der"}
    fast, der = make_config("fastrainbow"), make_config("der")
    assert (fast.batch_size, fast.n_envs, fast.n_step, fast.atoms, fast.noisy) == (512, 64, 3, 1, False)
    assert fast.adam_eps == pytest.approx(0.005 / 512) and fast.target_update_frames == 32_000
    assert (der.batch_size, der.n_envs, der.n_step, der.atoms, der.noisy) == (32, 1, 20, 51, True)
    assert der.default_encoder == "nature" and der.eps_start == 0.0


def test_cli_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["train", "--algo", "rainbow", "--game", "Breakout", "--encoder", "nature", "--preset", "fastrainbow",
               "--frames", "800", "--seed", "1", "--device", "cpu", "--out", str(out), "--n-envs", "2",
               "--protocol", "ifepaper", "--eval-episodes", "0", "--no-progress",
               "--set", "batch_size=8", "--set", "learning_starts_frames=400", "--set", "buffer_size=1000"])
    assert rc == 0
    assert read_meta(out / "agent.safetensors")["frames"] == 800
    rc = main(["evaluate", "--agent", str(out / "agent.safetensors"), "--game", "Breakout", "--episodes", "2",
               "--protocol", "ifepaper", "--seed", "0", "--max-steps", "50", "--json", str(tmp_path / "ev.json")])
    assert rc == 0
    assert "HNS" in capsys.readouterr().out
    result = json.loads((tmp_path / "ev.json").read_text())
    assert len(result["returns"]) == 2 and "hns" in result
    assert main(["train", "--game", "Breakout", "--frames", "8", "--out", str(out), "--preset", "nope"]) == 2
    assert main(["evaluate", "--agent", str(out / "agent.safetensors"), "--game", "Pong"]) == 2
