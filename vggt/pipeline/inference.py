"""The one inference path: a model, preprocessed images and `InferenceOptions` in, `Predictions` out.

`run_inference` checks the memory first (optional), runs the forward pass under `torch.inference_mode` and
autocast in the chosen precision with a progress bar, and decodes the cameras from the pose encoding, clamping
degenerate fields of view so that every camera is finite. `vggt reconstruct`, `vggt evaluate` and the demo call
it; the bundle-adjustment step reads its cameras.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from vggt.errors import InputError, PredictionError
from vggt.pipeline.family import FamilyConditioning, conditioning_tensors, family_forward, family_geometry
from vggt.pipeline.memory import check_memory, estimate_family_memory, estimate_inference_memory
from vggt.pipeline.model_choice import is_vggt
from vggt.runtime import progress
from vggt.runtime.engine import StreamingEngine
from vggt.utils.device import autocast
from vggt.utils.pose_enc import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri

logger = logging.getLogger(__name__)

# More non-finite depth or point values than this fraction of all pixels: the model is broken, not the photos.
MAX_NON_FINITE_FRACTION = 0.01
# A pinhole camera needs a field of view strictly between 0 and 180 degrees; predictions outside this range
# (seen with random weights) are clamped, with a warning, so that every decoded camera is finite.
FOV_RANGE_DEG = (1.0, 179.0)


@dataclass(frozen=True)
class InferenceOptions:
    """Where and how to run: device, compute precision of the trunk, the streaming engine (chunk sizes, offload,
    fast mode: `vggt.runtime.StreamingEngine`; None: `StreamingEngine.auto` for the device), the memory check
    before the run, a progress bar, and how many local processes share the pass (sequence parallelism; under
    torchrun the job's ranks share it whatever this says: `vggt.pipeline.parallel`, unless `share_across_ranks`
    is False: then this process runs its pass alone, e.g. when each rank evaluates scenes of its own)."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    engine: StreamingEngine | None = None
    memory_check: bool = True
    progress: bool = False
    processes: int = 1
    share_across_ranks: bool = True

    @property
    def ranks_sharing(self) -> int:
        """How many torchrun ranks share the pass (1 without a process group or with `share_across_ranks` off)."""
        return dist.get_world_size() if self.share_across_ranks and dist.is_initialized() else 1

    def engine_for(self, config: Any) -> StreamingEngine:
        """The engine of the run: the one chosen, else the automatic one for the device and `config` (any model's;
        VGGT's caps the frames per chunk with its `frames_chunk_size`)."""
        if self.engine is not None:
            return self.engine
        cap = getattr(config, "frames_chunk_size", None)
        return StreamingEngine.auto(self.device, max_frames_chunk_size=cap)


def streaming_for(
    device: torch.device,
    config: Any,
    frames_chunk_size: int | None = None,
    offload: bool = False,
    merge_ratio: float = 0.0,
) -> StreamingEngine:
    """The automatic streaming engine for `device`, with the frames per chunk, offload and fast mode a user chose;
    `config` is any model's (VGGT's caps the frames per chunk with its `frames_chunk_size`)."""
    cap = getattr(config, "frames_chunk_size", None)
    engine = StreamingEngine.auto(device, max_frames_chunk_size=cap, offload=offload, merge_ratio=merge_ratio)
    if frames_chunk_size is None:
        return engine
    return StreamingEngine(engine.options.replace(frames_chunk_size=frames_chunk_size), merge_ratio)


