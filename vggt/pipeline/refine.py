"""The bundle-adjustment step of a reconstruction (VGGT + BA), on the model's own tracks (`vggt.ba`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vggt.errors import DependencyError, InputError, Message
from vggt.pipeline.inference import InferenceOptions, Predictions
from vggt.utils.device import autocast

logger = logging.getLogger(__name__)

SKIPPED = Message(
    "bundle adjustment skipped: fewer than two frames kept enough tracks after the visibility, confidence and "
    "reprojection filters; kept the feed-forward cameras (loosen the {vis_threshold}, {conf_threshold} or "
    "{max_reproj_error} bundle-adjustment options)"
)
PARTIAL = (
    "bundle adjustment refined {registered} of {frames} cameras; {left} had too few tracks and keep their "
    "feed-forward cameras (loosen the {vis_threshold}, {conf_threshold} or {max_reproj_error} options to register them)"
)


def require_bundle_adjustment(backend: str = "theseus") -> None:
    """Fail early, in one line, when the optional dependency of bundle adjustment's `backend` is missing (Theseus,
    or pycolmap for "ceres")."""
    from vggt.ba.solver import import_theseus
    from vggt.utils.optional import import_pycolmap

    try:
        import_theseus() if backend == "theseus" else import_pycolmap()
    except ImportError as err:
        raise DependencyError("{hint}", hint=str(err).splitlines()[0]) from None


def refine_cameras(
    model: torch.nn.Module,
    images: torch.Tensor,
    predictions: Predictions,
    options: InferenceOptions,
    ba_options: Mapping[str, Any],
    model_intrinsics: np.ndarray | None = None,
    backend: str = "theseus",
    progress: bool = False,
):  # -> vggt.ba.postprocess.BARefinement | None
    """Bundle-adjust the feed-forward cameras of `predictions` on tracks of `images` [S, 3, H, W].

    model_intrinsics: [S, 3, 3] on the model grid to start from (None: the decoded ones). backend: "theseus" or
    "ceres". Returns the refinement (frames without enough tracks keep their cameras, said in one line), or None
    (said in one line) when fewer than two frames could be registered. `ba_options` are keywords of
    `vggt.ba.refine_with_ba`.
    """
    from vggt.ba.postprocess import refine_with_ba

    if getattr(model, "track_head", None) is None:
        raise InputError("{bundle_adjust} needs the model's track head, which this model does not have")
    predictions.require("extrinsics", "depth")
    intrinsics = predictions.intrinsics if model_intrinsics is None else model_intrinsics
    inputs = {
        "extrinsic": torch.from_numpy(np.ascontiguousarray(predictions.extrinsics)),
        "intrinsic": torch.from_numpy(np.ascontiguousarray(intrinsics)),
        "depth": torch.from_numpy(np.ascontiguousarray(predictions.depth)),
    }
    logger.info("bundle adjustment (%s): tracking query points and refining %d cameras", backend, len(intrinsics))
    try:
        with torch.inference_mode(), autocast(options.device, options.dtype):
            refinement = refine_with_ba(
                model, images.to(options.device), inputs, backend=backend, progress=progress, **ba_options
            )
    except ValueError as err:
        raise InputError("bundle adjustment: {error}", error=err) from None
    if not refinement.refined:
        logger.warning(SKIPPED)
        return None
    frames = predictions.num_frames
    if refinement.num_registered < frames:
        left = frames - refinement.num_registered
        logger.warning(Message(PARTIAL, registered=refinement.num_registered, frames=frames, left=left))
    return refinement
