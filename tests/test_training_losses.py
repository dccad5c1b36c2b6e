"""The per-sample recipe (`loss.averaging: per_sample`): each term against values worked out by hand on tiny
inputs. The reference recipe is tested in test_training_losses_reference.py."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    CameraLossConfig,
    DenseLossConfig,
    LossConfig,
    PerSampleMultitaskLoss,
    TrackLossConfig,
    build_track_targets,
    camera_loss,
    confidence_regression_loss,
    dense_loss,
    normalize_ground_truth,
    prepare_targets,
    track_loss,
)


def _rot_z(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def test_camera_loss_weights_iterations_by_gamma():
    gt = torch.zeros(1, 2, 9)
    first = torch.ones(1, 2, 9)  # error 1 everywhere
    last = torch.zeros(1, 2, 9)
    last[..., :3] = 2.0  # translation error 2, rotation and focal exact
    config = CameraLossConfig(gamma=0.5, weight_trans=1.0, weight_rot=1.0, weight_focal=0.5)
    terms = camera_loss([first, last], gt, config)
    # weights: gamma^1 = 0.5 for the first iteration, 1 for the last; averaged over 2 iterations.
    assert terms["camera_T"].item() == pytest.approx((0.5 * 1 + 1 * 2) / 2)
    assert terms["camera_R"].item() == pytest.approx((0.5 * 1 + 0) / 2)
    assert terms["camera_FL"].item() == pytest.approx((0.5 * 1 + 0) / 2)
    assert terms["camera"].item() == pytest.approx(1.25 + 0.25 + 0.5 * 0.25)


def test_camera_loss_ignores_invalid_frames():
    gt = torch.zeros(1, 2, 9)
    pred = torch.zeros(1, 2, 9)
    pred[0, 1] = 100.0  # only the excluded frame is wrong
    terms = camera_loss([pred], gt, CameraLossConfig(), frame_valid=torch.tensor([[True, False]]))
    assert terms["camera"].item() == 0.0


def test_confidence_regression_loss_by_hand():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2, 1)
    gt = torch.ones(1, 1, 2, 2, 1)
    conf = torch.tensor([[1.0, 2.0], [1.0, 1.0]]).reshape(1, 1, 2, 2)
    valid = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    alpha = 0.2
    conf_term, grad_term, plain = confidence_regression_loss(pred, gt, conf, valid, alpha)
    # errors [[0, 1], [2, 3]]; C * err summed = 0 + 2 + 2 + 3 = 7; -alpha log C only where C = 2.
    assert conf_term.item() == pytest.approx((7 - alpha * math.log(2)) / 4)
    # x-edges: |1-0| * C(0,1)=2 -> 2, |3-2| * C(1,1)=1 -> 1; y-edges: |2-0| * 1 -> 2, |3-1| * 1 -> 2.
    assert grad_term.item() == pytest.approx(7 / 4)
    assert plain.item() == pytest.approx(6 / 4)


def test_confidence_regression_loss_skips_invalid_pixels_even_if_nan():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2, 1)
    gt = torch.tensor([[1.0, 1.0], [1.0, float("nan")]]).reshape(1, 1, 2, 2, 1)
    conf = torch.tensor([[1.0, 2.0], [1.0, 1.0]]).reshape(1, 1, 2, 2)
    valid = torch.tensor([[True, True], [True, False]]).reshape(1, 1, 2, 2)
    pred.requires_grad_(True)
    conf_term, grad_term, _ = confidence_regression_loss(pred, gt, conf, valid, alpha=0.2)
    assert conf_term.item() == pytest.approx((0 + 2 * 1 + 1 * 2 - 0.2 * math.log(2)) / 3)
    # Only the edges (0,0)-(0,1) [|1| * 2] and (0,0)-(1,0) [|2| * 1] have both ends valid.
    assert grad_term.item() == pytest.approx(4 / 3)
    (conf_term + grad_term).backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 1, 1, 0].item() == 0.0


def test_dense_loss_averages_per_sample():
    # Sample 0: one valid pixel with error 1; sample 1: four valid pixels with error 3; sample 2: no valid pixel.
    pred = torch.zeros(3, 1, 2, 2, 1)
    gt = torch.zeros(3, 1, 2, 2)
    gt[0, 0, 0, 0] = 1.0
    gt[1] = 3.0
    gt[2] = 100.0
    valid = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    valid[0, 0, 0, 0] = True
    valid[1] = True
    conf = torch.ones(3, 1, 2, 2)
    terms = dense_loss("depth", pred, conf, gt, valid, DenseLossConfig(alpha=0.2))
    # Per-sample means 1 and 3 (log 1 = 0, constant error so no gradient term); sample 2 is left out.
    assert terms["depth_conf"].item() == pytest.approx((1 + 3) / 2)
    assert terms["depth_grad"].item() == pytest.approx(0.0)


def test_point_loss_uses_euclidean_error():
    pred = torch.zeros(1, 1, 1, 1, 3)
    gt = torch.tensor([3.0, 4.0, 0.0]).reshape(1, 1, 1, 1, 3)
    conf = torch.full((1, 1, 1, 1), 2.0)
    valid = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    terms = dense_loss("point", pred, conf, gt, valid, DenseLossConfig(alpha=0.5, gradient_weight=1.0))
    assert terms["point_conf"].item() == pytest.approx(2 * 5 - 0.5 * math.log(2))
    assert terms["point_grad"].item() == 0.0  # a single pixel has no neighbours
    assert terms["point"].item() == pytest.approx(terms["point_conf"].item())
    assert terms["point_error"].item() == pytest.approx(5.0)


def _two_view_rig() -> tuple[torch.Tensor, torch.Tensor]:
    """Camera 0 at a world pose; camera 1 two units along camera 0's x axis."""
    extrinsic0 = torch.zeros(3, 4)
    extrinsic0[:, :3] = _rot_z(90)
    extrinsic0[:, 3] = torch.tensor([1.0, 2.0, 3.0])
    cam1_from_cam0 = torch.eye(4)
    cam1_from_cam0[0, 3] = -2.0
    extrinsic0_h = torch.cat((extrinsic0, torch.tensor([[0.0, 0.0, 0.0, 1.0]])))
    extrinsic1 = (cam1_from_cam0 @ extrinsic0_h)[:3]
    return torch.stack((extrinsic0, extrinsic1))[None], torch.eye(3).expand(1, 2, 3, 3).clone()


