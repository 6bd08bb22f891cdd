"""Worlds beyond Atari behind the Atari observation contract: highway-env, Super Mario Bros and
ViZDoom by name."""

from __future__ import annotations

import numpy as np
import pytest

from xrlkit.agents.base import RandomAgent
from xrlkit.envs import action_meanings, make_env, make_vector_env, rgb_frame
from xrlkit.evaluation import evaluate
from xrlkit.games import WORLDS, human_normalized_score, is_atari, resolve_game

pytest.importorskip("highway_env")
pytest.importorskip("vizdoom")
pytest.importorskip("gym_super_mario_bros")


@pytest.mark.parametrize("name, meanings, screen", [
    ("highway-fast-v0", ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER"), (336, 336, 3)),
    ("SuperMarioBros-1-1-v0", ("NOOP", "RIGHT", "RIGHT+A", "RIGHT+B", "RIGHT+A+B", "A", "LEFT"), (240, 256, 3)),
    ("VizdoomBasic-v1", ("NOOP", "ATTACK", "MOVE_RIGHT", "MOVE_LEFT"), (240, 320, 3)),
    ("VizdoomHealthGathering-v1", ("NOOP", "MOVE_FORWARD", "TURN_RIGHT", "TURN_LEFT"), (240, 320, 3)),
])
def test_a_world_by_name_gives_atari_shaped_observations(name, meanings, screen):
    env = make_env(name.upper(), seed=3)  # names resolve in any case
    try:
        obs, _ = env.reset(seed=3)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0
        assert action_meanings(name) == meanings and env.action_space.n == len(meanings)
        for _ in range(3):
            obs, reward, term, trunc, _ = env.step(env.action_space.sample())
            assert obs.shape == (4, 84, 84) and np.isfinite(reward)
        assert rgb_frame(env).shape == screen
        again = make_env(name, seed=3)
        assert np.array_equal(again.reset(seed=3)[0], env.reset(seed=3)[0])  # seeded resets repeat
        again.close()
    finally:
        env.close()


def test_frames_move_in_the_stack_oldest_first():
    env = make_env("VizdoomBasic-v1", seed=0)
    first, _ = env.reset(seed=0)
    assert all(np.array_equal(first[0], first[k]) for k in range(4))  # the stack starts with copies
    moved = first
    for _ in range(3):
        moved, *_ = env.step(3)  # MOVE_LEFT: the view changes
    assert np.array_equal(moved[0], first[0]) and not np.array_equal(moved[3], first[3])
    env.close()


def test_names_and_scores_of_worlds():
    assert resolve_game("vizdoombasic-v1") == "VizdoomBasic-v1" and not is_atari("VizdoomBasic-v1") and is_atari("Pong")
    with pytest.raises(ValueError, match="did you mean: .*highway-fast-v0"):
        resolve_game("highway-fst-v0")
    assert np.isnan(human_normalized_score("highway-fast-v0", 20.0))
    assert set(WORLDS) >= {"highway-fast-v0", "VizdoomBasic-v1"}
    with pytest.raises(ValueError, match="ale backend runs Atari only"):
        make_vector_env("VizdoomBasic-v1", 2, backend="ale")


def test_a_random_agent_plays_a_doom_episode_through_the_evaluator():
    agent = RandomAgent(4, action_meanings("VizdoomBasic-v1"), seed=0)
    result = evaluate(agent, "VizdoomBasic-v1", 2, seed=5, max_steps=40, n_envs=2)
    assert len(result.returns) == 2 and all(np.isfinite(result.returns)) and np.isnan(result.hns)


def test_ppo_trains_on_a_doom_world_and_the_vector_env_has_send_and_recv(tmp_path):
    from xrlkit.agents.ppo import train
    from xrlkit.checkpoint import read_meta

    env = make_vector_env("VizdoomBasic-v1", 2, seed=1)
    env.send(np.zeros(2, dtype=np.int64))
    obs, reward, *_ = env.recv()  # the in-process backend offers ale-py's pair too
    assert obs.shape == (2, 4, 84, 84) and reward.shape == (2,)
    with pytest.raises(RuntimeError, match="recv"):
        env.recv()
    env.close()
    path = train("VizdoomBasic-v1", total_frames=512, out_dir=tmp_path, n_envs=2, eval_episodes=1, eval_max_steps=20,
                 progress=False, n_steps=32, batch_size=32, n_epochs=1)
    meta = read_meta(path)
    assert meta["game"] == "VizdoomBasic-v1" and meta["frames"] >= 512 and meta["eval_mean"] is not None


def test_rainbow_trains_on_a_world_without_lives(tmp_path):
    """ALE tells a life loss from a game over by its frame counter; a world has neither, and
    every episode that ends is a game (the study's notebook 1 trains its toy agents this way)."""
    from xrlkit.agents.rainbow import train
    from xrlkit.checkpoint import read_meta

    path = train("VizdoomBasic-v1", preset="der", encoder="nature", total_frames=800, out_dir=tmp_path, n_envs=2,
                 batch_size=4, buffer_size=600, learning_starts_frames=400, eval_episodes=1, eval_max_steps=20,
                 checkpoint_every_frames=0, progress=False)
    meta = read_meta(path)
    assert meta["game"] == "VizdoomBasic-v1" and meta["protocol"] == "doom" and meta["updates"] > 0
    resume = read_meta(tmp_path / "resume.safetensors")
    assert len(resume["recent_returns"]) >= 1  # episodes of ViZDoom Basic end within 75 steps


def test_doom_trains_on_scaled_not_clipped_rewards():
    from xrlkit.envs import default_protocol, get_protocol

    assert default_protocol("VizdoomBasic-v1") == "doom" and default_protocol("Pong") == "ifepaper"
    assert default_protocol("Pong", "sb3-ppo") == "rlzoo"
    rewards = np.array([-4.0, 97.0, 0.0])
    np.testing.assert_allclose(get_protocol("doom").learning_reward(rewards), [-0.04, 0.97, 0.0])
    np.testing.assert_allclose(get_protocol("ifepaper").learning_reward(rewards), [-1.0, 1.0, 0.0])


def test_mario_runs_under_numpy_2_and_rewards_progress():
    """nes-py 8.2 was written for numpy 1; its ROM header and RAM reads overflowed ``uint8``
    under numpy 2 (``OverflowError`` at the first reset). Holding RIGHT+B moves Mario right and
    earns reward; the game ends at his death or the flag, and runs are repeatable."""
    from xrlkit.envs import default_protocol, get_protocol

    assert default_protocol("SuperMarioBros-1-1-v0") == "mario"
    returns, distances = [], []
    for _ in range(2):
        env = make_env("SuperMarioBros-1-1-v0", seed=0)
        env.reset(seed=0)
        total, info = 0.0, {}
        for _ in range(60):
            _, reward, terminated, truncated, info = env.step(3)  # RIGHT+B
            total += reward
            assert not truncated
            if terminated:
                break
        returns.append(total)
        distances.append(info["x_pos"])
        env.close()
    assert returns[0] == returns[1] > 0 and distances[0] == distances[1] > 100, (returns, distances)
    np.testing.assert_allclose(get_protocol("mario").learning_reward(np.array([15.0, -15.0])), [1.0, -1.0])


def test_evaluation_reports_crashes_speed_and_distance_of_the_worlds():
    """highway: whether each episode ended in a crash and the mean speed; Mario: the distance."""

    class RunRight:
        def act(self, obs, epsilon=0.0):
            return np.full(len(obs), action_meanings("SuperMarioBros-1-1-v0").index("RIGHT+B"))

    highway = evaluate(RandomAgent(5, action_meanings("highway-fast-v0"), seed=0), "highway-fast-v0", 3,
                       protocol="highway", seed=2, n_envs=2)
    assert set(highway.stats) == {"crashed", "speed"} and len(highway.stats["speed"]) == len(highway.returns) == 3
    assert set(highway.stats["crashed"]) <= {0.0, 1.0} and all(15 <= v <= 40 for v in highway.stats["speed"])
    cut = [r for r, n in zip(highway.returns, highway.lengths) if n < 30]  # ended before the 30 s: crashed
    assert sum(highway.stats["crashed"]) >= len(cut)
    assert highway.to_dict()["stat_means"]["speed"] == pytest.approx(np.mean(highway.stats["speed"]))
    run_right = RunRight()
    mario = evaluate(run_right, "SuperMarioBros-1-1-v0", 1, protocol="mario", seed=0, n_envs=1, max_steps=40)
    assert mario.stats["x_pos"][0] > 100 and mario.stats["flag_get"] == [0.0]
    assert evaluate(run_right, "Pong", 1, seed=0, max_steps=5).stats == {}


def test_highway_trains_on_its_own_rewards_one_step_a_frame():
    from xrlkit.envs import default_protocol, get_protocol

    proto = get_protocol(default_protocol("highway-fast-v0"))
    assert proto.name == "highway" and proto.frame_skip == 1 and not proto.episodic_life
    rewards = np.array([0.0, 0.35, 0.9])  # a crash, slow, fast in the right lane
    np.testing.assert_allclose(proto.learning_reward(rewards), rewards)


def test_highway_steps_in_subprocesses_the_same_as_in_process():
    """highway-env's traffic model is pure Python: ``auto`` runs one process per env (every
    core), and the seeded episodes are the ones the in-process backend plays."""
    from xrlkit.envs import _AsyncVectorEnv

    envs = {backend: make_vector_env("highway-fast-v0", 2, "highway", train=True, seed=4, backend=backend)
            for backend in ("auto", "gym")}
    try:
        assert isinstance(envs["auto"], _AsyncVectorEnv) and not isinstance(envs["gym"], _AsyncVectorEnv)
        single = make_vector_env("highway-fast-v0", 1, "highway")
        assert not isinstance(single, _AsyncVectorEnv)
        single.close()
        first = {b: env.reset(seed=4)[0] for b, env in envs.items()}
        np.testing.assert_array_equal(first["auto"], first["gym"])
        actions = np.array([[3, 0], [3, 2], [1, 4], [0, 3]])
        for a in actions:
            envs["auto"].send(a)
            stepped = envs["auto"].recv()
            expected = envs["gym"].step(a)
            np.testing.assert_array_equal(stepped[0], expected[0])
            np.testing.assert_allclose(stepped[1], expected[1])
    finally:
        for env in envs.values():
            env.close()


def test_subprocess_workers_leave_the_trainers_process_group():
    """Ctrl-C and ``timeout`` signal the whole process group. The ``async`` backend's workers are
    in a group of their own, so they are still there to finish the step the trainer waits on
    before it writes its checkpoint (before, they died and the run lost its last checkpoint)."""
    import os

    group = os.getpgrp()
    env = make_vector_env("VizdoomBasic-v1", 2, "doom", train=True, seed=0, backend="async")
    try:
        assert os.getpgrp() == group  # the trainer stays where Ctrl-C reaches it
        assert all(os.getpgid(process.pid) != group for process in env.processes)
        env.send(np.zeros(2, dtype=np.int64))
        assert env.recv()[0].shape == (2, 4, 84, 84)
    finally:
        env.close()


def test_the_highway_frame_shows_what_the_agent_sees_so_maps_overlay_it():
    """highway-env's gray observation is its render transposed, of a smaller viewport than its
    default render: the figure frame is that viewport, laid out like the observation."""
    import cv2

    env = make_env("highway-fast-v0", "highway", seed=3)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs = env.step(1)[0]
    frame = rgb_frame(env)
    env.close()
    assert frame.shape == (336, 336, 3)
    gray = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(gray.ravel().astype(float), obs[-1].ravel().astype(float))[0, 1] > 0.8


def test_mask_rows_draw_masks_over_a_world_screen_at_its_own_size():
    """A ViZDoom screen is 240x320: each mask is resized to it, not to Atari's 210x160 (which
    showed only the screen's top-left corner behind the masks)."""
    from xrlkit import plotting

    frames = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    masks = np.random.default_rng(1).random((2, 4, 84, 84)).astype(np.float32)
    fig = plotting.mask_rows(frames, masks, ("NOOP", "ATTACK", "MOVE_RIGHT", "MOVE_LEFT"), [1, 3])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * 5
    for ax in panels:
        assert all(im.get_array().shape[:2] == (240, 320) for im in ax.images)
        assert ax.get_xlim() == (-0.5, 319.5) and ax.get_ylim() == (239.5, -0.5)
    assert [ax.get_title() for ax in panels if "(chosen)" in ax.get_title()] == ["ATTACK (chosen)", "MOVE_LEFT (chosen)"]
    with pytest.raises(ValueError, match="do not match"):
        plotting.mask_rows(frames, masks[:1], ("NOOP", "ATTACK", "MOVE_RIGHT", "MOVE_LEFT"), [1, 3])


def test_mask_rows_wrap_a_game_with_many_actions():
    """Seaquest's 18 masks per state: two rows of MASK_COLUMNS, the screen once per state."""
    from xrlkit import plotting

    names = tuple(f"A{i}" for i in range(18))
    frames = np.zeros((2, 210, 160, 3), dtype=np.uint8)
    masks = np.random.default_rng(1).random((2, 18, 84, 84)).astype(np.float32)
    fig = plotting.mask_rows(frames, masks, names, [17, 0])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * 19 and plotting.MASK_COLUMNS == 9
    assert [ax.get_title() for ax in panels if "(chosen)" in ax.get_title()] == ["A17 (chosen)", "A0 (chosen)"]
    assert fig.axes[0].get_gridspec().get_geometry() == (4, 10)


def test_mask_rows_name_each_action_with_its_probability():
    """``probs [N, K]`` puts the agent's probability of each action under its name; a shape that
    does not match the masks is refused."""
    from xrlkit import plotting

    frames = np.zeros((1, 210, 160, 3), dtype=np.uint8)
    masks = np.full((1, 4, 84, 84), 0.5, dtype=np.float32)
    probs = np.array([[0.1, 0.6, 0.2, 0.1]])
    fig = plotting.mask_rows(frames, masks, ("NOOP", "FIRE", "RIGHT", "LEFT"), [1], probs=probs)
    titles = [ax.get_title() for ax in fig.axes if ax.images][1:]
    assert titles == ["NOOP\np=0.10", "FIRE\np=0.60 (chosen)", "RIGHT\np=0.20", "LEFT\np=0.10"]
    with pytest.raises(ValueError, match="probs"):
        plotting.mask_rows(frames, masks, ("NOOP", "FIRE", "RIGHT", "LEFT"), [1], probs=probs[:, :3])


def test_the_old_gym_that_mario_needs_prints_no_notice():
    """Stable-Baselines3 imports the old gym whenever it is installed, and gym 0.26 prints a
    'move to gymnasium' notice on import: xrlkit imports it quietly, so no command prints it."""
    import subprocess
    import sys

    pytest.importorskip("gym")
    done = subprocess.run([sys.executable, "-c", "import xrlkit.envs, gym"], capture_output=True, text=True)
    assert done.returncode == 0 and "unmaintained" not in done.stderr, done.stderr


def test_states_of_highway_play_come_from_every_point_of_its_fixed_length_episodes():
    """rollout's step count runs on across episodes: every 30th step of highway's 30-step episodes
    would be the first of each (the state after a reset, whose older frames highway-env leaves
    black); the stride is raised to one with no factor in common with 30."""
    from xrlkit.evaluation import rollout, spread_every
    from xrlkit.worlds import FIXED_EPISODE_STEPS

    env = make_env("highway-fast-v0")
    config = env.unwrapped.config
    assert FIXED_EPISODE_STEPS["highway-fast-v0"] == config["duration"] * config["policy_frequency"] == 30
    env.close()
    assert [spread_every("highway-fast-v0", k) for k in (1, 7, 10, 30)] == [1, 7, 11, 31]
    assert spread_every("Breakout", 30) == 30

    class Slow:  # brakes: survives whole episodes
        def act(self, obs, epsilon=0.0):
            return np.full(len(obs), action_meanings("highway-fast-v0").index("SLOWER"))

    run = rollout(Slow(), "highway-fast-v0", 4, protocol="highway", seed=0, every=30)
    starts = [not s[-2].any() for s in run.states]
    assert starts == [True, False, False, False], starts
    # every 31st step of 30-step episodes: one state from each episode, one step further in each
    assert run.episode.tolist() == [0, 1, 2, 3] and run.step.tolist() == [0, 1, 2, 3]


def test_a_process_that_rendered_highway_still_stops_on_sigterm():
    """pygame's SDL would swallow SIGINT / SIGTERM (a trainer could then not checkpoint on them)."""
    import os
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from xrlkit.envs import make_env\n"
            "env = make_env('highway-fast-v0', seed=0); env.reset(seed=0); env.step(1)\n"
            "os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
            "print('alive after SIGTERM')\n")
    env = {k: v for k, v in os.environ.items() if k != "SDL_NO_SIGNAL_HANDLERS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == -15 and "alive" not in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-500:])
