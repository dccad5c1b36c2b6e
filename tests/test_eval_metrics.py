"""Evaluation metrics against answers worked out by hand, and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggt.eval.camera import (
    auc_from_errors,
    camera_auc,
    relative_pose_errors,
    rotation_angle_deg,
    rra_rta,
    translation_angle_deg,
)
from vggt.eval.depth import depth_metrics
from vggt.eval.points import apply_similarity, pointmap_metrics, umeyama
from vggt.eval.tracks import tapvid_metrics


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def extrinsic(rot: np.ndarray, trans) -> np.ndarray:
    return np.concatenate([rot, np.asarray(trans, dtype=np.float64)[:, None]], axis=1)


def random_cameras(rng: np.random.Generator, num: int) -> np.ndarray:
    return np.stack([extrinsic(random_rotation(rng), rng.normal(size=3)) for _ in range(num)])


def transform_world(extrinsics: np.ndarray, scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Cameras of the same rig after the world moves by x' = scale * rot @ x + trans."""
    out = []
    for e in extrinsics:
        r, t = e[:, :3], e[:, 3]
        out.append(extrinsic(r @ rot.T, scale * t - r @ rot.T @ trans))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------- cameras


def test_ten_degree_relative_rotation_gives_ten_degrees():
    gt = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [1, 0, 0])])
    pred = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(rot_x(10.0), [1, 0, 0])])
    rot_err, trans_err = relative_pose_errors(pred, gt)
    assert rot_err.shape == (1,) and trans_err.shape == (1,)
    np.testing.assert_allclose(rot_err, [10.0], atol=1e-9)
    # The relative translation t_0 - R_rel t_1 = -R_x(-10) e_x = -e_x: the same direction.
    np.testing.assert_allclose(trans_err, [0.0], atol=1e-9)


def test_translation_sign_flip_is_no_error_and_a_right_angle_is_ninety():
    gt = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [2, 0, 0])])
    flipped = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [-5, 0, 0])])
    sideways = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [0, 3, 0])])
    tilted = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [1, 1, 0])])
    assert relative_pose_errors(flipped, gt)[1][0] == pytest.approx(0.0, abs=1e-9)
    assert relative_pose_errors(sideways, gt)[1][0] == pytest.approx(90.0, abs=1e-9)
    assert relative_pose_errors(tilted, gt)[1][0] == pytest.approx(45.0, abs=1e-9)
    # 135 degrees apart is 45 under the sign ambiguity.
    assert translation_angle_deg(np.array([-1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])) == pytest.approx(45.0)


def test_zero_relative_translation_counts_as_worst_error():
    gt = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [1, 0, 0])])
    pred = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [0, 0, 0])])
    assert relative_pose_errors(pred, gt)[1][0] == pytest.approx(90.0)


def test_rotation_angle_is_accurate_at_small_and_large_angles():
    for deg in (1e-4, 0.01, 45.0, 179.9):
        assert rotation_angle_deg(np.eye(3), rot_z(deg)) == pytest.approx(deg, rel=1e-6)


def test_pair_count_order_and_4x4_input():
    rng = np.random.default_rng(0)
    gt = random_cameras(rng, 5)
    pred = gt.copy()
    pred[3, :, :3] = rot_z(7.0) @ pred[3, :, :3]  # only frame 3 rotated by 7 degrees
    square = np.concatenate([pred, np.tile(np.array([[[0, 0, 0, 1.0]]]), (5, 1, 1))], axis=1)
    rot_err, _ = relative_pose_errors(square, gt)
    assert rot_err.shape == (10,)
    pairs = list(zip(*np.triu_indices(5, k=1)))
    for (i, j), err in zip(pairs, rot_err):
        assert err == pytest.approx(7.0 if 3 in (i, j) else 0.0, abs=1e-7)


def test_perfect_cameras_give_auc_100_and_full_accuracy():
    gt = random_cameras(np.random.default_rng(1), 6)
    assert camera_auc(gt, gt) == pytest.approx(100.0)
    assert camera_auc(gt, gt, max_threshold=3) == pytest.approx(100.0)
    assert rra_rta(gt, gt, thresholds=(5, 30)) == {"RRA@5": 100.0, "RTA@5": 100.0, "RRA@30": 100.0, "RTA@30": 100.0}


