"""Bundle adjustment with known camera poses (`fixed_frames`): those cameras come back exactly as given, and the
others, starting perturbed, move to the truth in the frame the fixed cameras set (no gauge freedom left)."""

from __future__ import annotations

import numpy as np
import pytest
from test_ba_solver import needs_theseus

from vggt.ba import bundle_adjust
from vggt.ba.ceres import ceres_bundle_adjust
from vggt.ba.testing import make_scene, perturb, relative_rotation_errors

FIXED = [0, 3, 7]


def centre_errors(extrinsics: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distances [S] between the camera centres of two sets of [S, 3, 4] extrinsics."""

    def centres(e):
        return -np.einsum("sji,sj->si", e[:, :, :3], e[:, :, 3])

    return np.linalg.norm(centres(extrinsics) - centres(truth), axis=-1)


def solve(backend: str, **options):
    scene = make_scene(num_frames=8, num_points=200, noise_px=0.5, seed=3)
    extrinsics, _, points = perturb(scene, seed=4)
    extrinsics[FIXED] = scene.extrinsics[FIXED]  # the known poses are exact
    run = bundle_adjust if backend == "theseus" else ceres_bundle_adjust
    result = run(
        extrinsics, scene.intrinsics, points, scene.tracks, scene.mask, image_size=scene.image_size,
        refine_focal=False, **options,
    )  # fmt: skip
    return scene, extrinsics, result


@pytest.mark.parametrize("backend", [pytest.param("theseus", marks=needs_theseus), "ceres"])
def test_fixed_cameras_stay_and_the_others_reach_the_truth(backend):
    if backend == "ceres":
        pytest.importorskip("pycolmap")
    scene, start, result = solve(backend, fixed_frames=FIXED)
    np.testing.assert_array_equal(result.extrinsics[FIXED], start[FIXED])
    free = [i for i in range(8) if i not in FIXED]
    before = centre_errors(start[free], scene.extrinsics[free]).mean()
    after = centre_errors(result.extrinsics[free], scene.extrinsics[free]).mean()
    assert after < before / 10, (before, after)  # in the fixed cameras' frame: no similarity to undo
    assert relative_rotation_errors(result.extrinsics, scene.extrinsics).mean() < 0.1


@needs_theseus
def test_one_fixed_camera_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        solve("theseus", fixed_frames=[2])
