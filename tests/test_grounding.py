"""Object grounding: scoring on hand-made boxes and maps; OCAtari boxes only where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrlkit.envs import make_env
from xrlkit.explainers import make_explainer
from xrlkit.grounding import ObjectDetector, boxes_mask, mass_in_objects, pointing_game, scale_boxes


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
