"""Point selection and depth resampling of vggt.pipeline.points."""

from __future__ import annotations

import numpy as np

from vggt.pipeline import depth_at_original_resolution, select_points
from vggt.utils.load_fn import PreprocessTransform


def test_depth_at_original_resolution_leaves_cropped_rows_empty():
    # A 4x8 photo whose model input kept rows 2..5 of an 8-row resize (crop): scale 1, shifted up by 2.
    transform = PreprocessTransform(original_size=(4, 8), input_size=(4, 4), scale=(1.0, 1.0), offset=(0.0, -2.0))
    depth = np.arange(16, dtype=np.float32).reshape(4, 4) + 1
    depth[3, 3] = np.nan
    original = depth_at_original_resolution(depth, transform)
    assert original.shape == (8, 4)
    assert (original[:2] == 0).all() and (original[6:] == 0).all()
    np.testing.assert_array_equal(original[2:5], depth[:3])
    np.testing.assert_array_equal(original[5], [13, 14, 15, 0])  # non-finite depth becomes 0


def test_select_points_drops_padding_and_low_confidence():
    # One 4x2 photo padded into a 4x4 model input: rows 0 and 3 are padding.
    transform = PreprocessTransform(original_size=(4, 2), input_size=(4, 4), scale=(1.0, 1.0), offset=(0.0, 1.0))
    world = np.arange(16 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    conf = np.arange(16, dtype=np.float32).reshape(1, 4, 4) + 1
    colors = np.zeros((1, 4, 4, 3), np.uint8)
    points, _, obs = select_points(world, conf, colors, [transform], conf_percentile=0, max_points=None)
    assert len(points) == 8  # only the photo's rows 1 and 2
    np.testing.assert_array_equal(points, world[0, 1:3].reshape(-1, 3))
    assert obs.xy[:, 1].min() == 0 and obs.xy[:, 1].max() == 1

    points, _, _ = select_points(world, conf, colors, [transform], conf_percentile=50, max_points=None)
    np.testing.assert_array_equal(points, world[0, 2].reshape(-1, 3))  # the more confident half
    points, _, _ = select_points(world, conf, colors, [transform], conf_percentile=0, max_points=3)
    assert len(points) == 3
