"""The scripted Pong tracker: reading the frames, predicting the ball, steering, and loading by name."""

from __future__ import annotations

import numpy as np
import pytest

from xrlkit.agents.base import Agent
from xrlkit.agents.load import load_any_agent
from xrlkit.agents.scripted import PongTracker, make_scripted_agent
from xrlkit.envs import make_env

BACKGROUND, PADDLE, BALL = 87, 147, 236


def state(paddle_rows: tuple[int, int], ball: tuple[int, int] | None, ball_before: tuple[int, int] | None,
          paddle_before: tuple[int, int] | None = None) -> np.ndarray:
    """A synthetic stacked Pong state ``uint8 [4, 84, 84]``: paddle (rows, inclusive) in columns
    73-75 and a 2x1 ball in the last frame; ``*_before`` in the frame before."""
    s = np.full((4, 84, 84), BACKGROUND, np.uint8)
    for frame, rows, b in ((-1, paddle_rows, ball), (-2, paddle_before or paddle_rows, ball_before)):
        s[frame, rows[0]:rows[1] + 1, 73:76] = PADDLE
        if b is not None:
            s[frame, b[0]:b[0] + 2, b[1]] = BALL
    return s


def test_tracker_is_an_agent_and_reads_paddle_and_ball() -> None:
    tracker = PongTracker()
    assert isinstance(tracker, Agent) and tracker.n_actions == 6
    s = state((60, 66), (30, 40), (32, 38))
    assert tracker._paddle(s[-1]) == pytest.approx(63.0)
    assert tracker._ball(s[-1]) == pytest.approx((30.5, 40.0))
    assert tracker._ball(np.full((84, 84), BACKGROUND, np.uint8)) is None


def test_target_follows_the_ball_across_wall_bounces() -> None:
    tracker = PongTracker()
    middle = (14 + 76) / 2
    assert tracker._target(None, None) == pytest.approx(middle)
    assert tracker._target((40.0, 30.0), (38.0, 32.0)) == pytest.approx(40.0)  # moving away: its height
    assert tracker._target((40.0, 60.0), (40.0, 58.0)) == pytest.approx(40.0)  # flat: straight across
    assert tracker._target((40.0, 60.0), (39.0, 58.0)) == pytest.approx(46.0)  # 12 columns to go, 0.5 down each
    # Up 1 row per column for 32 columns from row 30: hits the top wall (14) at column 56, back to 30.
    assert tracker._target((30.0, 40.0), (31.0, 39.0)) == pytest.approx(14 + (14 - (30.0 - 32.0)))


def test_steering_moves_toward_the_target_and_lets_the_paddle_coast() -> None:
    tracker = PongTracker()
    up, down, noop = (tracker.action_meanings.index(a) for a in ("RIGHT", "LEFT", "NOOP"))
    batch = np.stack([
        state((60, 66), (30, 60), (30, 58)),  # ball crossing at row 30.5, paddle at 63: far above -> up
        state((20, 26), (50, 60), (50, 58)),  # far below -> down
        state((40, 46), (45, 60), (45, 58)),  # within the dead zone -> stay
        state((44, 50), (38, 60), (38, 58), paddle_before=(50, 56)),  # 8 rows off but coasting up -> wait
        state((44, 50), (38, 60), (38, 58), paddle_before=(40, 46)),  # 8 rows off, drifting away -> up
    ])
    np.testing.assert_array_equal(tracker.act(batch), [up, down, noop, noop, up])
    logits = tracker.logits(batch)
    assert logits.shape == (5, 6) and float(logits[0, up]) == tracker.margin and float(logits[0].sum()) == tracker.margin


def test_tracker_reads_real_pong_frames() -> None:
    env = make_env("Pong", "rlzoo", seed=0)
    obs, _ = env.reset(seed=0)
    tracker = PongTracker()
    seen_ball = 0
    for _ in range(120):
        s = np.asarray(obs)
        paddle = tracker._paddle(s[-1])
        assert paddle is not None and 14 <= paddle <= 76
        seen_ball += tracker._ball(s[-1]) is not None
        obs, *_ = env.step(int(tracker.act(s[None])[0]))
    env.close()
    assert seen_ball > 30


def test_scripted_agents_by_name_with_clear_errors() -> None:
    assert isinstance(load_any_agent("pong-tracker", game="Pong"), PongTracker)
    with pytest.raises(ValueError, match="plays Pong, not Breakout"):
        load_any_agent("pong-tracker", game="Breakout")
    with pytest.raises(ValueError, match="unknown scripted agent"):
        make_scripted_agent("breakout-tracker")
    with pytest.raises(ValueError, match="full-screen"):
        make_scripted_agent("pong-tracker", protocol="cropped")
    with pytest.raises(FileNotFoundError, match="pong-tracker"):
        load_any_agent("no-such-agent.zip")
    with pytest.raises(ValueError, match="acts greedily"):
        load_any_agent("pong-tracker", act_mode="sample")


def test_occlusion_of_the_tracker_points_at_what_it_reads() -> None:
    """A known answer for explainers: the tracker's action depends on the ball and its paddle only,
    so occlusion (with the game's background as reference) must peak on them; random saliency does not."""
    from xrlkit.evaluation import rollout
    from xrlkit.explainers import make_explainer
    from xrlkit.grounding import mass_in_objects, pointing_game
    from xrlkit.references import estimate_background

    tracker = PongTracker()
    played = rollout(tracker, "Pong", 150, protocol="rlzoo", seed=0, every=3)
    keep = [i for i, s in enumerate(played.states) if tracker._ball(s[-1]) and tracker._ball(s[-2])][:16]
    assert len(keep) == 16
    states = played.states[keep]
    boxes = [tracker.objects(s) for s in states]
    assert all(len(b) == 4 for b in boxes)  # ball and paddle, in each of the last two frames
    actions = tracker.act(states)
    background = estimate_background(played.states)
    scores = {}
    for name, kw in [("occlusion", {"reference": "background", "background": background}), ("random", {"seed": 0})]:
        saliency = make_explainer(name, tracker, **kw).explain(states, actions).abs()
        scores[name] = (np.nanmean(pointing_game(saliency, boxes, tolerance=2)),
                        np.nanmean(mass_in_objects(saliency, boxes, tolerance=2)))
    assert scores["occlusion"][0] >= 0.6 and scores["occlusion"][1] >= 0.4, scores
    assert scores["random"][0] <= 0.2 and scores["random"][1] <= 0.1, scores
