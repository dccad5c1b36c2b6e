"""The reference recipe (`loss.averaging: batch`, the default): the losses that trained the released weights.

Same terms, names, constants and order of operations as facebookresearch/vggt `training/loss.py`
(`MultitaskLoss`), checked against its outputs in `loss_io.safetensors`:

- camera (`loss_camera` = `weight_trans loss_T + weight_rot loss_R + weight_focal loss_FL`): per camera-head
  iteration i of n, weighted gamma^(n-1-i), then averaged over iterations; l1 (absolute error per component)
  or l2 (Euclidean norm of the translation, quaternion and field-of-view parts), clamped at 100 and averaged
  over the frames of the samples whose first frame has more than 100 valid pixels;
- depth and point maps: `loss_conf` = mean over the batch's valid pixels of `gamma ||pred - gt|| C - alpha log C`,
  `loss_reg` = mean of `||pred - gt||` (both after quantile filtering at `valid_range`), and `loss_grad` the
  multi-scale gradient term `gradient_loss_fn` (`training.losses.gradients`); the objective takes
  `weight * (loss_conf + loss_reg + loss_grad)`; a batch with fewer than 100 valid pixels gives zeros;
- track: ours (`training.losses.tracks`; the reference's is unfinished), as `loss_track`,
  `loss_track_position`, `loss_track_visibility`.

`objective` is the weighted sum. Batches follow the reference's keys (`images`, `extrinsics`, `intrinsics`,
`depths`, `world_points`, `point_masks`, already normalised: `normalization.reference_batch`). Two additions of
ours: a batch without depth (camera-only) gives only the camera terms, every sample supervised; and a batch
with `has_depth` [B] supervises the cameras of its samples without depth. Predictions in half precision are
promoted to float32 (the reference computes its losses under autocast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from training.losses.base import TrainingLoss
from training.losses.config import CameraLossConfig, DenseLossConfig, LossConfig
from training.losses.gradients import HARD_MAX, dense_gradient_term, filter_by_quantile, finite_or_zero
from training.losses.normalization import reference_batch
from training.losses.reduction import iteration_weights
from vggt.utils.pose_enc import extri_intri_to_pose_encoding

MIN_VALID_PIXELS = 100  # dense terms need at least this many valid pixels in the batch ...
MIN_CAMERA_PIXELS = 100  # ... and a sample's first frame more than this many for its camera loss
TRANSLATION, ROTATION, FOCAL = slice(0, 3), slice(3, 7), slice(7, 9)
DENSE_KEYS = {"depth": ("depth", "depths"), "point": ("world_points", "world_points")}  # prediction, ground truth
# Reference name -> the trainer's metric name (metrics.jsonl, TensorBoard, curves).
METRIC_NAMES = {
    "loss_camera": "camera", "loss_T": "camera_T", "loss_R": "camera_R", "loss_FL": "camera_FL",
    "loss_conf_depth": "depth_conf", "loss_reg_depth": "depth_reg", "loss_grad_depth": "depth_grad",
    "loss_conf_point": "point_conf", "loss_reg_point": "point_reg", "loss_grad_point": "point_grad",
    "loss_track": "track", "loss_track_position": "track_position", "loss_track_visibility": "track_visibility",
}  # fmt: skip


def full_precision(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# ------------------------------------------------------------------------------------------ camera


def camera_supervised_samples(batch: Mapping[str, Any], batch_size: int, device: torch.device) -> Tensor:
    """[B] bool: samples whose first frame has more than MIN_CAMERA_PIXELS valid pixels, or that have no depth."""
    masks = batch.get("point_masks")
    if masks is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    supervised = masks[:, 0].sum(dim=(-1, -2)) > MIN_CAMERA_PIXELS
    if batch.get("has_depth") is not None:
        supervised = supervised | ~batch["has_depth"].bool()
    return supervised


def pose_errors(pred: Tensor, gt: Tensor, loss_type: str) -> tuple[Tensor, Tensor, Tensor]:
    """Mean translation, rotation and field-of-view errors of [..., 9] encodings (translation clamped at 100)."""
    diff = pred - gt
    if loss_type == "l1":
        errors = diff[..., TRANSLATION].abs(), diff[..., ROTATION].abs(), diff[..., FOCAL].abs()
    else:
        errors = (diff[..., TRANSLATION].norm(dim=-1), diff[..., ROTATION].norm(dim=-1), diff[..., FOCAL].norm(dim=-1))
    error_t, error_r, error_fl = (finite_or_zero(e) for e in errors)
    return error_t.clamp(max=HARD_MAX).mean(), error_r.mean(), error_fl.mean()


def camera_loss(
    pose_enc_list: Sequence[Tensor], batch: Mapping[str, Any], config: CameraLossConfig
) -> dict[str, Tensor]:
    """`loss_camera`, `loss_T`, `loss_R`, `loss_FL` over the camera head's iterations.

    Args:
        pose_enc_list: n tensors [B, S, 9].
        batch: `extrinsics` [B, S, 3, 4] (normalised), `intrinsics` [B, S, 3, 3], `images` [B, S, 3, H, W], and
            optionally `point_masks` [B, S, H, W], `has_depth` [B].
    """
    image_hw = tuple(batch["images"].shape[-2:])
    gt = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], image_hw, config.pose_encoding_type)
    supervised = camera_supervised_samples(batch, gt.shape[0], gt.device)
    weights = iteration_weights(len(pose_enc_list), config.gamma)
    totals = [0.0, 0.0, 0.0]
    for weight, pred in zip(weights, pose_enc_list):
        pred = full_precision(pred)
        if supervised.any():
            parts = pose_errors(pred[supervised], gt[supervised], config.loss_type)
        else:
            parts = ((pred * 0).mean(),) * 3  # keeps the graph connected
        totals = [total + part * weight for total, part in zip(totals, parts)]
    loss_t, loss_r, loss_fl = (total / len(weights) for total in totals)
    return {
        "loss_camera": loss_t * config.weight_trans + loss_r * config.weight_rot + loss_fl * config.weight_focal,
        "loss_T": loss_t,
        "loss_R": loss_r,
        "loss_FL": loss_fl,
    }


# ---------------------------------------------------------------------------------------- dense maps


def filtered_mean(values: Tensor, valid_range: float, like: Tensor) -> Tensor:
    """Mean of 1-D per-pixel losses after quantile filtering (`valid_range` <= 0: none); 0 for no values."""
    if values.numel() == 0:
        return (0.0 * like).mean()
    if valid_range > 0:
        values = filter_by_quantile(values, valid_range)
    return finite_or_zero(values).mean()


def regression_loss(
    pred: Tensor, gt: Tensor, mask: Tensor, conf: Tensor, config: DenseLossConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """(confidence term, gradient term, plain regression term) of one dense map.

    Args:
        pred, gt: [B, S, H, W, C]; mask: [B, S, H, W] bool; conf: [B, S, H, W].
    """
    reg = finite_or_zero(torch.norm(gt[mask] - pred[mask], dim=-1))  # [V]
    valid_conf = conf[mask]
    conf_values = finite_or_zero(config.gamma * reg * valid_conf - config.alpha * torch.log(valid_conf))
    if config.gradient_loss_fn is None:
        grad_term = pred.new_zeros(())
    else:
        grad_term = dense_gradient_term(config.gradient_loss_fn, pred, gt, mask, conf)
    return filtered_mean(conf_values, config.valid_range, pred), grad_term, filtered_mean(reg, config.valid_range, pred)


def dense_loss(
    name: str, predictions: Mapping[str, Tensor], batch: Mapping[str, Any], config: DenseLossConfig
) -> dict[str, Tensor]:
    """`loss_conf_<name>`, `loss_reg_<name>`, `loss_grad_<name>` for name "depth" or "point"."""
    pred_key, gt_key = DENSE_KEYS[name]
    pred, conf = full_precision(predictions[pred_key]), full_precision(predictions[f"{pred_key}_conf"])
    gt = finite_or_zero(batch[gt_key])
    if name == "depth":
        gt = gt[..., None]  # [B, S, H, W, 1] like the prediction
    mask = batch["point_masks"].bool()
    if mask.sum() < MIN_VALID_PIXELS:
        zero = (0.0 * pred).mean()
        conf_term = grad_term = reg_term = zero
    else:
        conf_term, grad_term, reg_term = regression_loss(pred, gt, mask, conf, config)
    return {f"loss_conf_{name}": conf_term, f"loss_reg_{name}": reg_term, f"loss_grad_{name}": grad_term}


# ---------------------------------------------------------------------------------------------- sum


class MultitaskLoss(TrainingLoss):
    """The reference's multi-task loss: `MultitaskLoss(config)(predictions, batch)` returns every term under
    the reference's names and `objective`, their weighted sum.

    Args of forward:
        predictions: `pose_enc_list` (n x [B, S, 9]), `depth` [B, S, H, W, 1] and `depth_conf` [B, S, H, W],
            `world_points` [B, S, H, W, 3] and `world_points_conf`, `track`/`track_list`/`vis` (any subset).
        batch: the reference's normalised batch (module docstring), plus `track_targets` for the track term.
    """

    valid_key = "point_masks"

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__(config or LossConfig())

    def prepare_targets(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return reference_batch(batch)

    def total_and_terms(
        self, predictions: Mapping[str, Any], targets: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self(predictions, targets)
        metrics = {METRIC_NAMES[key]: value for key, value in terms.items() if key in METRIC_NAMES}
        for name in ("depth", "point"):
            if f"{name}_conf" in metrics:
                metrics[name] = metrics[f"{name}_conf"] + metrics[f"{name}_reg"] + metrics[f"{name}_grad"]
        return terms["objective"], metrics

    def forward(self, predictions: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        cfg = self.config
        terms: dict[str, Tensor] = {}
        objective: list[Tensor] = []
        if cfg.camera is not None and "pose_enc_list" in predictions and "extrinsics" in batch:
            terms.update(camera_loss(predictions["pose_enc_list"], batch, cfg.camera))
            objective.append(terms["loss_camera"] * cfg.camera.weight)
        for name in ("depth", "point"):
            section = getattr(cfg, name)
            pred_key, gt_key = DENSE_KEYS[name]
            if section is None or pred_key not in predictions or batch.get(gt_key) is None:
                continue
            dense = dense_loss(name, predictions, batch, section)
            terms.update(dense)
            objective.append(
                (dense[f"loss_conf_{name}"] + dense[f"loss_reg_{name}"] + dense[f"loss_grad_{name}"]) * section.weight
            )
        track = self.track_terms(predictions, batch)
        if track is not None:
            terms.update({f"loss_{key}": value for key, value in track.items()})
            objective.append(terms["loss_track"] * cfg.track.weight)
        if not objective:
            raise ValueError(
                "no loss term could be computed: the batch has no ground truth for the model's enabled heads "
                "(cameras need 'extrinsics', 'intrinsics' and 'images'; depth and point maps 'depths'/'world_points' "
                "and 'point_masks')"
            )
        total = objective[0]
        for term in objective[1:]:
            total = total + term
        terms["objective"] = total
        return terms
