"""The CPU-first PPO trainer: every encoder and precision trains, resumes after a kill with a
continuous log, stops cleanly on a signal, and refuses bad input before writing anything."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xrlkit.agents.encoders import ENCODERS
from xrlkit.agents.load import agent_origin, load_any_agent, origin_description
from xrlkit.agents.policy import PolicyAgent, PolicyConfig
from xrlkit.agents.ppo import make_config, train
from xrlkit.checkpoint import read_meta
from xrlkit.cli import main
from xrlkit.runtime import bf16_native, default_threads, resolve_runtime, usable_cores

#: 2 envs x 32 steps = 64 agent steps (256 frames) per iteration, one small minibatch pass
TINY = dict(n_envs=2, n_steps=32, batch_size=32, n_epochs=1, eval_episodes=1, eval_max_steps=40,
            checkpoint_every_frames=256, progress=False)
PRECISIONS = ["fp32"] + (["bf16"] if bf16_native() else [])


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def runtime(precision: str = "fp32"):
    return resolve_runtime("cpu", precision, threads=1, env_threads=1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_encoder_and_precision_trains(encoder: str, precision: str, tmp_path: Path) -> None:
    path = train("Breakout", encoder=encoder, total_frames=512, out_dir=tmp_path, runtime=runtime(precision),
                 **TINY)
    log = rows(tmp_path)
    assert [int(r["iteration"]) for r in log] == [1, 2] and int(log[-1]["frames"]) == 512
    assert all(np.isfinite(float(r[k])) for r in log for k in ("policy_loss", "value_loss", "entropy"))
    assert log[-1]["eval_mean"] != "" and (tmp_path / "learning_curve.png").stat().st_size > 0
    meta = read_meta(path)
    assert (meta["algo"], meta["encoder"], meta["game"], meta["frames"]) == ("ppo", encoder, "Breakout", 512)
    assert meta["runtime"]["precision"] == precision and meta["versions"]["torch"] == torch.__version__
    agent = load_any_agent(path, game="Breakout")
    assert isinstance(agent, PolicyAgent) and agent.act_mode == "sample"
    obs = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    assert agent.logits(obs).shape == (3, 4) and agent.act(obs).shape == (3,)


def test_training_changes_the_policy_and_rewards_matter(tmp_path: Path) -> None:
    """The update moves the weights, and the same seed reproduces the same run exactly."""
    a = train("Breakout", total_frames=512, out_dir=tmp_path / "a", runtime=runtime(), **TINY)
    b = train("Breakout", total_frames=512, out_dir=tmp_path / "b", runtime=runtime(), **TINY)
    fresh = PolicyAgent(4, PolicyConfig(), seed=0)
    trained, again = load_any_agent(a), load_any_agent(b)
    obs = np.random.default_rng(1).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    assert not torch.allclose(trained.logits(obs), fresh.logits(obs))
    assert torch.equal(trained.logits(obs), again.logits(obs))
    # both runs in one figure
    assert main(["curves", f"a={a.parent}", f"b={b.parent}", "--out", str(tmp_path / "fig" / "curves.png")]) == 0
    assert (tmp_path / "fig" / "curves.png").stat().st_size > 10_000
    assert main(["curves", f"a={tmp_path}", "--out", str(tmp_path / "x.png")]) == 2


def test_resume_continues_the_count_and_the_log(tmp_path: Path) -> None:
    train("Breakout", total_frames=512, out_dir=tmp_path, runtime=runtime(), **TINY)
    path = train("Breakout", total_frames=1024, out_dir=tmp_path, runtime=runtime(), **TINY)
    log = rows(tmp_path)
    assert [int(r["iteration"]) for r in log] == [1, 2, 3, 4]
    assert [int(r["frames"]) for r in log] == [256, 512, 768, 1024]
    assert read_meta(path)["resumed_from"] == [128]
    # a finished run returns at once, unchanged
    before = path.stat().st_mtime_ns
    assert train("Breakout", total_frames=1024, out_dir=tmp_path, runtime=runtime(), **TINY) == path
    assert path.stat().st_mtime_ns == before


def test_no_resume_starts_afresh(tmp_path: Path) -> None:
    train("Breakout", total_frames=512, out_dir=tmp_path, runtime=runtime(), **TINY)
    train("Breakout", total_frames=256, out_dir=tmp_path, runtime=runtime(), resume=False, **TINY)
    assert [int(r["iteration"]) for r in rows(tmp_path)] == [1]
    assert read_meta(tmp_path / "agent.safetensors")["frames"] == 256


def _start(out: Path, frames: int) -> subprocess.Popen:
    code = ("import sys; from xrlkit.cli import main; sys.exit(main())")
    args = ["train", "--game", "Breakout", "--frames", str(frames), "--out", str(out), "--device", "cpu",
            "--precision", "fp32", "--threads", "1", "--env-threads", "1", "--n-envs", "2", "--no-progress",
            "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1", "--eval-every", "0",
            "--eval-episodes", "1", "--eval-max-steps", "40", "--checkpoint-every", "256"]
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "XRLKIT_ALLOCATOR_SET": "1"})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "no checkpoint written in time"
        time.sleep(0.1)


def test_kill_9_then_resume_gives_a_continuous_log(tmp_path: Path) -> None:
    proc = _start(tmp_path, 256 * 400)
    _wait_for(tmp_path / "resume.safetensors", proc)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    kept = read_meta(tmp_path / "resume.safetensors")["counters"]["steps"]
    train("Breakout", total_frames=(kept * 4) + 512, out_dir=tmp_path, runtime=runtime(),
          **{**TINY, "eval_every_frames": 0})
    frames = [int(r["frames"]) for r in rows(tmp_path)]
    assert frames == list(range(256, kept * 4 + 512 + 1, 256)), frames


def test_sigint_saves_and_says_how_to_resume(tmp_path: Path) -> None:
    proc = _start(tmp_path, 256 * 400)
    _wait_for(tmp_path / "metrics.csv", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    steps = read_meta(tmp_path / "resume.safetensors")["counters"]["steps"]
    assert int(rows(tmp_path)[-1]["steps"]) == steps


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_one_frees_it(tmp_path: Path) -> None:
    from xrlkit.runlog import claim_out_dir

    entry = Path(sys.executable).with_name("xrlkit")  # the console script, re-executed with tcmalloc where installed
    args = ["train", "--game", "Breakout", "--frames", str(256 * 400), "--out", str(tmp_path), "--device", "cpu",
            "--precision", "fp32", "--threads", "1", "--env-threads", "1", "--n-envs", "2", "--no-progress",
            "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1", "--eval-every", "0"]
    proc = subprocess.Popen([str(entry), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "metrics.csv", proc)
        # after a re-exec the process keeps the entry point's name, so `pkill -f "xrlkit train"` finds it
        assert b"xrlkit\x00train\x00" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        with pytest.raises(ValueError, match=f"in use by another xrlkit run \\(pid {proc.pid}\\).*kill -TERM {proc.pid}"):
            claim_out_dir(tmp_path)
    finally:
        proc.kill()
        proc.communicate()
    assert claim_out_dir(tmp_path) == tmp_path  # the kernel dropped the killed run's lock
    assert claim_out_dir(tmp_path) == tmp_path  # this process holds it: claiming again is a no-op


def test_without_flock_a_folder_is_checked_and_a_warning_says_it_is_not_locked(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from xrlkit import runlog

    monkeypatch.setattr(runlog, "fcntl", None)  # as on Windows, which has no fcntl module
    with pytest.warns(RuntimeWarning, match="no flock.*not locked"):
        assert runlog.claim_out_dir(tmp_path / "run") == tmp_path / "run"
    assert (tmp_path / "run").is_dir()
    with pytest.raises(ValueError, match="is a file"):  # the checks still run
        (tmp_path / "file").write_text("")
        runlog.claim_out_dir(tmp_path / "file")


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    train("Breakout", total_frames=256, out_dir=out, runtime=runtime(), **TINY)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    base = ["train", "--frames", "256", "--out", str(out), "--device", "cpu", "--no-progress"]
    cases = {
        "Brekout": base + ["--game", "Brekout"],
        "Pong": base + ["--game", "Pong"],  # the folder holds a Breakout run
        "impala": base + ["--game", "Breakout", "--encoder", "impala"],
        "--frames must be >= 1": ["train", "--game", "Breakout", "--frames", "0", "--out", str(out)],
        "rlzoo": base + ["--game", "Breakout", "--protocol", "rlzoo"],
        "unknown PPO config field": base + ["--game", "Breakout", "--set", "n_step=3"],
    }
    for needle, argv in cases.items():
        assert main(argv) == 2, needle
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--algo", "a3c", "--game", "Breakout", "--frames", "8", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["train", "--encoder", "resnet", "--game", "Breakout", "--frames", "8", "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "--game", "Breakout", "--frames", "8", "--out", str(blocker / "sub")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_runtime_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    rt = resolve_runtime("cpu")
    assert rt.precision == ("bf16" if bf16_native() else "fp32") and rt.channels_last
    assert rt.rollout_threads == 1 and rt.update_threads == default_threads()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_runtime("cpu").precision == "fp32"
    with pytest.raises(ValueError, match="no native bf16"):
        resolve_runtime("cpu", "bf16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        resolve_runtime("cpu", threads=0)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_runtime("cpu", "int8")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_threads_follow_the_cores_the_process_may_use() -> None:
    """A process pinned to its share of the cores (pin_to_share, taskset, a cgroup cpuset) trains
    on that many threads, not on the machine's count."""
    code = ("import json, os\nfrom xrlkit.runtime import cpu_info, pin_to_share, resolve_runtime, usable_cores\n"
            "os.sched_setaffinity(0, range(os.cpu_count()))\n"  # every core this machine (or its cpuset) allows
            "cores = sorted(os.sched_getaffinity(0))\n"
            "pin_to_share(1, len(cores))\n"
            "rt = resolve_runtime('cpu')\n"
            "print(json.dumps([cores, sorted(os.sched_getaffinity(0)), usable_cores(), rt.update_threads,"
            " rt.env_threads, cpu_info()['cores']]))")
    cores, *pinned = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                check=True).stdout)
    assert pinned == [[cores[1 % len(cores)]], 1, 1, 1, 1]  # the second core (or the only one), one thread


