"""Object grounding: scoring on hand-made boxes and maps; OCAtari boxes only where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrlkit.envs import make_env
from xrlkit.explainers import make_explainer
from xrlkit.grounding import (
    ObjectDetector, ObjectStates, boxes_mask, grounding_table, iou_top, load_object_states, mass_in_objects,
    pointing_game, record_object_states, save_object_states, scale_boxes,
)


def test_scale_boxes_maps_the_screen_to_84():
    assert scale_boxes([(0, 0, 160, 210), (80, 105, 16, 21)]) == [(0, 0, 84, 84), (42, 42, 8.4, 8.4)]


def test_boxes_mask_with_tolerance():
    m = boxes_mask([(10, 20, 4, 2)])
    assert m.sum() == 8 and m[20:22, 10:14].all()
    assert boxes_mask([(10, 20, 4, 2)], tolerance=1).sum() == 6 * 4
    assert boxes_mask([(82.5, 82.5, 5, 5)]).sum() == 4  # clipped at the border, partial pixels count
    with pytest.raises(ValueError, match="negative"):
        boxes_mask([(0, 0, -1, 2)])


def test_pointing_game_hits_misses_and_tolerance():
    sal = torch.zeros(3, 84, 84)
    sal[0, 30, 40] = 1  # inside box
    sal[1, 30, 45] = 1  # one pixel right of the box edge (box covers columns 38..43)
    sal[2, 5, 5] = 1
    boxes = [[(38, 28, 6, 4)], [(38, 28, 6, 4)], []]
    np.testing.assert_array_equal(pointing_game(sal, boxes, tolerance=0), [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(pointing_game(sal, boxes, tolerance=2), [1.0, 1.0, np.nan])
    tied = torch.zeros(2, 84, 84)
    tied[0, 5, 5] = tied[0, 30, 40] = 1  # two tied peaks, one in the box: half a hit, whatever their order
    np.testing.assert_allclose(pointing_game(tied, boxes[:2], tolerance=0), [0.5, 24 / 7056])  # all-zero map: chance
    assert pointing_game(torch.ones(1, 84, 84), [[(0, 42, 84, 42)]], tolerance=0)[0] == 0.5  # a flat map is chance, not a hit


def test_mass_in_objects():
    sal = torch.zeros(2, 84, 84)
    sal[0, :42] = 1  # top half
    sal[1, 0, 0] = 3
    sal[1, 50, 50] = 1
    boxes = [[(0, 0, 84, 21)], [(0, 0, 1, 1), (0, 0, 2, 2)]]  # overlapping boxes count once
    np.testing.assert_allclose(mass_in_objects(sal, boxes), [0.5, 0.75])
    np.testing.assert_array_equal(mass_in_objects(torch.zeros(1, 84, 84), [[(0, 0, 5, 5)]]), [np.nan])
    with pytest.raises(ValueError, match="one list per state"):
        mass_in_objects(sal, boxes[:1])
    with pytest.raises(ValueError, match="non-negative"):
        mass_in_objects(-sal, boxes)


def test_iou_top_ranks_the_box_pixels_first():
    boxes = [[(10, 20, 4, 2)]] * 3
    perfect = boxes_mask(boxes[0][0:1]).float()[None]
    half = perfect.clone()
    half[0, 20:22, 10:12] = 0  # 4 of the 8 box pixels lose their place to 4 outside pixels
    half[0, 50, 50:54] = 1
    flat = torch.ones(1, 84, 84)  # every pixel ties: the whole screen is the top region
    np.testing.assert_allclose(iou_top(torch.cat([perfect, half, flat]), boxes), [1.0, 4 / 12, 8 / 7056])
    assert np.isnan(iou_top(perfect, [[]])[0])


def test_grounding_table_on_hand_made_maps():
    n = 40
    rng = np.random.default_rng(0)
    boxes = [[(float(rng.integers(0, 70)), float(rng.integers(0, 70)), 6.0, 6.0)] for _ in range(n)]
    on_objects = torch.stack([boxes_mask(b).float() for b in boxes])
    maps = {"on objects": on_objects, "random": torch.rand(n, 84, 84, generator=torch.Generator().manual_seed(0))}
    table = grounding_table(maps, boxes, game="Toy").set_index(["method", "measure"])
    assert set(table.columns) >= {"game", "mean", "ci_low", "ci_high", "n_states", "beats_random"}
    for measure in ("pointing", "mass_in_boxes", "iou_topk"):
        assert table.loc[("on objects", measure), "mean"] == 1.0
        assert table.loc[("on objects", measure), "beats_random"]
        assert table.loc[("random", measure), "mean"] < 0.1
    assert table.loc[("random", "mass_in_boxes"), "ci_low"] <= 36 / 7056 <= table.loc[("random", "mass_in_boxes"), "ci_high"]
    assert (table["n_states"] == n).all() and (table["game"] == "Toy").all()
    with pytest.raises(ValueError, match="no state has boxes"):
        grounding_table({"x": on_objects[:2]}, [[], []])


def test_object_states_round_trip_and_clear_errors(tmp_path):
    states = np.zeros((3, 4, 84, 84), dtype=np.uint8)
    objects = ObjectStates(states, [[(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 1.0, 1.0)], [], [(0.5, 0.5, 2.0, 2.0)]],
                           [["Ball", "Player"], [], ["Player"]], [[0, 0], [], [3]], {"game": "Pong"})
    back = load_object_states(save_object_states(tmp_path / "Pong.npz", objects))
    assert (back.boxes, back.labels, back.ages, back.meta) == (objects.boxes, objects.labels, objects.ages, objects.meta)
    assert back.only(["Player"]) == [[(5.0, 6.0, 1.0, 1.0)], [], [(0.5, 0.5, 2.0, 2.0)]]
    assert back.only(max_age=0) == [[(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 1.0, 1.0)], [], []]
    states2, boxes2, kept = back.spread(2, ignore=["Ball"])
    assert len(states2) == 2 and kept == ["Player"] and boxes2 == [[(5.0, 6.0, 1.0, 1.0)], [(0.5, 0.5, 2.0, 2.0)]]
    with pytest.raises(FileNotFoundError, match="scripts/object_boxes.py"):
        load_object_states(tmp_path / "Breakout.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an object-box file"):
        load_object_states(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="uint8"):
        ObjectStates(states[:, :3], [[]] * 3, [[]] * 3, [[]] * 3)
    with pytest.raises(ValueError, match="3 states, 2 box lists"):
        ObjectStates(states, [[]] * 2, [[]] * 3, [[]] * 3)


def test_shipped_pong_boxes_span_whole_games_and_sit_on_the_screen():
    objects = load_object_states("Pong")
    assert len(objects.states) >= 256 and objects.meta["game"] == "Pong"
    assert objects.meta["seeds"][1] > objects.meta["seeds"][0]  # more than one game, late game included
    assert all(objects.boxes) and sum("Ball" in lb for lb in objects.labels) > len(objects.states) // 2
    for bx in objects.boxes:
        for x, y, w, h in bx:
            assert 0 <= x and 0 <= y and x + w <= 84.5 and y + h <= 84.5 and 0 < w < 10 and 0 < h < 10
    for age in range(4):  # each frame of the stack: the ball's box holds a pixel brighter than the dark field
        i, box = next((i, b) for i, (bx, lb, ag) in enumerate(zip(objects.boxes, objects.labels, objects.ages))
                      for b, lab, a in zip(bx, lb, ag) if lab == "Ball" and a == age)
        x, y, w, h = box
        frame = objects.states[i, 3 - age].astype(int)
        assert frame[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))].max() > np.median(frame) + 40, age


def test_grounding_works_for_any_explainer(tiny_agent, breakout_states):
    states = breakout_states[:2]
    sal = make_explainer("grad", tiny_agent).explain(states, np.zeros(2, int))
    boxes = [scale_boxes([(0, 0, 160, 210)])] * 2  # the whole screen: every point is inside
    assert pointing_game(sal, boxes).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(mass_in_objects(sal, boxes), [1.0, 1.0])


def test_object_detector_without_ocatari_says_how_to_get_it():
    try:
        import ocatari  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="environment-objects.yml"):
            ObjectDetector("Breakout")
    else:
        pytest.skip("OCAtari is installed")


def test_object_detector_finds_breakout_objects():
    pytest.importorskip("ocatari")
    env = make_env("Breakout", seed=0)
    env.reset(seed=0)
    detect = ObjectDetector("Breakout")
    for _ in range(10):
        env.step(1)  # FIRE launches the ball
        boxes = detect(env)
    env.close()
    assert boxes and all(0 <= x < 160 and 0 <= y < 210 and w > 0 and h > 0 for x, y, w, h in boxes)


def test_record_object_states_keeps_states_with_objects_across_games(tiny_agent):
    pytest.importorskip("ocatari")
    objects = record_object_states(tiny_agent, "Breakout", 6, every=3, seed=5)
    assert objects.states.shape == (6, 4, 84, 84) and all(objects.boxes) and objects.meta["seeds"][0] == 5
    assert all(0 in ag for ag in objects.ages) and max(max(ag) for ag in objects.ages) == 3  # the whole stack
    assert {"Player"} <= {lab for lb in objects.labels for lab in lb}