def test_normalize_ground_truth_by_hand():
    extrinsics, intrinsics = _two_view_rig()
    # 1x1 images, K = I: pixel (0, 0) sees the camera-space point (0, 0, depth).
    depths = torch.tensor([4.0, 3.0]).reshape(1, 2, 1, 1)
    out = normalize_ground_truth(extrinsics, intrinsics, depths, None)
    # Frame 0's point is 4 from camera 0; frame 1's is (2, 0, 3) in camera 0's frame: sqrt(13) away.
    scale = (4 + math.sqrt(13)) / 2
    assert out["scale"].item() == pytest.approx(scale)
    torch.testing.assert_close(out["extrinsics"][0, 0], torch.eye(3, 4))
    torch.testing.assert_close(out["extrinsics"][0, 1, :, 3], torch.tensor([-2.0 / scale, 0.0, 0.0]))
    torch.testing.assert_close(out["depths"][0, :, 0, 0], torch.tensor([4.0, 3.0]) / scale)
    torch.testing.assert_close(out["world_points"][0, 1, 0, 0], torch.tensor([2.0, 0.0, 3.0]) / scale)


def test_normalize_ground_truth_without_depth_uses_camera_centres():
    extrinsics, intrinsics = _two_view_rig()
    out = normalize_ground_truth(extrinsics, intrinsics, None, None)
    assert out["scale"].item() == pytest.approx(2.0)
    torch.testing.assert_close(out["extrinsics"][0, 1, :, 3], torch.tensor([-1.0, 0.0, 0.0]))
    assert "depths" not in out and "world_points" not in out