def test_threads_follow_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """OMP_NUM_THREADS caps the default threads, as it does torch's: Ray sets it to a task's CPUs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rt = resolve_runtime("cpu")
    assert (rt.update_threads, rt.env_threads, rt.overlap) == (1, 1, False)
    monkeypatch.setenv("OMP_NUM_THREADS", "64")  # never more than the usable cores
    assert resolve_runtime("cpu").update_threads == usable_cores()
    assert resolve_runtime("cpu", threads=2).update_threads == 2  # a flag wins


def test_presets_follow_rlzoo() -> None:
    cfg = make_config("atari")
    assert (cfg.n_envs, cfg.n_steps, cfg.n_epochs, cfg.batch_size) == (8, 128, 4, 256)
    assert (cfg.lr, cfg.clip_coef, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm) == (2.5e-4, 0.1, 0.01, 0.5, 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        make_config("atari", batch_size=5000)


def test_vector_env_returns_results_in_env_order() -> None:
    """The overlapped rollout writes each group's results by position: recv must be in env order."""
    from xrlkit.envs import make_vector_env

    env = make_vector_env("Breakout", 3, "ifepaper", seed=0, backend="ale", threads=2)
    for _ in range(20):
        env.send(np.array([0, 1, 2]))
        *_, info = env.recv()
        assert list(info["env_id"]) == [0, 1, 2]
    env.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_overlap_on_and_off_both_train(overlap: bool, tmp_path: Path) -> None:
    rt = resolve_runtime("cpu", "fp32", threads=1, env_threads=1, overlap=overlap)
    train("Breakout", total_frames=512, out_dir=tmp_path, runtime=rt, **{**TINY, "n_envs": 3, "batch_size": 48})
    assert read_meta(tmp_path / "agent.safetensors")["runtime"]["overlap"] is overlap
    assert [int(r["steps"]) for r in rows(tmp_path)] == [96, 192]


