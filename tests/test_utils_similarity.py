"""Sim(3) fitting, robust re-weighting and the action of similarities on points and cameras (vggt.utils.similarity)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import vggt.eval
from benchmarks.synthetic_windows import random_similarity
from vggt.errors import InputError
from vggt.utils.geometry import project_points
from vggt.utils.similarity import (
    Similarity,
    fit_similarity,
    rotation_exp,
    rotation_log,
    skew,
    umeyama,
)


def rotation_error_deg(estimate: Similarity, truth: Similarity) -> float:
    return float(np.rad2deg(np.linalg.norm(rotation_log(estimate.rotation @ truth.rotation.T))))


def correspondences(num_points: int, outlier_ratio: float, seed: int, noise: float = 0.01):
    """src [N, 3], dst = truth(src) + noise with a fraction of dst replaced by points anywhere in the cloud's
    bounding box; returns src, dst, truth, outlier mask."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(-1, 1, (num_points, 3)) * np.array([2.0, 1.0, 0.5])
    truth = random_similarity(rng)
    dst = truth.apply(src) + rng.normal(0, noise * truth.scale, src.shape)
    outliers = rng.random(num_points) < outlier_ratio
    dst[outliers] = rng.uniform(dst.min(0), dst.max(0), (outliers.sum(), 3))
    return src, dst, truth, outliers


def test_eval_keeps_exporting_the_one_umeyama():
    assert vggt.eval.umeyama is umeyama
    from vggt.eval.points import apply_similarity

    assert apply_similarity is vggt.utils.similarity.apply_similarity


def test_weights_equal_repeated_points_and_zero_weight_ignores_a_point():
    src, dst, _, _ = correspondences(40, 0.0, seed=0, noise=0.05)
    repeats = np.arange(40) % 3 + 1
    weighted = umeyama(src, dst, weights=repeats)
    repeated = umeyama(np.repeat(src, repeats, 0), np.repeat(dst, repeats, 0))
    for a, b in zip(weighted, repeated):
        np.testing.assert_allclose(a, b, atol=1e-12)

    corrupted = dst.copy()
    corrupted[:5] += 100.0
    weights = np.ones(40)
    weights[:5] = 0.0
    for a, b in zip(umeyama(src, corrupted, weights=weights), umeyama(src[5:], dst[5:])):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_weights_down_weight_bad_points():
    src, dst, truth, outliers = correspondences(500, 0.2, seed=1)
    plain = Similarity(*umeyama(src, dst))
    trusted = Similarity(*umeyama(src, dst, weights=np.where(outliers, 1e-3, 1.0)))
    assert rotation_error_deg(trusted, truth) < rotation_error_deg(plain, truth) / 10
    assert abs(trusted.scale / truth.scale - 1) < abs(plain.scale / truth.scale - 1) / 10
    # The robust fit finds the bad points itself: their final weights are far below the good ones'.
    fit = fit_similarity(src, dst, estimator="cauchy")
    assert np.median(fit.weights[outliers]) < 0.05 * np.median(fit.weights[~outliers])


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_robust_fit_recovers_the_similarity_with_20_percent_outliers(seed):
    src, dst, truth, _ = correspondences(3000, 0.2, seed=seed)
    spread = np.sqrt(np.mean(np.sum((src - src.mean(0)) ** 2, axis=1))) * truth.scale
    errors = {}
    for estimator in ("umeyama", "huber", "cauchy"):
        fit = fit_similarity(src, dst, estimator=estimator)
        errors[estimator] = (
            rotation_error_deg(fit.similarity, truth),
            abs(fit.similarity.scale / truth.scale - 1),
            np.linalg.norm(fit.similarity.translation - truth.translation) / spread,
        )
    rotation, scale, translation = errors["cauchy"]
    # A fit on the inliers alone leaves errors of about 0.02 deg, 1e-4 and 3e-4 here.
    assert rotation < 0.08 and scale < 1e-3 and translation < 1e-3, errors
    assert errors["huber"][1] < 0.01, errors  # Huber is biased by the outliers, but far less than least squares
    assert errors["umeyama"][1] > 0.1, errors  # without re-weighting the outliers shrink the scale


def test_exact_fit_needs_one_solve_and_rigid_fit_keeps_scale_one():
    src, dst, truth, _ = correspondences(50, 0.0, seed=5, noise=0.0)
    fit = fit_similarity(src, dst, estimator="cauchy")
    np.testing.assert_allclose(fit.similarity.matrix, truth.matrix, atol=1e-10)
    rigid = fit_similarity(src, dst / truth.scale, with_scale=False)
    assert rigid.similarity.scale == 1.0
    np.testing.assert_allclose(rigid.similarity.rotation, truth.rotation, atol=1e-10)


