"""Photos or a video in, cameras, depth and a point cloud out: `vggt.reconstruct` and `Reconstruction`.

    from vggt import reconstruct
    rec = reconstruct("photos/", checkpoint="facebook/VGGT-1B")
    rec.save("out/")          # COLMAP model, PLY, GLB, depth maps, cameras.json, predictions.npz
    rec.to_ply("points.ply")

One stage per module: `options` (what can be chosen, importable without torch), `inputs` (folders, image files,
`video`), `inference` (the one inference path; `memory` estimates whether it fits), `refine` (bundle
adjustment), `points` (point clouds), `reconstruction` (the result and its writers) and `api` (`reconstruct`).
Names are imported on first use, so that `vggt --help` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vggt.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from vggt.errors import InputError
    from vggt.pipeline.api import reconstruct
    from vggt.pipeline.inference import InferenceOptions, Predictions, run_inference
    from vggt.pipeline.inputs import CollectedInputs, collect_inputs, load_input_images
    from vggt.pipeline.options import (
        DEFAULT_CONF_PERCENTILE,
        DEFAULT_MAX_POINTS,
        MODES,
        POINT_SOURCES,
        ReconstructOptions,
    )
    from vggt.pipeline.points import (
        PointCloud,
        PointSelection,
        depth_at_original_resolution,
        select_points,
        tracked_points,
    )
    from vggt.pipeline.reconstruction import Reconstruction
    from vggt.utils.files import check_output_folder

_ORIGINS = {
    "InputError": "vggt.errors",
    "reconstruct": "vggt.pipeline.api",
    "InferenceOptions": "vggt.pipeline.inference",
    "Predictions": "vggt.pipeline.inference",
    "run_inference": "vggt.pipeline.inference",
    "CollectedInputs": "vggt.pipeline.inputs",
    "collect_inputs": "vggt.pipeline.inputs",
    "load_input_images": "vggt.pipeline.inputs",
    "DEFAULT_CONF_PERCENTILE": "vggt.pipeline.options",
    "DEFAULT_MAX_POINTS": "vggt.pipeline.options",
    "MODES": "vggt.pipeline.options",
    "POINT_SOURCES": "vggt.pipeline.options",
    "ReconstructOptions": "vggt.pipeline.options",
    "PointCloud": "vggt.pipeline.points",
    "PointSelection": "vggt.pipeline.points",
    "depth_at_original_resolution": "vggt.pipeline.points",
    "select_points": "vggt.pipeline.points",
    "tracked_points": "vggt.pipeline.points",
    "Reconstruction": "vggt.pipeline.reconstruction",
    "check_output_folder": "vggt.utils.files",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
__all__ = [
    "DEFAULT_CONF_PERCENTILE",
    "DEFAULT_MAX_POINTS",
    "MODES",
    "POINT_SOURCES",
    "CollectedInputs",
    "InferenceOptions",
    "InputError",
    "PointCloud",
    "PointSelection",
    "Predictions",
    "ReconstructOptions",
    "Reconstruction",
    "check_output_folder",
    "collect_inputs",
    "depth_at_original_resolution",
    "load_input_images",
    "reconstruct",
    "run_inference",
    "select_points",
    "tracked_points",
]