@pytest.mark.parametrize("encoder", ["nature", "nature-attention", "s3ta-ff", "ife"])
def test_policy_agents_work_with_every_explainer(encoder: str) -> None:
    """What the PPO trainer makes is explained like any other agent (IFE: its own attention too)."""
    from xrlkit.explainers import EXPLAINERS, make_explainer

    agent = PolicyAgent(4, PolicyConfig(encoder=encoder), seed=0)
    states = np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    actions = agent.logits(states).argmax(1).numpy()
    options = {"rise": {"n_masks": 20}, "ig": {"n_steps": 4}}
    for name in EXPLAINERS:
        if name == "visionmask" or (name == "ife" and encoder == "nature"):
            continue
        maps = make_explainer(name, agent, **options.get(name, {})).explain(states, actions)
        assert tuple(maps.shape) == (2, 84, 84) and torch.isfinite(torch.as_tensor(maps)).all(), name


def test_init_from_continues_a_trained_policy_and_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run started from an agent file begins with its weights (a near-zero learning rate keeps
    them), says so in its metadata and curve, counts the parent's frames, and a resume must name
    the same file; a policy of another encoder, game or kind is refused before anything is written."""
    from xrlkit.checkpoint import file_sha256

    parent = train("Breakout", total_frames=256, out_dir=tmp_path / "parent", runtime=runtime(), **TINY)
    other = train("Breakout", total_frames=256, out_dir=tmp_path / "other", runtime=runtime(), seed=1, **TINY)
    child = train("Breakout", total_frames=256, out_dir=tmp_path / "child", runtime=runtime(), init_from=parent,
                  lr=1e-12, **TINY)
    fresh = train("Breakout", total_frames=256, out_dir=tmp_path / "fresh", runtime=runtime(), lr=1e-12, **TINY)
    obs = np.random.default_rng(2).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    logits = {name: load_any_agent(p).logits(obs) for name, p in
              {"parent": parent, "child": child, "fresh": fresh}.items()}
    assert torch.allclose(logits["child"], logits["parent"], atol=1e-4)
    assert not torch.allclose(logits["fresh"], logits["parent"], atol=1e-4)
    meta = read_meta(child)
    assert meta["init_from"] == {"file": "agent.safetensors", "sha256": file_sha256(parent), "frames": 256,
                                 "origin": "rl", "value_trained": True}
    assert (meta["frames"], meta["frames_this_run"]) == (512, 256) and read_meta(fresh)["init_from"] is None
    with pytest.raises(ValueError, match="holds another run.*init_from"):
        train("Breakout", total_frames=512, out_dir=tmp_path / "child", runtime=runtime(), init_from=other, **TINY)

    out = tmp_path / "refused"
    base = ["train", "--frames", "256", "--out", str(out), "--device", "cpu", "--no-progress"]
    cases = {
        "encoder 'nature', not 'ife'": base + ["--game", "Breakout", "--encoder", "ife", "--init-from", str(parent)],
        "protocol 'ifepaper', not 'machado'": base + ["--game", "Breakout", "--protocol", "machado",
                                                     "--init-from", str(parent)],
        "was trained on 'Breakout', not 'Pong'": base + ["--game", "Pong", "--init-from", str(parent)],
        "PongTracker cannot start a run": base + ["--game", "Pong", "--init-from", "pong-tracker"],
        "no agent checkpoint": base + ["--game", "Breakout", "--init-from", str(tmp_path / "missing.safetensors")],
        "--init-from applies to --algo ppo": base + ["--game", "Breakout", "--algo", "rainbow",
                                                     "--init-from", str(parent)],
        "--teacher applies to --algo ppo": base + ["--game", "Breakout", "--algo", "rainbow", "--teacher", str(parent)],
    }
    for needle, argv in cases.items():
        assert main(argv) == 2, needle
        assert needle in capsys.readouterr().err, needle
    assert not out.exists() or not any(out.iterdir())


def test_critic_warmup_trains_the_value_head_alone_then_everything(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A student with an untrained value head (as distillation leaves it) can start a run: during
    ``critic_warmup_iterations`` only the critic's weights move, afterwards the policy's too; a run
    from such a student without warm-up says how to ask for one; the result is labelled
    ``distilled+RL``."""
    from xrlkit.checkpoint import save_agent

    parent = train("Breakout", total_frames=256, out_dir=tmp_path / "parent", runtime=runtime(), **TINY)
    student = save_agent(load_any_agent(parent), tmp_path / "student.safetensors",
                         **{**read_meta(parent), "origin": "distilled", "value_trained": False})
    before = load_any_agent(student).state_dict()
    assert (agent_origin(read_meta(parent)), agent_origin(read_meta(student))) == ("RL", "distilled")
    assert (origin_description(read_meta(parent)), origin_description(read_meta(student))) == (
        "trained by RL", "distilled from its teacher")  # neither has an init_from, nor the student a teacher

    def changed(warmup: int, name: str) -> set[str]:
        path = train("Breakout", total_frames=512, out_dir=tmp_path / name, runtime=runtime(), init_from=student,
                     lr=1e-3, critic_warmup_iterations=warmup, **TINY)  # 2 iterations of 64 agent steps
        assert agent_origin(read_meta(path)) == "distilled+RL"
        assert origin_description(read_meta(path)) == "a distilled student (student.safetensors) fine-tuned by PPO for 512 frames"
        after = load_any_agent(path).state_dict()
        return {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}

    assert changed(2, "warm-only") == {"critic"}
    assert "note:" not in capsys.readouterr().err
    assert changed(1, "warm-then-all") >= {"critic", "actor", "body", "encoder"}
    assert changed(0, "no-warmup") >= {"critic", "actor", "body", "encoder"}
    assert "untrained value head (distilled); --set critic_warmup_iterations=N" in capsys.readouterr().err
    with pytest.raises(ValueError, match="critic_warmup_iterations must be >= 0"):
        make_config("atari", critic_warmup_iterations=-1)


