"""The reference recipe (`loss.averaging: batch`) against the reference's own outputs (golden/loss_io.safetensors),
finite differences, and hand-worked cases of its rules."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.losses import (
    LossConfig,
    MultitaskLoss,
    build_loss,
    normalize_camera_extrinsics_and_points_batch,
    reference_batch,
)
from training.losses.gradients import filter_by_quantile
from training.losses.reference import METRIC_NAMES
from vggt.utils.pose_enc import extri_intri_to_pose_encoding

GOLDEN_ATOL = GOLDEN_RTOL = 1e-5
NORMALIZED_KEYS = ("extrinsics", "cam_points", "world_points", "depths")
NUM_ITERATIONS = 4


@pytest.fixture(scope="module")
def loss_io(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "loss_io.safetensors"))


@pytest.fixture(scope="module")
def loss_configs(golden_dir) -> dict:
    return json.loads((golden_dir / "loss_configs.json").read_text())


def golden_predictions(io: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict:
    preds = {key: io[f"pred.{key}"].to(dtype) for key in ("depth", "depth_conf", "world_points", "world_points_conf")}
    preds["pose_enc_list"] = [io[f"pred.pose_enc_list.{i}"].to(dtype) for i in range(NUM_ITERATIONS)]
    return preds


def golden_batch(io: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict:
    """The batch the reference's loss saw: normalised ground truth, raw intrinsics, masks and images."""
    batch = {key: io[f"normalized.{key}"].to(dtype) for key in NORMALIZED_KEYS}
    batch.update(images=io["raw.images"], intrinsics=io["raw.intrinsics"].to(dtype), point_masks=io["raw.point_masks"])
    return batch


def test_normalization_equals_the_reference(loss_io):
    raw = [loss_io[f"raw.{key}"] for key in NORMALIZED_KEYS]
    ours = normalize_camera_extrinsics_and_points_batch(
        *raw, scale_by_points=True, point_masks=loss_io["raw.point_masks"]
    )
    for key, actual in zip(NORMALIZED_KEYS, ours):
        torch.testing.assert_close(actual, loss_io[f"normalized.{key}"], atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL, msg=key)


@pytest.mark.parametrize("name", ["default", "variant"])
def test_every_loss_term_equals_the_reference(loss_io, loss_configs, name):
    terms = MultitaskLoss(LossConfig.from_dict(loss_configs[name]))(golden_predictions(loss_io), golden_batch(loss_io))
    expected = {
        key.removeprefix(f"loss.{name}."): value for key, value in loss_io.items() if key.startswith(f"loss.{name}.")
    }
    assert set(terms) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value, atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL, msg=f"{name}: {key}")


def test_training_batch_from_depth_and_cameras_normalises_like_the_reference(loss_io):
    """The trainer's path: depth maps, cameras and masks of training.data in, the reference's batch out."""
    masks = loss_io["raw.point_masks"]
    batch = {
        "images": loss_io["raw.images"],
        "extrinsics": loss_io["raw.extrinsics"],
        "intrinsics": loss_io["raw.intrinsics"],
        "depths": torch.where(masks, loss_io["raw.depths"], torch.zeros_like(loss_io["raw.depths"])),
        "valid_masks": masks,
        "has_depth": torch.ones(masks.shape[0], dtype=torch.bool),
    }
    ours = reference_batch(batch)
    assert torch.equal(ours["point_masks"], masks)
    torch.testing.assert_close(ours["extrinsics"], loss_io["normalized.extrinsics"], atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL)
    for key in ("cam_points", "world_points", "depths"):  # invalid pixels carry no ground truth
        torch.testing.assert_close(
            ours[key][masks], loss_io[f"normalized.{key}"][masks], atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL
        )