def test_cameras_moved_with_the_world_see_moved_points_at_the_same_pixels():
    rng = np.random.default_rng(6)
    points = rng.uniform(-1, 1, (30, 3))
    rotations = rotation_exp(rng.normal(0, 0.2, (4, 3)))
    extrinsics = np.concatenate((rotations, np.array([0.0, 0.0, 5.0]).repeat(4).reshape(3, 4).T[..., None]), -1)
    intrinsics = np.tile(np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]]), (4, 1, 1))
    move = random_similarity(rng)
    pixels, depth = project_points(points, extrinsics, intrinsics)
    moved_pixels, moved_depth = project_points(move.apply(points), move.apply_to_extrinsics(extrinsics), intrinsics)
    np.testing.assert_allclose(moved_pixels, pixels, atol=1e-9)
    np.testing.assert_allclose(moved_depth, move.scale * depth, rtol=1e-12)
    moved = move.apply_to_extrinsics(extrinsics)
    rotations_moved = moved[:, :, :3]
    np.testing.assert_allclose(
        rotations_moved @ rotations_moved.transpose(0, 2, 1), np.tile(np.eye(3), (4, 1, 1)), atol=1e-12
    )


def test_from_camera_makes_that_camera_the_identity():
    rng = np.random.default_rng(7)
    extrinsics = random_similarity(rng).apply_to_extrinsics(np.tile(np.eye(3, 4), (3, 1, 1)))
    extrinsics[1:, :, 3] += rng.normal(size=(2, 3))
    moved = Similarity.from_camera(extrinsics[0]).apply_to_extrinsics(extrinsics)
    np.testing.assert_allclose(moved[0], np.eye(3, 4), atol=1e-12)


def test_composition_inverse_and_matrix_agree():
    rng = np.random.default_rng(8)
    a, b = random_similarity(rng), random_similarity(rng)
    np.testing.assert_allclose((a @ b).matrix, a.matrix @ b.matrix, atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(Similarity.from_matrix(a.matrix).matrix, a.matrix, atol=1e-12)
    points = rng.normal(size=(5, 3))
    np.testing.assert_allclose((a @ b).apply(points), a.apply(b.apply(points)), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.3, 2.5, np.pi - 1e-4, np.pi])
@pytest.mark.parametrize("log_scale", [0.0, 1e-9, -1.5, 2.0])
def test_exp_is_the_matrix_exponential_and_log_inverts_it(angle, log_scale):
    rng = np.random.default_rng(9)
    axis = rng.normal(size=3)
    xi = np.concatenate((rng.normal(size=3), axis / np.linalg.norm(axis) * angle, [log_scale]))
    generator = np.zeros((4, 4))
    generator[:3, :3] = skew(xi[3:6]) + log_scale * np.eye(3)
    generator[:3, 3] = xi[:3]
    similarity = Similarity.exp(xi)
    np.testing.assert_allclose(similarity.matrix, scipy.linalg.expm(generator), atol=1e-12)
    if angle < np.pi:  # at pi the rotation vector's sign is a matter of choice
        np.testing.assert_allclose(similarity.log(), xi, atol=1e-9)
    np.testing.assert_allclose(Similarity.exp(similarity.log()).matrix, similarity.matrix, atol=1e-12)


def test_torch_points_and_weights_are_accepted():
    src, dst, truth, _ = correspondences(20, 0.0, seed=10, noise=0.0)
    scale, rot, trans = umeyama(torch.from_numpy(src).float(), torch.from_numpy(dst), weights=torch.ones(20))
    assert isinstance(rot, np.ndarray) and rot.dtype == np.float64
    assert scale == pytest.approx(truth.scale, rel=1e-5)
    assert isinstance(truth.apply(torch.zeros(2, 3)), np.ndarray)


def test_bad_inputs_raise_one_line_input_errors():
    src = np.random.default_rng(11).normal(size=(10, 3))
    cases = [
        (lambda: umeyama(src, src[:9]), "src and dst must be two [N, 3] arrays"),
        (lambda: umeyama(src[:2], src[:2]), "at least 3 correspondences"),
        (lambda: umeyama(src, src, weights=-np.ones(10)), "weights must be [N] finite non-negative"),
        (lambda: umeyama(src, src, weights=np.r_[np.ones(2), np.zeros(8)]), "at least 3 correspondences"),
        (lambda: fit_similarity(src, src, estimator="tukey"), "estimator must be one of"),
        (lambda: Similarity(0.0, np.eye(3), np.zeros(3)), "positive scale"),
        (lambda: Similarity.identity().apply_to_extrinsics(np.eye(3)), "extrinsics must have shape [..., 3, 4]"),
    ]
    for call, message in cases:
        with pytest.raises(InputError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)