@dataclass
class Predictions:
    """One scene's model outputs as numpy (batch axis removed) on the model's input grid of H x W pixels.

    Attributes:
        pose_enc: [S, 9] as predicted. extrinsics: [S, 3, 4] camera-from-world and intrinsics: [S, 3, 3] decoded
            from it (fields of view clamped into FOV_RANGE_DEG); None without a camera head.
        depth, depth_conf: [S, H, W] (None without a depth head). world_points: [S, H, W, 3] and
            world_points_conf: [S, H, W] (None without a point head).
        images: [S, 3, H, W] uint8, the model input (8-bit photos / 255, so uint8 holds it exactly).
        tracks: [S, N, 2] pixels (x, y) of the N query points in every frame, track_vis and track_conf [S, N] in
            [0, 1]; None unless query points were given.
        metric_scale: [1] the metric scale a model predicted and applied (Pi3X: translations, depth and points
            are in approximate metres); None: the outputs are up to an unknown scale.
    """

    images: np.ndarray
    pose_enc: np.ndarray | None = None
    extrinsics: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    depth: np.ndarray | None = None
    depth_conf: np.ndarray | None = None
    world_points: np.ndarray | None = None
    world_points_conf: np.ndarray | None = None
    tracks: np.ndarray | None = None
    track_vis: np.ndarray | None = None
    track_conf: np.ndarray | None = None
    metric_scale: np.ndarray | None = None

    @property
    def metric(self) -> bool:
        """Whether depth, points and camera translations are in (approximate) metres."""
        return self.metric_scale is not None

    @property
    def num_frames(self) -> int:
        return len(self.images)

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays under the names of predictions.npz and of the reference's output dict (depth [S, H, W, 1],
        decoded cameras as `extrinsic` / `intrinsic`, tracks as `track`, `vis`, `conf`)."""
        named = {
            "pose_enc": self.pose_enc,
            "depth": None if self.depth is None else self.depth[..., None],
            "depth_conf": self.depth_conf,
            "world_points": self.world_points,
            "world_points_conf": self.world_points_conf,
            "extrinsic": self.extrinsics,
            "intrinsic": self.intrinsics,
            "images": self.images,
            "track": self.tracks,
            "vis": self.track_vis,
            "conf": self.track_conf,
            "metric_scale": self.metric_scale,
        }
        return {key: value for key, value in named.items() if value is not None}

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays()[key]

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Predictions:
        """The inverse of `arrays()`: predictions from arrays under those names (a predictions.npz)."""
        depth = arrays.get("depth")
        return cls(
            images=np.asarray(arrays["images"]),
            pose_enc=arrays.get("pose_enc"),
            extrinsics=arrays.get("extrinsic"),
            intrinsics=arrays.get("intrinsic"),
            depth=None if depth is None else np.asarray(depth)[..., 0],
            depth_conf=arrays.get("depth_conf"),
            world_points=arrays.get("world_points"),
            world_points_conf=arrays.get("world_points_conf"),
            tracks=arrays.get("track"),
            track_vis=arrays.get("vis"),
            track_conf=arrays.get("conf"),
            metric_scale=arrays.get("metric_scale"),
        )

    def require(self, *names: str) -> None:
        """Raise InputError unless the model produced each of `names` (e.g. "depth", "world_points")."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise InputError("the model has no {outputs} output: it lacks the head that predicts it", outputs=missing)


def check_finite(predictions: Predictions, model_name: str) -> int:
    """Raise PredictionError when a camera is non-finite, or more than MAX_NON_FINITE_FRACTION of the depth or
    point values are (the likely cause is the model, named by `model_name`); else return how many pixels are
    non-finite, which the point selection leaves out and the writers store as 0."""
    advice = "the likely cause is the model ({model}: diverged or corrupt weights?); try another checkpoint"
    for name in ("extrinsics", "intrinsics"):
        values = getattr(predictions, name)
        if values is not None and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=(1, 2)).sum())
            raise PredictionError(
                "the model predicted non-finite cameras for {bad} of {count} images; " + advice,
                bad=bad,
                count=len(values),
                model=model_name,
            )
    masked = np.zeros(predictions.images.shape[:1] + predictions.images.shape[2:], dtype=bool)
    for name in ("depth", "depth_conf", "world_points", "world_points_conf"):
        values = getattr(predictions, name)
        if values is not None:
            bad = ~np.isfinite(values)
            masked |= bad.reshape(*masked.shape, -1).any(-1)
    if masked.mean() > MAX_NON_FINITE_FRACTION:
        raise PredictionError(
            "the model predicted non-finite depth or points for {percent:.1f} % of the pixels; " + advice,
            percent=100 * masked.mean(),
            model=model_name,
        )
    if masked.any():
        logger.warning("%d pixels with non-finite predictions are left out of the outputs", int(masked.sum()))
    return int(masked.sum())


def finite_or_zero(values: np.ndarray) -> np.ndarray:
    """`values` with NaN and infinities replaced by 0 (what the writers store for "no value")."""
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return values
    return np.where(np.isfinite(values), values, 0).astype(values.dtype)


