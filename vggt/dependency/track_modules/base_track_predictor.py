"""The reference's `vggt.dependency.track_modules.base_track_predictor`: the VGGSfM tracker's predictor."""

from vggt.dependency.track_modules.predictor import BaseTrackerPredictor

__all__ = ["BaseTrackerPredictor"]