@pytest.mark.parametrize("name", ["default", "variant"])
def test_gradients_match_float64_finite_differences(loss_io, loss_configs, name):
    """Directional derivatives along random directions, for every prediction tensor, in float64.

    The L1 gradient terms have kinks wherever a finite difference of the error is zero; a step of 1e-7 crosses
    none of them in these directions (1e-6 already crosses a few), and float64 keeps its rounding near 1e-9.
    """
    loss_fn = MultitaskLoss(LossConfig.from_dict(loss_configs[name]))
    batch = golden_batch(loss_io, torch.float64)
    preds = golden_predictions(loss_io, torch.float64)
    leaves = [
        preds["depth"],
        preds["depth_conf"],
        preds["world_points"],
        preds["world_points_conf"],
        *preds["pose_enc_list"],
    ]
    for leaf in leaves:
        leaf.requires_grad_(True)
    loss_fn(preds, batch)["objective"].backward()
    generator = torch.Generator().manual_seed(0)
    eps = 1e-7
    for index, leaf in enumerate(leaves):
        for _ in range(2):
            direction = torch.randn(leaf.shape, generator=generator, dtype=torch.float64)
            if index in (1, 3):  # confidences stay above 1
                direction = direction.abs()
            analytic = (leaf.grad * direction).sum().item()
            with torch.no_grad():
                values = []
                for sign in (1, -1):
                    shifted = [p + sign * eps * direction if i == index else p for i, p in enumerate(leaves)]
                    values.append(loss_fn(_unflatten(shifted), batch)["objective"].item())
            numeric = (values[0] - values[1]) / (2 * eps)
            assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-8), f"{name}: prediction {index}"
        assert leaf.grad.abs().sum() > 0, f"{name}: prediction {index} receives no gradient"


def _unflatten(leaves: list[torch.Tensor]) -> dict:
    depth, depth_conf, points, points_conf, *pose_enc_list = leaves
    return {"depth": depth, "depth_conf": depth_conf, "world_points": points, "world_points_conf": points_conf,
            "pose_enc_list": pose_enc_list}  # fmt: skip


def test_reference_loss_section_is_read_as_it_is():
    section = yaml.safe_load(
        """
        _target_: loss.MultitaskLoss
        camera:
          weight: 5.0
          loss_type: "l1"
        depth:
          weight: 1.0
          gradient_loss_fn: "grad"
          valid_range: 0.98
        point: null
        track: null
        """
    )
    config = LossConfig.from_dict(section)
    assert config.averaging == "batch" and config.point is None and config.track is None
    assert (config.camera.weight, config.camera.loss_type, config.camera.gamma) == (5.0, "l1", 0.6)
    assert (config.depth.gradient_loss_fn, config.depth.valid_range, config.depth.alpha) == ("grad", 0.98, 0.2)
    assert isinstance(build_loss(config), MultitaskLoss)


def test_loss_config_errors_name_the_key_and_the_way_out():
    with pytest.raises(ValueError, match="loss.depth.gradient_loss_fn must be one of"):
        LossConfig.from_dict({"depth": {"gradient_loss_fn": "sobel"}})
    with pytest.raises(ValueError, match="valid_range: -1 for per_sample"):
        LossConfig.from_dict({"averaging": "per_sample", "depth": {"valid_range": 0.98}})
    with pytest.raises(ValueError, match="set gradient_loss_fn: null"):
        LossConfig.from_dict({"averaging": "per_sample", "point": {"gradient_loss_fn": "normal"}})
    with pytest.raises(ValueError, match="loss.camera.loss_type='l2' needs loss.averaging: batch"):
        LossConfig.from_dict({"averaging": "per_sample", "camera": {"loss_type": "l2"}})
    with pytest.raises(ValueError, match="gradient_weight belongs to loss.averaging: per_sample"):
        LossConfig.from_dict({"depth": {"gradient_weight": 2.0}})
    with pytest.raises(ValueError, match="loss.averaging must be one of"):
        LossConfig.from_dict({"averaging": "pixels"})


def test_quantile_filter_drops_the_top_losses_and_clamps():
    values = torch.arange(4000, dtype=torch.float64) / 20  # 0.0 .. 199.95
    # The nearest-rank median of 4000 values is element round(0.5 * 3999) + 1 = 2001 (1-based): 100.0.
    kept = filter_by_quantile(values, 0.5)
    assert kept.numel() == 2000 and kept.max().item() == pytest.approx(99.95)
    # The 0.9 quantile (179.95) lies above the clamp at 100: values are clamped, then those below 100 kept.
    kept = filter_by_quantile(values, 0.9)
    assert kept.numel() == 2000 and kept.max().item() == pytest.approx(99.95)
    # Too few values, or too few left after filtering (999 of 2000): only clamped.
    assert torch.equal(filter_by_quantile(values[:1000], 0.5), values[:1000])
    kept = filter_by_quantile(values[::2], 0.5)
    assert kept.numel() == 2000 and kept.max().item() == 100.0