def clamp_field_of_view(pose_enc: torch.Tensor) -> torch.Tensor:
    """Pose encodings [S, 9] with both fields of view clamped into FOV_RANGE_DEG (warns when any was outside)."""
    low, high = (float(np.deg2rad(v)) for v in FOV_RANGE_DEG)
    fov = pose_enc[..., 7:9]
    outside = ~((fov >= low) & (fov <= high)).all(-1)
    if outside.any():
        logger.warning(
            "degenerate field of view predicted for %d of %d images (random weights?); clamped to %g-%g deg",
            int(outside.sum()),
            len(pose_enc),
            *FOV_RANGE_DEG,
        )
    clamped = pose_enc.clone()
    clamped[..., 7:9] = torch.nan_to_num(fov, nan=low).clamp(low, high)
    return clamped


@contextlib.contextmanager
def inference_progress(enabled: bool) -> Iterator[None]:
    """A progress bar (with the time left) over the streaming pass's steps (`vggt.runtime.progress`: every frame
    chunk of the patch encoder, every transformer block, every chunk of the heads): a long run moves block by
    block."""
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc="inference", unit="step", disable=not enabled)
    try:
        with progress.reporting_to(bar):
            yield
    finally:
        bar.close()


def _check_memory(model: torch.nn.Module, images: torch.Tensor, options: InferenceOptions) -> None:
    num_frames, _, height, width = images.shape
    shares = max(options.processes, options.ranks_sharing)
    estimate = estimate_inference_memory(
        model.config,
        -(-num_frames // shares),  # each process holds its share of the frames
        height,
        width,
        dtype=options.dtype,
        num_parameters=sum(p.numel() for n, p in model.named_parameters() if not n.startswith("track_head.")),
        weight_bytes=next(model.parameters()).element_size(),
        device_type=options.device.type,
        streaming=options.engine_for(model.config).options,
        trunk_parameters=sum(p.numel() for p in model.aggregator.parameters()),
    )
    check_memory(estimate, options.device, num_frames, height, width)


def _forward(
    model: torch.nn.Module, inputs: torch.Tensor, queries: torch.Tensor | None, options: InferenceOptions
) -> dict[str, Any] | None:
    """The model's outputs on inputs [1, S, 3, H, W]: in this process, or shared by several (None on the ranks of
    a torchrun job other than 0)."""
    engine = options.engine_for(model.config)
    if options.processes > 1 or options.ranks_sharing > 1:
        from vggt.pipeline.parallel import parallel_forward

        return parallel_forward(model, inputs, queries, engine.options, options.processes, options.device)
    return model(inputs, query_points=queries, engine=engine)


def _to_numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor[0].float().cpu().numpy()


def run_inference(
    model: torch.nn.Module,
    images: torch.Tensor,
    options: InferenceOptions,
    query_points: np.ndarray | torch.Tensor | None = None,
    conditioning: FamilyConditioning | None = None,
) -> Predictions | None:
    """Run `model` on one scene's `images` [S, 3, H, W] in [0, 1] (see the module docstring); with
    `query_points` [N, 2] (pixels x, y of the first frame, on the model's input grid) also track them.

    A model other than VGGT runs its reference forward pass (`vggt.pipeline.family`; `conditioning` feeds Pi3X's
    network). Under torchrun the job's ranks share the pass, and every rank but 0 gets None."""
    model = model.to(options.device).eval()
    if not is_vggt(model):
        if query_points is not None:
            raise InputError("{model} has no track head: it cannot track query points", model=type(model).__name__)
        return _run_family(model, images, options, conditioning)
    if options.memory_check:
        _check_memory(model, images, options)
    num_frames, _, height, width = images.shape
    logger.info("running on %s in %s: %d frames at %dx%d", options.device, options.dtype, num_frames, width, height)
    inputs = images[None]  # the streaming pass moves one chunk of frames at a time to the device
    queries = None if query_points is None else torch.as_tensor(query_points, dtype=torch.float32)[None]
    with torch.inference_mode(), autocast(options.device, options.dtype), inference_progress(options.progress):
        outputs = _forward(model, inputs, queries, options)
    if outputs is None:
        return None
    predictions = Predictions(
        images=(images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(),
        pose_enc=_to_numpy(outputs.get("pose_enc")),
        depth=None if outputs.get("depth") is None else _to_numpy(outputs["depth"])[..., 0],
        depth_conf=_to_numpy(outputs.get("depth_conf")),
        world_points=_to_numpy(outputs.get("world_points")),
        world_points_conf=_to_numpy(outputs.get("world_points_conf")),
        tracks=_to_numpy(outputs.get("track")),
        track_vis=_to_numpy(outputs.get("vis")),
        track_conf=_to_numpy(outputs.get("conf")),
    )
    if predictions.pose_enc is not None:
        pose_enc = clamp_field_of_view(torch.from_numpy(predictions.pose_enc))
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (height, width))
        predictions.extrinsics = extrinsics.numpy().astype(np.float32)
        predictions.intrinsics = intrinsics.numpy().astype(np.float32)
    return predictions


def describe_pass(engine: StreamingEngine, processes: int) -> str:
    """How a streaming pass runs, for the log: e.g. "streaming, 8 frames per chunk, offload, 2 processes"."""
    parts = [f"streaming, {engine.options.frames_chunk_size or 'all'} frames per chunk"]
    parts += ["offload"] * engine.options.offload + [f"merge ratio {engine.merge_ratio}"] * (engine.merge_ratio > 0)
    return ", ".join(parts + [f"{processes} processes"] * (processes > 1))


def _run_family(
    model: torch.nn.Module, images: torch.Tensor, options: InferenceOptions, conditioning: FamilyConditioning | None
) -> Predictions | None:
    """`run_inference` for a model other than VGGT: its streaming pass in this process with `options`' engine
    (chunk sizes, offload, fast mode: `vggt.pipeline.family.family_forward`; Pi3X conditioned on known poses runs
    its reference forward pass; rank 0 of a torchrun job runs it alone, the other ranks get None), or its streaming
    pass shared by several processes (`options.processes` or the ranks of a torchrun job: sequence parallelism,
    exact attention; rank 0 gets the outputs), converted to cameras, depth and points with the first camera as the
    world (`vggt.models.family_outputs.to_geometry`)."""
    known = conditioning_tensors(model, conditioning)
    shares = max(options.processes, options.ranks_sharing) if "poses" not in known else 1
    if shares == 1 and options.ranks_sharing > 1 and dist.get_rank() != 0:
        return None  # rank 0 runs the pass alone
    num_frames, _, height, width = images.shape
    engine = options.engine_for(model.config)
    if options.memory_check:
        streaming = None if "poses" in known else engine.options  # (Pi3X's pose injection: the reference pass)
        frames = -(-num_frames // shares)  # each process holds its share of the frames
        estimate = estimate_family_memory(model, frames, height, width, options.device.type, streaming)
        check_memory(estimate, options.device, num_frames, height, width)
    logger.info(
        "running on %s in %s: %d frames at %dx%d, %s",
        options.device,
        options.dtype,
        num_frames,
        width,
        height,
        "the reference pass" if "poses" in known else describe_pass(engine, shares),
    )
    with torch.inference_mode():
        with autocast(options.device, options.dtype), inference_progress(options.progress):
            if shares > 1:
                from vggt.pipeline.parallel import parallel_forward

                outputs = parallel_forward(
                    model, images[None], None, engine.options, options.processes, options.device, known or None
                )
            else:
                outputs = family_forward(model, images[None], conditioning, engine)
        if outputs is None:
            return None
        geometry = family_geometry(outputs, (height, width))
    geometry = {key: value[0].cpu() for key, value in geometry.items()}
    # Through the pose encoding, so that degenerate fields of view are clamped as VGGT's are (the principal
    # point is the image centre in both: the round trip changes nothing else).
    pose_enc = extri_intri_to_pose_encoding(geometry["extrinsics"], geometry["intrinsics"], (height, width))
    pose_enc = clamp_field_of_view(pose_enc)
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (height, width))
    scale = geometry.get("metric_scale")
    return Predictions(
        images=(images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(),
        pose_enc=pose_enc.numpy(),
        extrinsics=extrinsics.numpy().astype(np.float32),
        intrinsics=intrinsics.numpy().astype(np.float32),
        depth=geometry["depth"].numpy(),
        depth_conf=geometry["depth_conf"].numpy(),
        world_points=geometry["world_points"].numpy(),
        world_points_conf=geometry["world_points_conf"].numpy(),
        metric_scale=None if scale is None else scale.reshape(1).numpy(),
    )
