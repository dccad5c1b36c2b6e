"""vggt.pipeline.inference.Predictions: every output, tracks included, survives predictions.npz."""

from __future__ import annotations

import dataclasses

import numpy as np

from vggt.pipeline.inference import Predictions


def _predictions(frames: int = 3, height: int = 4, width: int = 5, tracks: int = 2) -> Predictions:
    rng = np.random.default_rng(0)

    def values(*shape: int) -> np.ndarray:
        return rng.random(shape, dtype=np.float32)

    return Predictions(
        images=rng.integers(0, 256, (frames, 3, height, width), dtype=np.uint8),
        pose_enc=values(frames, 9),
        extrinsics=values(frames, 3, 4),
        intrinsics=values(frames, 3, 3),
        depth=values(frames, height, width),
        depth_conf=values(frames, height, width),
        world_points=values(frames, height, width, 3),
        world_points_conf=values(frames, height, width),
        tracks=values(frames, tracks, 2),
        track_vis=values(frames, tracks),
        track_conf=values(frames, tracks),
        metric_scale=values(1),
    )


def test_every_output_round_trips_through_predictions_npz(tmp_path):
    original = _predictions()
    np.savez(tmp_path / "predictions.npz", **original.arrays())
    with np.load(tmp_path / "predictions.npz") as saved:
        restored = Predictions.from_arrays(saved)
    for field in dataclasses.fields(Predictions):
        expected, actual = getattr(original, field.name), getattr(restored, field.name)
        assert actual is not None, f"{field.name} was dropped"
        np.testing.assert_array_equal(actual, expected, err_msg=field.name)


def test_outputs_a_model_lacks_stay_absent():
    original = dataclasses.replace(_predictions(), tracks=None, track_vis=None, track_conf=None, depth=None)
    arrays = original.arrays()
    assert not {"track", "vis", "conf", "depth"} & set(arrays)
    restored = Predictions.from_arrays(arrays)
    assert restored.tracks is None and restored.track_vis is None and restored.depth is None