def _camera_batch(valid_first_frame: list[int], height: int = 12, width: int = 12) -> dict:
    B, S = len(valid_first_frame), 2
    masks = torch.zeros(B, S, height, width, dtype=torch.bool)
    for b, count in enumerate(valid_first_frame):
        masks[b, 0].view(-1)[:count] = True
    intrinsics = torch.tensor([[10.0, 0, width / 2], [0, 10.0, height / 2], [0, 0, 1]]).expand(B, S, 3, 3)
    return {"images": torch.zeros(B, S, 3, height, width), "extrinsics": torch.eye(3, 4).expand(B, S, 3, 4),
            "intrinsics": intrinsics, "point_masks": masks}  # fmt: skip


def test_camera_loss_skips_samples_with_few_valid_pixels_and_clamps_translation():
    config = LossConfig.from_dict({"camera": {"weight": 1.0}, "depth": None, "point": None, "track": None})
    batch = _camera_batch([101, 100])  # the second sample's first frame has only 100 valid pixels: not supervised
    target = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (12, 12))
    pred = target.clone()
    pred[0, :, 0] += 250.0  # translation error 250 on x: clamped at 100
    pred[0, :, 3] += 0.3  # rotation error 0.3 on qx
    pred[1] += 1000.0  # wrong everywhere, but excluded
    terms = MultitaskLoss(config)({"pose_enc_list": [pred]}, batch)
    assert terms["loss_T"].item() == pytest.approx(100 / 3)
    assert terms["loss_R"].item() == pytest.approx(0.3 / 4)
    assert terms["loss_FL"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["objective"].item() == pytest.approx(100 / 3 + 0.3 / 4, rel=1e-6)


def test_camera_only_batches_and_samples_without_depth_keep_camera_supervision():
    rng = torch.Generator().manual_seed(0)
    B, S, H, W = 2, 3, 14, 14
    extrinsics = torch.eye(3, 4).repeat(B, S, 1, 1)
    extrinsics[:, :, :, 3] = torch.randn(B, S, 3, generator=rng)
    intrinsics = torch.tensor([[12.0, 0, 7], [0, 12.0, 7], [0, 0, 1]]).expand(B, S, 3, 3)
    camera_only = {"images": torch.zeros(B, S, 3, H, W), "extrinsics": extrinsics, "intrinsics": intrinsics}
    loss_fn = MultitaskLoss(LossConfig())
    targets = loss_fn.prepare_targets(camera_only)
    centres = -targets["extrinsics"][..., 3]  # rotations are the identity
    assert torch.allclose(centres[:, 1:].norm(dim=-1).mean(dim=1), torch.ones(B))  # the camera-centre scale
    preds = {"pose_enc_list": [torch.zeros(B, S, 9)], "depth": torch.ones(B, S, H, W, 1),
             "depth_conf": torch.ones(B, S, H, W)}  # fmt: skip
    total, metrics = loss_fn.total_and_terms(preds, targets)
    assert set(metrics) == {"camera", "camera_T", "camera_R", "camera_FL"} and total.item() > 0

    # A mixed batch: sample 1 has no depth; its camera is still supervised, scaled by its camera centres.
    depths = torch.zeros(B, S, H, W)
    depths[0] = 2.0
    mixed = {**camera_only, "depths": depths, "valid_masks": depths > 0, "has_depth": torch.tensor([True, False])}
    targets = loss_fn.prepare_targets(mixed)
    assert torch.allclose(targets["extrinsics"][1], normalize_camera_extrinsics_and_points_batch(extrinsics)[0][1])
    pred = extri_intri_to_pose_encoding(targets["extrinsics"], targets["intrinsics"], (H, W))
    pred[1, :, 3] += 1.0  # only sample 1 is wrong (rotation)
    assert loss_fn({"pose_enc_list": [pred]}, targets)["loss_R"].item() == pytest.approx(1 / 8)  # 2 samples
    # Flagged as having depth but without a valid pixel, the reference's rule drops it.
    targets["has_depth"] = torch.tensor([True, True])
    assert loss_fn({"pose_enc_list": [pred]}, targets)["loss_R"].item() == pytest.approx(0.0, abs=1e-6)


def test_metric_names_cover_every_reference_term(loss_io, loss_configs):
    loss_fn = MultitaskLoss(LossConfig.from_dict(loss_configs["default"]))
    preds, batch = golden_predictions(loss_io), golden_batch(loss_io)
    terms = loss_fn(preds, batch)
    total, metrics = loss_fn.total_and_terms(preds, batch)
    assert total.item() == terms["objective"].item()
    assert set(terms) - {"objective"} <= set(METRIC_NAMES)
    for name in ("depth", "point"):
        expected = sum(terms[f"loss_{part}_{name}"].item() for part in ("conf", "reg", "grad"))
        assert metrics[name].item() == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(metrics["camera_T"].item())
