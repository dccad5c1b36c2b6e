"""Bundle adjustment with known intrinsics (refine_focal=False): they come back bit for bit, poses and points still
reach the noise floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ba_solver import _noise_floor, needs_theseus

from vggt.ba import bundle_adjust
from vggt.ba.testing import make_scene, mean_reprojection_error, perturb, relative_rotation_errors
from vggt.utils.geometry import project_points

# Per-frame calibrations, as read from a file: focal lengths and principal points differ from frame to frame.
FOCAL_SPREAD, PRINCIPAL_POINT_SPREAD_PX = 0.04, 6.0


def scene_with_per_frame_intrinsics(seed: int):
    """The synthetic BA scene re-observed by cameras with their own intrinsics (same pixel noise)."""
    scene = make_scene(num_frames=10, num_points=200, noise_px=1.0, seed=seed)
    rng = np.random.default_rng(seed + 100)
    intrinsics = scene.intrinsics.copy()
    intrinsics[:, 0, 0] *= 1 + rng.uniform(-FOCAL_SPREAD, FOCAL_SPREAD, len(intrinsics))
    intrinsics[:, 1, 1] = intrinsics[:, 0, 0] * rng.uniform(0.98, 1.02, len(intrinsics))
    intrinsics[:, :2, 2] += rng.uniform(-PRINCIPAL_POINT_SPREAD_PX, PRINCIPAL_POINT_SPREAD_PX, (len(intrinsics), 2))
    noise = scene.tracks - project_points(scene.points3d, scene.extrinsics, scene.intrinsics)[0]
    scene.tracks = project_points(scene.points3d, scene.extrinsics, intrinsics)[0] + noise
    scene.intrinsics = intrinsics
    return scene


@needs_theseus
@pytest.mark.parametrize("shared_focal", [True, False])
def test_fixed_intrinsics_stay_bit_identical_and_ba_reaches_the_noise_floor(shared_focal):
    scene = scene_with_per_frame_intrinsics(seed=0)
    extrinsics, _, points = perturb(scene)
    known = scene.intrinsics.copy()
    result = bundle_adjust(
        extrinsics, known, points, scene.tracks, scene.mask, loss=None, shared_focal=shared_focal, refine_focal=False
    )
    np.testing.assert_array_equal(known, scene.intrinsics)  # the input is not written to
    assert result.intrinsics.dtype == known.dtype
    assert np.array_equal(result.intrinsics, known)

    floor = _noise_floor(scene, scene.mask)
    error = mean_reprojection_error(result.extrinsics, result.intrinsics, result.points3d, scene.tracks, scene.mask)
    assert abs(error / floor - 1) < 0.10, (error, floor)
    rotation_before = relative_rotation_errors(extrinsics, scene.extrinsics).mean()
    rotation_after = relative_rotation_errors(result.extrinsics, scene.extrinsics).mean()
    assert rotation_after < rotation_before / 5, (rotation_before, rotation_after)


@needs_theseus
def test_fixed_float32_torch_intrinsics_come_back_unchanged():
    scene = scene_with_per_frame_intrinsics(seed=1)
    extrinsics, _, points = perturb(scene)
    known = torch.from_numpy(scene.intrinsics).float()
    arrays = [torch.from_numpy(a).float() for a in (extrinsics, points, scene.tracks)]
    mask = torch.from_numpy(scene.mask)
    # A few iterations suffice: only what comes back for the intrinsics is checked here.
    result = bundle_adjust(arrays[0], known, arrays[1], arrays[2], mask, refine_focal=False, max_iterations=3)
    assert result.intrinsics.dtype == torch.float32
    assert torch.equal(result.intrinsics, known)
