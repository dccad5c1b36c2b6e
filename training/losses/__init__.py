"""Training losses: the reference's recipe (default) and the per-sample recipe, chosen by `loss.averaging`.

    loss_fn = build_loss(LossConfig.from_dict(config["loss"]))
    targets = loss_fn.prepare_targets(batch)              # normalised ground truth from a training.data batch
    total, terms = loss_fn.total_and_terms(predictions, targets)

- `reference`: `MultitaskLoss`, equal to facebookresearch/vggt's training loss (averaged over the batch's pixels).
- `per_sample`: `PerSampleMultitaskLoss`, the paper's formulas averaged per sample (a split over ranks gives the
  same loss as one process).
- `normalization`, `gradients`, `tracks`, `config`: their parts.
"""

from __future__ import annotations

from training.losses.base import TrainingLoss
from training.losses.config import (
    AVERAGING_MODES,
    BATCH_AVERAGING,
    PER_SAMPLE_AVERAGING,
    CameraLossConfig,
    DenseLossConfig,
    LossConfig,
    TrackLossConfig,
)
from training.losses.normalization import normalize_camera_extrinsics_and_points_batch, reference_batch
from training.losses.per_sample import (
    PerSampleMultitaskLoss,
    camera_loss,
    confidence_regression_loss,
    dense_loss,
    normalize_ground_truth,
    prepare_targets,
)
from training.losses.reference import METRIC_NAMES, MultitaskLoss
from training.losses.tracks import build_track_targets, track_loss

__all__ = [
    "AVERAGING_MODES",
    "BATCH_AVERAGING",
    "METRIC_NAMES",
    "PER_SAMPLE_AVERAGING",
    "CameraLossConfig",
    "DenseLossConfig",
    "LossConfig",
    "MultitaskLoss",
    "PerSampleMultitaskLoss",
    "TrackLossConfig",
    "TrainingLoss",
    "build_loss",
    "build_track_targets",
    "camera_loss",
    "confidence_regression_loss",
    "dense_loss",
    "normalize_camera_extrinsics_and_points_batch",
    "normalize_ground_truth",
    "prepare_targets",
    "reference_batch",
    "track_loss",
]


def build_loss(config: LossConfig) -> TrainingLoss:
    """The recipe `config.averaging` selects."""
    if config.averaging == PER_SAMPLE_AVERAGING:
        return PerSampleMultitaskLoss(config)
    return MultitaskLoss(config)
