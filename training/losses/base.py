"""What the trainer needs of a loss recipe: ground truth from a collated batch, track targets, the objective."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from training.losses.config import LossConfig
from training.losses.tracks import build_track_targets, track_loss


class TrainingLoss(torch.nn.Module):
    """Base of the two recipes (`MultitaskLoss`, `PerSampleMultitaskLoss`).

    `prepare_targets(batch)` turns a batch of `training.data` into the recipe's normalised ground truth,
    `add_track_targets` adds track ground truth to it, and `total_and_terms(predictions, targets)` returns the
    objective and the logged terms under the trainer's metric names (`camera`, `camera_T`, `depth_grad`, ...).
    """

    valid_key: str  # the targets' key of the valid-pixel masks [B, S, H, W]

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    def wants_tracks(self) -> bool:
        return self.config.track is not None and self.config.track.weight > 0

    def prepare_targets(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def total_and_terms(
        self, predictions: Mapping[str, Any], targets: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def add_track_targets(self, targets: dict[str, Any], generator: torch.Generator | None = None) -> Tensor | None:
        """Store `track_targets` (see `build_track_targets`) in `targets`; returns their query points [B, N, 2],
        or None when tracks are not wanted or the batch has no depth."""
        if not self.wants_tracks() or targets.get("depths") is None:
            return None
        config = self.config.track
        targets["track_targets"] = build_track_targets(
            targets["depths"],
            targets["extrinsics"],
            targets["intrinsics"],
            targets[self.valid_key],
            config.num_queries,
            config.depth_tolerance,
            generator,
        )
        return targets["track_targets"]["query_points"]

    def track_terms(self, predictions: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """`track`, `track_position`, `track_visibility` (`track_loss`), or None without tracks to supervise."""
        track_targets = targets.get("track_targets")
        if self.config.track is None or "track" not in predictions or track_targets is None:
            return None
        if not track_targets["visible"].any():
            return None
        track_list = predictions.get("track_list") or [predictions["track"]]
        return track_loss(track_list, predictions["vis"], track_targets, self.config.track)
