"""`vggt.reconstruct`: photos or a video in, a `Reconstruction` out.

The stages, one module each: inputs (`vggt.pipeline.inputs`), known intrinsics (`vggt.pipeline.calibration`),
the model (`vggt.models.build_model`), inference (`vggt.pipeline.inference`, or one pass per window:
`vggt.pipeline.windowed`), the optional bundle adjustment (`vggt.pipeline.refine`), points
(`vggt.pipeline.points`), and the result with its writers (`vggt.pipeline.reconstruction`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt.data.intrinsics import KnownIntrinsics
from vggt.data.layout import unique_file_names
from vggt.data.poses import KnownPoses
from vggt.errors import InputError
from vggt.export.colmap import conform_intrinsics
from vggt.models.pi3x import Pi3XConfig
from vggt.pipeline.calibration import apply_known_intrinsics, apply_known_poses, known_intrinsics, known_poses
from vggt.pipeline.family import (
    FamilyConditioning,
    conditioning_inputs,
    engine_notice,
    read_known_depth,
    takes_conditioning,
)
from vggt.pipeline.inference import InferenceOptions, Predictions, check_finite, run_inference, streaming_for
from vggt.pipeline.inputs import CollectedInputs, collect_inputs, load_input_images
from vggt.pipeline.memory import MemoryEstimate, check_memory, estimate_inference_memory
from vggt.pipeline.model_choice import expected_config, is_vggt, load_model, model_label
from vggt.pipeline.options import ExportOptions, ReconstructOptions
from vggt.pipeline.parallel import join_torchrun
from vggt.pipeline.points import PointSelection, dense_cloud, tracked_points
from vggt.pipeline.reconstruction import Reconstruction
from vggt.pipeline.refine import refine_cameras, require_bundle_adjustment
from vggt.pipeline.windowed import WindowPlan, common_input_size, predict_windowed
from vggt.utils.cameras import Cameras
from vggt.utils.device import resolve_device, resolve_dtype
from vggt.utils.geometry import closed_form_inverse_se3
from vggt.utils.load_fn import PreprocessTransform, rescale_intrinsics_to_input, rescale_intrinsics_to_original
from vggt.utils.paths import NAME_ROOM_BYTES, check_file_name

logger = logging.getLogger(__name__)


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: torch.nn.Module | str | None = None,
    options: ReconstructOptions | None = None,
    **overrides: Any,
) -> Reconstruction | None:
    """Cameras, depth and a point cloud from a folder of images, image files, or one video file.

    Launched by `torchrun --nproc_per_node=N`, the N processes share the forward pass (sequence parallelism)
    and only rank 0 gets the reconstruction; the others get None. `processes=N` does the same from one process.

    Args:
        inputs: a folder, a list of image files, or one video file.
        model: a model to use (moved to the device), or a registry name (`vggt.models.list_models()`, e.g.
            "pi3x", or a small random preset such as "pi3-tiny": the `model_name` option); None builds VGGT from
            `checkpoint` / `preset`. Models other than VGGT run their reference forward pass (no streaming engine,
            no track head: see `vggt.pipeline.family`).
        options, overrides: a `ReconstructOptions`, and/or its fields as keywords (`model_name`, `checkpoint`,
            `preset`, `device`, `dtype`, `mode`, `resolution`, `points`, `conf_percentile`, `max_points`,
            `chunk_size`, `offload`, `processes`, `merge_ratio`, `fps`, `max_frames`, `bundle_adjust`, `ba_options`,
            `intrinsics`, `depth`, `poses`, `refine_intrinsics`, `window`, `overlap`, `loop_closure`, `work_dir`,
            `resume`, `memory_check`, `progress`).

    Raises:
        InputError: bad inputs or options; CheckpointError: weights that cannot be loaded;
        InsufficientMemoryError: the run would not fit; DependencyError: an optional dependency is missing;
        PredictionError: the model predicted non-finite cameras or depth.
    """
    start = time.perf_counter()
    if isinstance(model, str):
        overrides["model_name"], model = model, None
    opts = dataclasses.replace(options or ReconstructOptions(), **overrides)
    config = model.config if model is not None else expected_config(opts.model_name, opts.preset)
    ranks, device = join_torchrun(resolve_device(opts.device))
    if ranks.parallel and opts.windowed:
        raise InputError("{window} bounds the memory already; it is not combined with torchrun")
    inference = InferenceOptions(
        device,
        resolve_dtype(device, opts.dtype),
        streaming_for(device, config, opts.chunk_size, opts.offload, opts.merge_ratio),
        opts.memory_check,
        opts.progress and ranks.is_main,
        opts.processes,
    )
    check_options(opts, config)
    collected = collect_inputs(inputs, fps=opts.fps, max_frames=opts.max_frames, progress=opts.progress)
    try:
        check_inputs(opts, collected)
        if opts.memory_check:
            # A checkpoint named without a preset has an architecture unknown until it loads: then only the
            # photos themselves are counted (what a huge resolution allocates first).
            exact = model is not None or opts.checkpoint is None or opts.preset is not None or opts.model_name
            check_input_memory(opts, collected, inference, config, exact)
        known = None
        if opts.intrinsics is not None:
            known, collected = known_intrinsics(opts.intrinsics, collected)
        posed = None if opts.poses is None else known_poses(opts.poses, collected)
        reconstruction = predict_and_assemble(model, collected, known, opts, inference, config, posed)
    except BaseException:
        collected.cleanup()
        raise
    if reconstruction is None:  # a torchrun rank other than 0: it only computed
        collected.cleanup()
        return None
    reconstruction.source_video, reconstruction._frames_dir = collected.video, collected.frames_dir
    reconstruction.seconds = time.perf_counter() - start
    return reconstruction


def predict_and_assemble(
    model: torch.nn.Module | None,
    collected: CollectedInputs,
    known: KnownIntrinsics | None,
    opts: ReconstructOptions,
    inference: InferenceOptions,
    config: Any,
    posed: KnownPoses | None = None,
) -> Reconstruction | None:
    """One forward pass over all frames (or one per window), then the reconstruction of its predictions (None on
    the torchrun ranks other than 0), moved into the frame of the given poses `posed` when there are any."""
    resolution = opts.resolution or config.default_resolution
    paths = collected.image_paths
    if opts.windowed and len(paths) > opts.window:
        model = load_model(opts.model_name, opts.checkpoint, opts.preset, inference.device) if model is None else model
        resolution = opts.resolution or model.config.default_resolution
        name = model_name(model, opts)
        windows = predict_windowed(model, paths, opts, inference, resolution, name, known, collected.video)
        predictions, transforms, images = windows.predictions, windows.transforms, None
        masked = 0
    else:
        # Images first, so that a bad photo is reported before a large checkpoint is loaded.
        loaded = load_input_images(paths, opts.mode, resolution, config.patch_size, opts.progress)
        model = load_model(opts.model_name, opts.checkpoint, opts.preset, inference.device) if model is None else model
        if opts.resolution is None and model.config.default_resolution != resolution:
            # The checkpoint records another training resolution than the configuration expected before loading.
            resolution = model.config.default_resolution
            loaded = load_input_images(paths, opts.mode, resolution, model.config.patch_size)
        conditioning = None
        if takes_conditioning(model) and (known is not None or opts.depth is not None or posed is not None):
            conditioning = conditioning_inputs(
                None if known is None else rescale_intrinsics_to_input(known.intrinsics, loaded.transforms),
                None if opts.depth is None else read_known_depth(opts.depth, paths, loaded.transforms),
                tuple(loaded.images.shape[-2:]),
            )
            conditioning = with_poses(conditioning, posed)
        predictions = run_inference(model, loaded.images, inference, conditioning=conditioning)
        if predictions is None:
            return None
        masked = check_finite(predictions, model_name(model, opts))
        transforms, images, windows = list(loaded.transforms), loaded.images, None
        if known is not None:
            apply_known_intrinsics(predictions, known, transforms)
        if posed is not None:
            apply_known_poses(predictions, posed)
    predictions.require("pose_enc", "depth")
    if opts.points == "pointmap":
        predictions.require("world_points")
    export = opts.export_options(is_video=collected.video is not None)
    fixed = None if posed is None else np.flatnonzero(posed.known).tolist()
    reconstruction = assemble(
        model, images, list(paths), transforms, predictions, opts, inference, known, export, fixed_frames=fixed
    )
    reconstruction.masked_pixels = masked
    reconstruction.given_poses = 0 if posed is None else int(posed.known.sum())
    reconstruction.windows = None if windows is None else windows.summary()
    reconstruction._work_dir = None if windows is None else windows.work_dir
    return reconstruction


def with_poses(conditioning: FamilyConditioning, posed: KnownPoses | None) -> FamilyConditioning:
    """`conditioning` plus the given poses for Pi3X's network, re-expressed (in float64, before float32) relative
    to the first posed camera: the network reads relative poses only, and large world coordinates keep their
    precision."""
    if posed is None:
        return conditioning
    camera_to_world = posed.camera_to_world
    first = closed_form_inverse_se3(camera_to_world[int(np.argmax(posed.known))])
    relative = torch.from_numpy(np.einsum("ij,sjk->sik", first, camera_to_world)).float()
    return dataclasses.replace(conditioning, poses=relative)


def check_options(opts: ReconstructOptions, config: Any) -> None:
    """What can be checked before any input is read or the model loaded (`config`: the model's)."""
    resolution = opts.resolution or config.default_resolution
    if resolution % config.patch_size:
        raise InputError(
            "{resolution} must be a positive multiple of the patch size {patch}, got {value}",
            patch=config.patch_size,
            value=resolution,
        )
    check_conditioning_options(opts, config)
    if not is_vggt(config):
        check_family_options(opts, config)
    if opts.bundle_adjust:
        require_bundle_adjustment(opts.ba_backend)


def check_conditioning_options(opts: ReconstructOptions, config: Any) -> None:
    """Known depth only by Pi3X; known depth and poses in one forward pass."""
    if opts.poses is not None and opts.windowed:
        raise InputError("{poses} are applied to one forward pass over all frames; they are not combined with {window}")
    if opts.depth is not None and not isinstance(config, Pi3XConfig):
        raise InputError("{depth} feeds Pi3X's network only: add {model_name=pi3x} (or a Pi3X checkpoint)")
    if opts.depth is not None and opts.windowed:
        raise InputError("{depth} is read in one forward pass over all frames; it is not combined with {window}")


def check_family_options(opts: ReconstructOptions, config: Any) -> None:
    """A model other than VGGT: no track head (bundle adjustment refused in one line); with known poses, Pi3X runs
    its reference forward pass, and one line says which of the streaming engine's options it then ignores."""
    label = model_label(None, opts.checkpoint, opts.preset, opts.model_name or type(config).__name__)
    if opts.bundle_adjust:
        raise InputError(
            "{bundle_adjust} refines cameras on the track head's tracks, which {model} does not have; drop "
            "{bundle_adjust} (the COLMAP model's points come from depth agreement between views)",
            model=label,
        )
    if opts.poses is None or not isinstance(config, Pi3XConfig):
        return
    asked = {
        "--chunk-size": opts.chunk_size is not None,
        "--offload": opts.offload,
        "--merge-ratio": opts.merge_ratio > 0,
        "--processes > 1 (sequence parallelism)": opts.processes > 1,
    }
    engine_notice(label, [name for name, chosen in asked.items() if chosen])


def check_inputs(opts: ReconstructOptions, collected: CollectedInputs) -> None:
    """What can be checked once the inputs are known, before they are read or the model loaded."""
    for path in collected.image_paths:  # outputs are named after the inputs: the user's bytes, or a refusal
        check_file_name(path, room=NAME_ROOM_BYTES)
    if collected.skipped:
        skipped = ", ".join(p.name for p in collected.skipped)
        logger.warning("skipped %d non-image entries: %s", len(collected.skipped), skipped)
    if opts.bundle_adjust and len(collected.image_paths) < 2:
        raise InputError(
            "{bundle_adjust} needs at least two images, got {count}; drop it for a single photo",
            count=len(collected.image_paths),
        )
    if opts.windowed:
        WindowPlan.build(len(collected.image_paths), opts.window, opts.overlap, opts.loop_closure)  # its checks


def check_input_memory(
    opts: ReconstructOptions,
    collected: CollectedInputs,
    inference: InferenceOptions,
    config: Any,
    exact: bool = True,
) -> None:
    """The memory check of the largest forward pass, from the photos' headers, before any photo is decoded (a
    large `resolution` must not exhaust the memory while the photos are loaded). With `exact` False (`config` is
    a guess), only what loading the photos takes is counted."""
    paths = collected.image_paths
    resolution = opts.resolution or config.default_resolution
    width, height = common_input_size(paths, opts.mode, resolution, config.patch_size)
    frames = -(-min(len(paths), opts.window or len(paths)) // opts.processes)
    if not is_vggt(config):
        exact = False  # the model's parameter count is known once it is built: `run_inference` checks then
    if not exact:
        # The loader holds every photo as a float32 tensor, then their concatenation: twice the batch.
        image_bytes = 3 * height * width * 4
        loading = (2 * min(len(paths), opts.window or len(paths)) + 1) * image_bytes
        estimate = MemoryEstimate(weights=0, aggregator=loading, dense_heads=0, outputs=0, overhead=0)
    else:
        estimate = estimate_inference_memory(
            config,
            frames,
            height,
            width,
            dtype=inference.dtype,
            device_type=inference.device.type,
            streaming=inference.engine_for(config).options,
        )
    check_memory(estimate, inference.device, frames, height, width)


def model_name(model: torch.nn.Module, opts: ReconstructOptions) -> str:
    """How to name the model in messages: the checkpoint, or the random-weight preset or model."""
    return model_label(model, opts.checkpoint, opts.preset, opts.model_name)


def assemble(
    model: torch.nn.Module,
    images: torch.Tensor | None,
    paths: list[Path],
    transforms: list[PreprocessTransform],
    predictions: Predictions,
    opts: ReconstructOptions,
    inference: InferenceOptions,
    known: KnownIntrinsics | None = None,
    export: ExportOptions | None = None,
    fixed_frames: list[int] | None = None,
) -> Reconstruction:
    """The reconstruction of `predictions` on `images` [S, 3, H, W] (needed for bundle adjustment only): cameras
    (fitted to `export`'s camera model and sharing, then bundle-adjusted if asked, the cameras of `fixed_frames`
    (given poses) held constant), the point cloud, the result."""
    export = export or ExportOptions()
    original_wh = np.array([t.original_size for t in transforms], dtype=np.int64)

    def conform(intrinsics: np.ndarray) -> np.ndarray:
        return conform_intrinsics(intrinsics, original_wh, export.camera_model, export.shared_camera)

    extrinsics, model_intrinsics, sparse = predictions.extrinsics, conform(predictions.intrinsics), None
    intrinsics = None if known is None else conform(known.intrinsics)
    if opts.bundle_adjust:
        ba_options = {**opts.ba_options, **({"refine_focal": opts.refine_intrinsics} if known is not None else {})}
        if fixed_frames is not None:
            ba_options["fixed_frames"] = fixed_frames
        if export.shared_camera:
            ba_options["shared_focal"] = True
        elif opts.ba_backend == "ceres":
            ba_options.setdefault("shared_focal", False)  # Ceres refines the cameras as written: one per image
        refinement = refine_cameras(
            model, images, predictions, inference, ba_options, model_intrinsics, opts.ba_backend, opts.progress
        )
        if refinement is not None:
            extrinsics = refinement.extrinsics.detach().cpu().numpy().astype(np.float32)
            model_intrinsics = conform(refinement.intrinsics.detach().cpu().numpy().astype(np.float32))
            if known is None or opts.refine_intrinsics:
                intrinsics = None
            sparse = tracked_points(
                refinement.points3d.detach().cpu().numpy(),
                refinement.tracks.detach().cpu().numpy(),
                refinement.observation_mask.cpu().numpy(),
                predictions.images.transpose(0, 2, 3, 1),
                transforms,
            )
    cloud = dense_cloud(predictions, extrinsics, model_intrinsics, transforms, opts.points, point_selection(opts))
    cameras = Cameras(
        unique_file_names([p.name for p in paths]),
        extrinsics,
        conform(rescale_intrinsics_to_original(model_intrinsics, transforms)) if intrinsics is None else intrinsics,
        original_wh,
    )
    return Reconstruction(
        cameras=cameras,
        image_paths=paths,
        model_intrinsics=model_intrinsics,
        predictions=predictions,
        transforms=transforms,
        cloud=cloud,
        points_source=opts.points,
        sparse=sparse,
        selection=point_selection(opts),
        export=export,
    )


def point_selection(opts: ReconstructOptions) -> PointSelection:
    """The pixels `opts` turns into the dense cloud (Reconstruction.select changes them later)."""
    return PointSelection(conf_percentile=opts.conf_percentile, max_points=opts.max_points)
