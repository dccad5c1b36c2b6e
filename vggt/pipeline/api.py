"""`vggt.reconstruct`: photos or a video in, a `Reconstruction` out.

The stages, one module each: inputs (`vggt.pipeline.inputs`), the model (`vggt.models.build_model`), inference
(`vggt.pipeline.inference`), the optional bundle adjustment (`vggt.pipeline.refine`), points
(`vggt.pipeline.points`), and the result with its writers (`vggt.pipeline.reconstruction`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vggt.data.layout import unique_file_names
from vggt.errors import InputError
from vggt.models.build import build_model
from vggt.models.config import DEFAULT_CHECKPOINT, VGGTConfig, get_preset
from vggt.pipeline.inference import InferenceOptions, Predictions, check_finite, run_inference
from vggt.pipeline.inputs import CollectedInputs, collect_inputs, load_input_images
from vggt.pipeline.options import ReconstructOptions
from vggt.pipeline.points import PointCloud, select_points, tracked_points
from vggt.pipeline.reconstruction import Reconstruction
from vggt.pipeline.refine import refine_cameras, require_bundle_adjustment
from vggt.utils.cameras import Cameras
from vggt.utils.device import resolve_device, resolve_dtype
from vggt.utils.geometry import unproject_depth_map_to_point_map
from vggt.utils.load_fn import LoadedImages, rescale_intrinsics_to_original

logger = logging.getLogger(__name__)


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: torch.nn.Module | None = None,
    options: ReconstructOptions | None = None,
    **overrides: Any,
) -> Reconstruction:
    """Cameras, depth and a point cloud from a folder of images, image files, or one video file.

    Args:
        inputs: a folder, a list of image files, or one video file.
        model: a VGGT to use (moved to the device); None builds one from `checkpoint` / `preset`.
        options, overrides: a `ReconstructOptions`, and/or its fields as keywords (`checkpoint`, `preset`,
            `device`, `dtype`, `mode`, `resolution`, `points`, `conf_percentile`, `max_points`, `chunk_size`,
            `fps`, `max_frames`, `bundle_adjust`, `ba_options`, `memory_check`, `progress`).

    Raises:
        InputError: bad inputs or options; CheckpointError: weights that cannot be loaded;
        InsufficientMemoryError: the run would not fit; DependencyError: an optional dependency is missing.
    """
    start = time.perf_counter()
    opts = dataclasses.replace(options or ReconstructOptions(), **overrides)
    device = resolve_device(opts.device)
    inference = InferenceOptions(
        device, resolve_dtype(device, opts.dtype), opts.chunk_size, opts.memory_check, opts.progress
    )
    config = model.config if model is not None else expected_config(opts.preset)
    check_options(opts, config)
    collected = collect_inputs(inputs, fps=opts.fps, max_frames=opts.max_frames, progress=opts.progress)
    try:
        check_inputs(opts, collected)
        # Images first, so that a bad photo is reported before a large checkpoint is loaded.
        resolution = opts.resolution or config.default_resolution
        loaded = load_input_images(collected.image_paths, opts.mode, resolution, config.patch_size, opts.progress)
        model = build_model(opts.checkpoint, opts.preset, device=device) if model is None else model
        if opts.resolution is None and model.config.default_resolution != resolution:
            # The checkpoint records another training resolution than the configuration expected before loading.
            resolution = model.config.default_resolution
            loaded = load_input_images(collected.image_paths, opts.mode, resolution, model.config.patch_size)
        predictions = run_inference(model, loaded.images, inference)
        masked = check_finite(predictions, model_name(model, opts))
        predictions.require("pose_enc", "depth")
        if opts.points == "pointmap":
            predictions.require("world_points")
        reconstruction = assemble(model, loaded, predictions, opts, inference)
    except BaseException:
        collected.cleanup()
        raise
    reconstruction.source_video, reconstruction._frames_dir = collected.video, collected.frames_dir
    reconstruction.masked_pixels = masked
    reconstruction.seconds = time.perf_counter() - start
    return reconstruction


def check_options(opts: ReconstructOptions, config: VGGTConfig) -> None:
    """What can be checked before any input is read or the model loaded."""
    resolution = opts.resolution or config.default_resolution
    if resolution % config.patch_size:
        raise InputError(
            "{resolution} must be a positive multiple of the patch size {patch}, got {value}",
            patch=config.patch_size,
            value=resolution,
        )
    if opts.bundle_adjust:
        require_bundle_adjustment()


def check_inputs(opts: ReconstructOptions, collected: CollectedInputs) -> None:
    """What can be checked once the inputs are known, before they are read or the model loaded."""
    if collected.skipped:
        skipped = ", ".join(p.name for p in collected.skipped)
        logger.warning("skipped %d non-image entries: %s", len(collected.skipped), skipped)
    if opts.bundle_adjust and len(collected.image_paths) < 2:
        raise InputError(
            "{bundle_adjust} needs at least two images, got {count}; drop it for a single photo",
            count=len(collected.image_paths),
        )


def model_name(model: torch.nn.Module, opts: ReconstructOptions) -> str:
    """How to name the model in messages: the checkpoint, or the random-weight preset."""
    if opts.checkpoint is not None:
        return str(opts.checkpoint)
    if opts.preset is not None:
        return f"random weights of preset {opts.preset}"
    return getattr(model, "name_or_path", None) or DEFAULT_CHECKPOINT


def expected_config(preset: str | None) -> VGGTConfig:
    """The configuration a model will have before it is loaded: the preset's, else VGGT-1B's."""
    return get_preset(preset) if preset is not None else VGGTConfig()


def assemble(
    model: torch.nn.Module,
    loaded: LoadedImages,
    predictions: Predictions,
    opts: ReconstructOptions,
    inference: InferenceOptions,
) -> Reconstruction:
    """The reconstruction of `predictions`: cameras (bundle-adjusted if asked), the point cloud, the result."""
    extrinsics, model_intrinsics, sparse = predictions.extrinsics, predictions.intrinsics, None
    colors_hw = predictions.images.transpose(0, 2, 3, 1)
    if opts.bundle_adjust:
        refinement = refine_cameras(model, loaded.images, predictions, inference, opts.ba_options)
        if refinement is not None:
            extrinsics = refinement.extrinsics.detach().cpu().numpy().astype(np.float32)
            model_intrinsics = refinement.intrinsics.detach().cpu().numpy().astype(np.float32)
            sparse = tracked_points(
                refinement.points3d.detach().cpu().numpy(),
                refinement.tracks.detach().cpu().numpy(),
                refinement.observation_mask.cpu().numpy(),
                colors_hw,
                loaded.transforms,
            )
    cloud = dense_cloud(predictions, extrinsics, model_intrinsics, colors_hw, loaded, opts)
    cameras = Cameras(
        unique_file_names([p.name for p in loaded.paths]),
        extrinsics,
        rescale_intrinsics_to_original(model_intrinsics, loaded.transforms),
        np.array(loaded.original_sizes, dtype=np.int64),
    )
    return Reconstruction(
        cameras=cameras,
        image_paths=list(loaded.paths),
        model_intrinsics=model_intrinsics,
        predictions=predictions,
        transforms=list(loaded.transforms),
        cloud=cloud,
        points_source=opts.points,
        sparse=sparse,
    )


def dense_cloud(
    predictions: Predictions,
    extrinsics: np.ndarray,
    model_intrinsics: np.ndarray,
    colors_hw: np.ndarray,
    loaded: LoadedImages,
    opts: ReconstructOptions,
) -> PointCloud:
    """The confident pixels of the depth maps unprojected with the cameras, or of the point head's maps."""
    if opts.points == "depth":
        world_points = unproject_depth_map_to_point_map(predictions.depth, extrinsics, model_intrinsics)
        confidence = predictions.depth_conf
    else:
        world_points, confidence = predictions.world_points, predictions.world_points_conf
    return select_points(world_points, confidence, colors_hw, loaded.transforms, opts.conf_percentile, opts.max_points)
