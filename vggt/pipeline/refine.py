"""The bundle-adjustment step of a reconstruction (VGGT + BA), on the model's own tracks (`vggt.ba`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from vggt.errors import DependencyError, InputError, Message
from vggt.pipeline.inference import InferenceOptions, Predictions
from vggt.utils.device import autocast

logger = logging.getLogger(__name__)

SKIPPED = Message(
    "bundle adjustment skipped: no track survived the visibility, confidence and reprojection filters; kept the "
    "feed-forward cameras (loosen the {vis_threshold}, {conf_threshold} or {max_reproj_error} bundle-adjustment "
    "options)"
)


def require_bundle_adjustment() -> None:
    """Fail early, in one line, when bundle adjustment's optional dependency (Theseus) is missing."""
    from vggt.ba.solver import import_theseus

    try:
        import_theseus()
    except ImportError as err:
        raise DependencyError("{hint}", hint=str(err).splitlines()[0]) from None


def refine_cameras(
    model: torch.nn.Module,
    images: torch.Tensor,
    predictions: Predictions,
    options: InferenceOptions,
    ba_options: Mapping[str, Any],
):  # -> vggt.ba.postprocess.BARefinement | None
    """Bundle-adjust the feed-forward cameras of `predictions` on tracks of `images` [S, 3, H, W].

    Returns the refinement, or None (with a warning) when no track survived the filters. `ba_options` are
    keywords of `vggt.ba.refine_with_ba`.
    """
    from vggt.ba.postprocess import refine_with_ba

    if getattr(model, "track_head", None) is None:
        raise InputError("{bundle_adjust} needs the model's track head, which this model does not have")
    predictions.require("extrinsics", "depth")
    inputs = {
        "extrinsic": torch.from_numpy(predictions.extrinsics),
        "intrinsic": torch.from_numpy(predictions.intrinsics),
        "depth": torch.from_numpy(predictions.depth),
    }
    logger.info("bundle adjustment: tracking query points and refining %d cameras", predictions.num_frames)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.inference_mode(), autocast(options.device, options.dtype):
                refinement = refine_with_ba(model, images.to(options.device), inputs, **ba_options)
    except ValueError as err:
        raise InputError("bundle adjustment: {error}", error=err) from None
    for warning in caught:
        if refinement.refined or not str(warning.message).startswith("bundle adjustment skipped"):
            logger.warning("%s", warning.message)
    if not refinement.refined:
        logger.warning(SKIPPED)
        return None
    return refinement