def test_auc_discretisation():
    ones = np.ones(8)
    # All at 15 degrees: counted below thresholds 16..30, i.e. 15 of 30.
    assert auc_from_errors(15.0 * ones, 2.0 * ones, 30) == pytest.approx((30 - 15) / 30 * 100)
    # The larger of the two errors decides.
    assert auc_from_errors(2.0 * ones, 15.0 * ones, 30) == pytest.approx(50.0)
    assert auc_from_errors(14.5 * ones, 0 * ones, 30) == pytest.approx(16 / 30 * 100)
    # Beyond the range, and NaN, count as failures; the last threshold is inclusive.
    assert auc_from_errors(np.array([31.0, np.nan]), np.zeros(2), 30) == 0.0
    assert auc_from_errors(np.array([30.0]), np.zeros(1), 30) == pytest.approx(100 / 30)
    # Half the pairs perfect, half failed.
    assert auc_from_errors(np.array([0.0, 90.0]), np.zeros(2), 30) == pytest.approx(50.0)


def test_rra_rta_known_fractions():
    gt = np.stack([extrinsic(np.eye(3), [0, 0, 0]), extrinsic(np.eye(3), [1, 0, 0]), extrinsic(np.eye(3), [0, 1, 0])])
    pred = gt.copy()
    pred[2, :, :3] = rot_z(10.0)  # pairs (0, 2) and (1, 2) get a 10-degree rotation error
    rot_err, _ = relative_pose_errors(pred, gt)
    np.testing.assert_allclose(rot_err, [0.0, 10.0, 10.0], atol=1e-9)
    acc = rra_rta(pred, gt, thresholds=(5, 15))
    assert acc["RRA@5"] == pytest.approx(100 / 3)
    assert acc["RRA@15"] == pytest.approx(100.0)


def test_camera_metrics_are_invariant_to_a_global_similarity():
    rng = np.random.default_rng(2)
    gt = random_cameras(rng, 6)
    # A noisy prediction with errors of a few degrees, so the metrics are not trivially perfect.
    pred = np.stack([extrinsic(rot_z(rng.uniform(-8, 8)) @ e[:, :3], e[:, 3] + 0.2 * rng.normal(size=3)) for e in gt])
    moved = transform_world(pred, 3.7, random_rotation(rng), rng.normal(size=3))
    before = relative_pose_errors(pred, gt)
    after = relative_pose_errors(moved, gt)
    assert before[0].max() > 1.0 and before[1].max() > 1.0
    np.testing.assert_allclose(after[0], before[0], atol=1e-7)
    np.testing.assert_allclose(after[1], before[1], atol=1e-7)
    assert camera_auc(moved, gt) == pytest.approx(camera_auc(pred, gt))
    assert camera_auc(moved, gt) < 100.0
    # The same holds when the ground truth is moved instead.
    np.testing.assert_allclose(
        relative_pose_errors(pred, transform_world(gt, 0.3, random_rotation(rng), rng.normal(size=3)))[0],
        before[0],
        atol=1e-7,
    )


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(3)
    gt, pred = random_cameras(rng, 4), random_cameras(rng, 4)
    from_numpy = relative_pose_errors(pred, gt)
    from_torch = relative_pose_errors(torch.from_numpy(pred).float(), torch.from_numpy(gt))
    np.testing.assert_allclose(from_torch[0], from_numpy[0], atol=1e-3)
    np.testing.assert_allclose(from_torch[1], from_numpy[1], atol=1e-3)


def test_camera_input_errors():
    gt = random_cameras(np.random.default_rng(4), 3)
    with pytest.raises(ValueError, match="3 frames but gt_extrinsics has 2"):
        relative_pose_errors(gt, gt[:2])
    with pytest.raises(ValueError, match=r"\[S, 3, 4\]"):
        relative_pose_errors(gt[:, :, :3], gt)
    with pytest.raises(ValueError, match="at least 2 frames"):
        relative_pose_errors(gt[:1], gt[:1])
    bad = gt.copy()
    bad[1, :, :3] *= 2.0
    with pytest.raises(ValueError, match=r"pred_extrinsics\[1\].*not a rotation"):
        relative_pose_errors(bad, gt)