def test_kickstarting_pulls_the_policy_toward_the_teacher(tmp_path: Path) -> None:
    """With a teacher in the loss the policy ends nearer the teacher's action distribution than the
    same run without it; the teacher is recorded, its cross-entropy logged, and a teacher without a
    weight, a weight without a teacher or a teacher of another game is refused before any work."""
    from xrlkit.agents.base import RandomAgent
    from xrlkit.agents.distill import distillation_loss
    from xrlkit.agents.scripted import make_scripted_agent
    from xrlkit.envs import action_meanings
    from xrlkit.evaluation import rollout

    teacher = make_scripted_agent("pong-tracker", "Pong")
    # states like the ones the barely trained students meet: a random policy's
    player = RandomAgent(6, action_meanings("Pong"), seed=0)
    states = torch.as_tensor(rollout(player, "Pong", 64, protocol="ifepaper", seed=3, every=4).states)

    def cross_entropy(coef: float, name: str) -> float:
        kick = {"teacher": "pong-tracker", "kickstart_coef": coef} if coef else {}
        path = train("Pong", total_frames=768, out_dir=tmp_path / name, runtime=runtime(), lr=1e-3, **kick,
                     **{**TINY, "n_epochs": 8})  # 3 iterations of 16 updates
        if coef:
            assert read_meta(path)["kickstart_teacher"] == {"class": "PongTracker", "n_actions": 6, "name": "pong-tracker"}
            assert all(float(r["teacher_ce"]) > 0 for r in rows(tmp_path / name))
        with torch.no_grad():
            return float(distillation_loss(load_any_agent(path).logits(states), teacher.logits(states)))

    assert cross_entropy(5.0, "kickstarted") < cross_entropy(0.0, "plain") - 0.2  # measured 1.41 against 1.86
    for kick, needle in (({"teacher": "pong-tracker"}, "kickstart_coef > 0"), ({"kickstart_coef": 1.0}, "needs both"),
                         ({"teacher": "pong-tracker", "kickstart_coef": 1.0, "game": "Breakout"}, "Pong")):
        game = kick.pop("game", "Pong")
        with pytest.raises(ValueError, match=needle):
            train(game, total_frames=256, out_dir=tmp_path / "refused", runtime=runtime(), **kick, **TINY)
        assert not (tmp_path / "refused").exists()
