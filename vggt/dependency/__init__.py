"""The reference package's `vggt.dependency`: the VGGSfM tracker, `predict_tracks`, `np_to_pycolmap`, projection and
distortion helpers, under the reference's module names for scripts written against it (e.g. its `demo_colmap.py`).

Modules are imported on use: `track_predict` needs torch only, `np_to_pycolmap` needs pycolmap (the `export`
extra) and the keypoint extractors need the `keypoints` extra.
"""

from vggt.dependency.track_modules.base_track_predictor import BaseTrackerPredictor
from vggt.dependency.track_modules.blocks import BasicEncoder, ShallowEncoder
from vggt.dependency.track_modules.track_refine import refine_track

__all__ = ["BaseTrackerPredictor", "BasicEncoder", "ShallowEncoder", "refine_track"]