# ---------------------------------------------------------------------------------------------- depth


def test_scaled_depth_has_zero_error_after_alignment():
    rng = np.random.default_rng(5)
    gt = rng.uniform(1.0, 10.0, size=(3, 8, 9))
    pred = gt * np.array([0.5, 2.0, 7.0])[:, None, None]  # a different scale per frame
    for alignment in ("median", "lstsq"):
        m = depth_metrics(pred, gt, alignment=alignment)
        assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
        assert m["delta_1.25"] == 100.0
        assert m["num_frames"] == 3
    unaligned = depth_metrics(pred, gt, alignment="none")
    assert unaligned["abs_rel"] == pytest.approx((0.5 + 1.0 + 6.0) / 3)


def test_depth_known_values_and_masks():
    gt = np.array([[[1.0, 2.0, 4.0, 0.0]]])  # the zero is invalid ground truth
    pred = np.array([[[1.0, 2.0, 5.0, 99.0]]])
    m = depth_metrics(pred, gt, alignment="none")
    # |5 - 4| / 4 = 0.25 on one of three valid pixels; 5/4 = 1.25 is not below 1.25.
    assert m["abs_rel"] == pytest.approx(0.25 / 3)
    assert m["delta_1.25"] == pytest.approx(200 / 3)
    masked = depth_metrics(pred, gt, mask=np.array([[[True, True, False, True]]]), alignment="none")
    assert masked["abs_rel"] == 0.0 and masked["delta_1.25"] == 100.0
    # Median alignment: median(gt) = 2, median(pred) = 2, so the scale is 1 and the numbers are unchanged.
    assert depth_metrics(pred, gt, alignment="median")["abs_rel"] == pytest.approx(0.25 / 3)
    # Least squares: s = (1 + 4 + 20) / (1 + 4 + 25) = 25/30.
    s = 25 / 30
    expected = np.mean(np.abs(s * np.array([1, 2, 5]) - [1, 2, 4]) / [1, 2, 4])
    assert depth_metrics(pred, gt, alignment="lstsq")["abs_rel"] == pytest.approx(expected)


