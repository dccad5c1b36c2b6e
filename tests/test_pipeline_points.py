"""Point selection and depth resampling of vggt.pipeline.points."""

from __future__ import annotations

import numpy as np
import pytest

from vggt.errors import InputError
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


def test_select_points_by_frame_and_background():
    transforms = [PreprocessTransform(original_size=(4, 4), input_size=(4, 4), scale=(1.0, 1.0), offset=(0.0, 0.0))] * 3
    world = np.random.default_rng(0).normal(size=(3, 4, 4, 3)).astype(np.float32)
    conf = np.ones((3, 4, 4), np.float32)
    colors = np.full((3, 4, 4, 3), 128, np.uint8)
    colors[:, 0] = (5, 5, 5)  # near black: R + G + B below 16
    colors[:, 1, :2] = (250, 245, 241)  # near white: every channel above 240
    colors[:, 1, 2:] = (250, 245, 200)  # bright but not white

    points, _, obs = select_points(world, conf, colors, transforms, conf_percentile=0, max_points=None, frames=[2, 0])
    assert sorted(set(obs.image_index.tolist())) == [0, 2] and len(points) == 32
    _, kept, obs = select_points(
        world, conf, colors, transforms, conf_percentile=0, max_points=None, mask_black_background=True
    )
    assert len(kept) == 3 * 12 and (kept.astype(int).sum(-1) >= 16).all()
    _, kept, _ = select_points(
        world, conf, colors, transforms, 0, None, mask_black_background=True, mask_white_background=True
    )
    assert len(kept) == 3 * 10 and not (kept > 240).all(-1).any()
    with pytest.raises(InputError, match="frames must be frame indices in 0..2, got \\[3\\]"):
        select_points(world, conf, colors, transforms, frames=[0, 3])


@pytest.mark.parametrize("chunk_frames", [1, 3, 7])
@pytest.mark.parametrize("conf_percentile, max_points", [(0, None), (50, None), (30, 25), (0, 7)])
def test_chunked_selection_equals_the_whole(chunk_frames, conf_percentile, max_points):
    """Visiting the frames in chunks (bounded memory) picks exactly the points of one pass over all frames."""
    rng = np.random.default_rng(4)
    world = rng.normal(size=(7, 5, 6, 3)).astype(np.float32)
    world[2, 1, 1] = np.nan
    conf = rng.random((7, 5, 6)).astype(np.float32) + 1
    colors = rng.integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    transforms = [PreprocessTransform((6, 4), (6, 5), (1.0, 1.0), (0.0, 0.5 * (i % 2))) for i in range(7)]
    whole = select_points(world, conf, colors, transforms, conf_percentile, max_points, chunk_frames=7)
    chunked = select_points(
        lambda chunk: world[chunk], conf, colors, transforms, conf_percentile, max_points, chunk_frames=chunk_frames
    )
    for a, b in zip(whole, chunked[:2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.observations.xy, chunked.observations.xy)
    np.testing.assert_array_equal(whole.observations.image_index, chunked.observations.image_index)