def test_track_targets_follow_a_shifted_camera_and_respect_occlusion():
    H, W, f = 4, 6, 2.0
    intrinsics = torch.tensor([[f, 0.0, 2.5], [0.0, f, 1.5], [0.0, 0.0, 1.0]]).expand(1, 2, 3, 3).clone()
    extrinsics = torch.eye(3, 4).expand(1, 2, 3, 4).clone()
    extrinsics[0, 1, 0, 3] = -1.0  # camera 1 one unit to the right: a point at depth 2 moves f * 1 / 2 = 1 px left
    depths = torch.full((1, 2, H, W), 2.0)
    depths[0, 1, 2, 3] = 1.0  # an occluder in frame 1 at pixel (x=3, y=2)
    valid = torch.ones(1, 2, H, W, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    targets = build_track_targets(depths, extrinsics, intrinsics, valid, 200, 0.05, generator)
    query = targets["query_points"][0]
    tracks, visible = targets["tracks"][0], targets["visible"][0]
    torch.testing.assert_close(tracks[0], query)
    torch.testing.assert_close(tracks[1], query - torch.tensor([1.0, 0.0]))
    assert visible[0].all()
    expected = (query[:, 0] >= 1) & ~((query[:, 0] == 4) & (query[:, 1] == 2))
    assert torch.equal(visible[1], expected)
    assert (~expected).any() and expected.any()  # both cases were drawn


def test_track_loss_by_hand():
    gt = {
        "tracks": torch.zeros(1, 2, 1, 2),
        "visible": torch.tensor([[[True], [False]]]),
        "query_valid": torch.tensor([True]),
    }
    pred = torch.zeros(1, 2, 1, 2)
    pred[0, 0, 0] = torch.tensor([1.0, 3.0])  # mean |error| 2 on the visible frame
    pred[0, 1, 0] = torch.tensor([50.0, 50.0])  # not visible there: no position loss
    vis = torch.full((1, 2, 1), 0.5)
    terms = track_loss([pred], vis, gt, TrackLossConfig(visibility_weight=1.0))
    assert terms["track_position"].item() == pytest.approx(2.0)
    assert terms["track_visibility"].item() == pytest.approx(math.log(2))
    assert terms["track"].item() == pytest.approx(2.0 + math.log(2))


def _predictions(B, S, H, W, with_grad=True):
    g = torch.Generator().manual_seed(1)
    preds = {
        "pose_enc_list": [torch.randn(B, S, 9, generator=g) for _ in range(2)],
        "depth": torch.rand(B, S, H, W, 1, generator=g) + 0.5,
        "depth_conf": torch.rand(B, S, H, W, generator=g) + 1,
        "world_points": torch.randn(B, S, H, W, 3, generator=g),
        "world_points_conf": torch.rand(B, S, H, W, generator=g) + 1,
    }
    preds["pose_enc"] = preds["pose_enc_list"][-1]
    return preds


def test_multitask_loss_skips_terms_without_ground_truth():
    extrinsics, intrinsics = _two_view_rig()
    batch = {"extrinsics": extrinsics, "intrinsics": intrinsics}
    targets = prepare_targets(batch, (2, 3))
    loss_fn = PerSampleMultitaskLoss(LossConfig(averaging="per_sample"))
    total, terms = loss_fn(_predictions(1, 2, 2, 3), targets)
    assert set(terms) == {"camera", "camera_T", "camera_R", "camera_FL"}
    assert total.item() == pytest.approx(terms["camera"].item())


def test_multitask_loss_sums_weighted_terms():
    extrinsics, intrinsics = _two_view_rig()
    batch = {"extrinsics": extrinsics, "intrinsics": intrinsics, "depths": torch.full((1, 2, 2, 3), 2.0)}
    targets = prepare_targets(batch, (2, 3))
    config = LossConfig.from_dict(
        {"averaging": "per_sample", "camera": {"weight": 5.0}, "depth": {"weight": 2.0}, "point": {"enabled": False}}
    )
    total, terms = PerSampleMultitaskLoss(config)(_predictions(1, 2, 2, 3), targets)
    assert "point" not in terms
    assert total.item() == pytest.approx(5.0 * terms["camera"].item() + 2.0 * terms["depth"].item(), rel=1e-6)


def test_loss_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown loss terms"):
        LossConfig.from_dict({"normals": {}})
    with pytest.raises(ValueError, match="loss.depth"):
        LossConfig.from_dict({"depth": {"wieght": 1.0}})