def test_depth_accepts_torch_channel_last_and_rejects_bad_input():
    gt = torch.rand(2, 4, 5, 1) + 0.5
    assert depth_metrics(gt * 3, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no valid ground-truth depth"):
        depth_metrics(np.ones((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(np.ones((1, 2, 2)), np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match="unknown depth alignment"):
        depth_metrics(np.ones((1, 2, 2)), np.ones((1, 2, 2)), alignment="mean")


# ---------------------------------------------------------------------------------------------- points


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(6)
    src = rng.normal(size=(50, 3))
    rot, scale, trans = random_rotation(rng), 2.5, np.array([1.0, -2.0, 0.5])
    dst = apply_similarity(src, scale, rot, trans)
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(scale, rel=1e-10)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, trans, atol=1e-10)
    assert np.linalg.det(r) == pytest.approx(1.0)
    s_rigid, r_rigid, _ = umeyama(src, apply_similarity(src, 1.0, rot, trans), with_scale=False)
    assert s_rigid == 1.0
    np.testing.assert_allclose(r_rigid, rot, atol=1e-10)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(7)
    src = rng.normal(size=(30, 3))
    mirrored = src * np.array([1.0, 1.0, -1.0])
    _, r, _ = umeyama(src, mirrored)
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all identical"):
        umeyama(np.ones((5, 3)), src[:5])


def test_pointmap_metrics_zero_after_similarity_and_known_offset():
    rng = np.random.default_rng(8)
    gt = rng.uniform(-1, 1, size=(2, 6, 7, 3))
    pred = apply_similarity(gt, 0.2, random_rotation(rng), np.array([3.0, 0.0, -1.0]))
    m = pointmap_metrics(torch.from_numpy(pred), gt)
    assert m["accuracy"] == pytest.approx(0.0, abs=1e-9)
    assert m["chamfer"] == pytest.approx(0.0, abs=1e-9)
    assert m["scale"] == pytest.approx(5.0)
    assert m["num_points"] == 2 * 6 * 7

    # Without alignment: two GT points, prediction has one of them and a point 3 units away from both.
    gt_pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    pred_pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    m = pointmap_metrics(pred_pts, gt_pts, align=False)
    assert m["accuracy"] == pytest.approx(3.0 / 3)
    assert m["completeness"] == pytest.approx(1.0 / 3)  # (0, 1, 0) is 1 from (0, 0, 0)
    assert m["chamfer"] == pytest.approx(2.0 / 3)


def test_pointmap_metrics_mask_and_subsampling():
    rng = np.random.default_rng(9)
    gt = rng.normal(size=(1, 10, 10, 3))
    pred = gt.copy()
    pred[0, 0, 0] = 1e6  # an outlier, masked out
    mask = np.ones((1, 10, 10), dtype=bool)
    mask[0, 0, 0] = False
    m = pointmap_metrics(pred, gt, mask=mask, max_points=40)
    assert m["num_points"] == 40
    assert m["chamfer"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        pointmap_metrics(pred[:, :5], gt)


# ---------------------------------------------------------------------------------------------- tracks


def test_tapvid_metrics_hand_made_example():
    # 3 frames, 2 points. Point 0 is visible throughout; point 1 is occluded in frame 2.
    gt = np.zeros((3, 2, 2))
    gt_visible = np.array([[True, True], [True, True], [True, False]])
    pred = gt.copy()
    pred[1, 0] = [3.0, 0.0]  # 3 px off: within 4, 8, 16 only
    pred[2, 1] = [50.0, 0.0]  # far, but the point is occluded there
    pred_visible = np.array([[True, True], [True, True], [True, True]])  # misses the occlusion
    m = tapvid_metrics(pred, gt, gt_visible, pred_visible)
    # 5 visible entries; 4 within 1 and 2 px, 5 within 4, 8, 16 px.
    assert m["pts_within_1"] == pytest.approx(80.0)
    assert m["pts_within_4"] == pytest.approx(100.0)
    assert m["delta_avg"] == pytest.approx((80 + 80 + 100 + 100 + 100) / 5)
    assert m["occlusion_accuracy"] == pytest.approx(500 / 6)
    # Jaccard at 1 px: TP 4, visible 5, FP: the 3-px miss and the occluded point predicted visible = 2.
    assert m["jaccard_1"] == pytest.approx(400 / 7)
    assert m["jaccard_4"] == pytest.approx(500 / 6)

    # Excluding each point's query frame (frame 0) removes two correct visible entries.
    q = tapvid_metrics(pred, gt, gt_visible, pred_visible, query_frames=np.array([0, 0]))
    assert q["pts_within_1"] == pytest.approx(200 / 3)
    assert q["occlusion_accuracy"] == pytest.approx(300 / 4)


def test_tapvid_first_mode_skips_frames_before_first_visibility():
    gt = np.zeros((3, 1, 2))
    gt_visible = np.array([[False], [True], [True]])
    pred = gt.copy()
    pred_visible = np.array([[True], [True], [True]])  # wrong in frame 0, which "first" does not evaluate
    strided = tapvid_metrics(pred, gt, gt_visible, pred_visible, query_mode="strided")
    first = tapvid_metrics(pred, gt, gt_visible, pred_visible, query_mode="first")
    assert strided["occlusion_accuracy"] == pytest.approx(200 / 3)
    assert first["occlusion_accuracy"] == 100.0
    assert first["average_jaccard"] == 100.0
    with pytest.raises(ValueError, match="query_mode"):
        tapvid_metrics(pred, gt, gt_visible, query_mode="last")
    with pytest.raises(ValueError, match=r"\[S, N, 2\]"):
        tapvid_metrics(pred[..., :1], gt, gt_visible)
