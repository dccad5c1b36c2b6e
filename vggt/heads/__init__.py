"""Prediction heads: cameras, dense DPT maps (depth, world points), tracks."""

from vggt.heads.camera_head import CameraHead
from vggt.heads.dpt_head import DPTHead
from vggt.heads.track_head import TrackHead

__all__ = ["CameraHead", "DPTHead", "TrackHead"]
