"""The streaming engine: VGGT's forward pass in chunks, with working memory bounded by the chunk sizes.

`StreamingEngine` gives the numbers of the model's reference forward (`model(images)`) with only one chunk of
frames, tokens, attention heads or query points in working memory at a time (`StreamingOptions`); its one
option that changes them is `merge_ratio`, the fast mode. The trunk runs in `vggt.runtime.trunk`; the kept
aggregator outputs are converted (and, offloaded, copied back to the device) one frame chunk at a time; the dense
heads write into preallocated outputs; the track head stores its normalised feature maps, then the tracker samples
correlations chunk by chunk. Use it as `model(images, engine=StreamingEngine.auto(device))` or
`StreamingEngine.auto(device).run(model, images, query_points, heads)`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from vggt.heads.track_modules.tracker import TrackerPredictor
from vggt.runtime import progress
from vggt.runtime.host_memory import scene_buffer
from vggt.runtime.kept import KeptOutputs
from vggt.runtime.onednn import onednn_linear
from vggt.runtime.options import StreamingOptions
from vggt.runtime.token_merging import check_merge_ratio
from vggt.runtime.trunk import run_trunk, trunk_frame_slices
from vggt.utils.chunks import chunk_slices

if TYPE_CHECKING:
    from vggt.models.vggt import VGGT


class FrameShard(Protocol):
    """This process's part of a scene whose frames are split over processes (sequence parallelism)."""

    num_frames: int  # frames of the whole scene
    local: slice  # this process's frames within the scene

    def gather(self, x: Tensor, dim: int) -> Tensor:
        """Every process's `x` (its frames along `dim`) concatenated in frame order."""

    def from_first(self, x: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """`x` of the process holding frame 0 (others pass None), on every process."""


class FrameOutputs:
    """Per-frame outputs [B, S, ...] of a scene, preallocated at their first frame chunk and filled chunk by chunk:
    on `device`, or on the CPU (pinned on CUDA) with `offload`. `values` maps each key to its tensor."""

    def __init__(self, batch: int, frames: int, device: torch.device, offload: bool) -> None:
        self.batch, self.frames, self.device = batch, frames, device
        self.on_cpu = offload and device.type != "cpu"
        self.values: dict[str, Tensor] = {}

    def store(self, key: str, frames_part: slice, value: Tensor) -> None:
        """Write value [B, s, ...] at the frames `frames_part` of output `key`."""
        if key not in self.values:
            self.values[key] = scene_buffer(
                (self.batch, self.frames, *value.shape[2:]),
                value.dtype,
                "cpu" if self.on_cpu else self.device,
                pin_memory=self.on_cpu and self.device.type == "cuda",
            )
        self.values[key][:, frames_part].copy_(value, non_blocking=True)


# Dense heads and the prediction keys of their (values, confidence) outputs.
DENSE_HEADS = {
    "depth": ("depth_head", "depth", "depth_conf"),
    "point": ("point_head", "world_points", "world_points_conf"),
}


@dataclass(frozen=True)
class StreamingEngine:
    """How to run the model in chunks: the exact chunk sizes and offload, and the fast mode.

    Attributes:
        options: chunk sizes and offload (`StreamingOptions`); the results do not depend on them.
        merge_ratio: the fast mode, the one choice that changes the numbers: before each global attention this
            fraction of the patch tokens of every frame but the first is merged into similar tokens and restored
            after it (`vggt.runtime.token_merging`); 0 (the default) is the exact model.
    """

    options: StreamingOptions = StreamingOptions()
    merge_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.options, StreamingOptions):
            raise ValueError(f"options must be a StreamingOptions, got {type(self.options).__name__}")
        check_merge_ratio(self.merge_ratio)

    @classmethod
    def auto(
        cls,
        device: torch.device | str,
        *,
        max_frames_chunk_size: int | None = None,
        offload: bool = False,
        merge_ratio: float = 0.0,
    ) -> StreamingEngine:
        """The automatic chunk sizes for `device` (`StreamingOptions.auto`), with offload and the fast mode."""
        options = StreamingOptions.auto(device, max_frames_chunk_size=max_frames_chunk_size, offload=offload)
        return cls(options, merge_ratio)

    @torch.no_grad()
    def run(self, model: VGGT, images: Tensor, query_points: Tensor | None, heads: Collection[str]) -> dict[str, Any]:
        """`model(images, query_points, heads=heads)` computed in chunks; see `VGGT.forward` for the outputs.

        images [B, S, 3, H, W] and query_points [B, N, 2] as `VGGT.check_inputs` returns them. Runs without
        autograd; on the CPU, float32 linear layers of the global blocks go through oneDNN (`vggt.runtime.onednn`).
        """
        device = model.aggregator.camera_token.device
        options = self.options
        progress.begin(streaming_steps(model, images.shape, heads, query_points is not None, options))
        with onednn_linear(device.type == "cpu"):
            kept = run_trunk(
                model.aggregator, images, options, model.config.layers_needed(heads), merge_ratio=self.merge_ratio
            )
            patch_start_idx = model.aggregator.patch_start_idx
            predictions = run_heads(model, kept, images.shape, patch_start_idx, heads, query_points, options)
        if options.offload and device.type == "cuda":
            torch.cuda.synchronize(device)  # outputs were copied to pinned CPU memory asynchronously
        if not model.training:
            predictions["images"] = images
        return predictions


def default_engine(model: VGGT, images: Tensor) -> StreamingEngine | None:
    """The engine of `model(images)` when the caller names none (`VGGT.forward(engine="auto")`, found through
    the `vggt.engines` entry point): for inference (no autograd, eval mode, parameters not sharded by FSDP) the
    streaming engine with the automatic chunk sizes of the model's device, so that a notebook's `model(images)`
    under `torch.no_grad()` has working memory bounded by chunks; otherwise None, the reference forward pass."""
    from torch.distributed.fsdp import FSDPModule

    if torch.is_grad_enabled() or model.training or isinstance(model, FSDPModule):
        return None
    return StreamingEngine.auto(model.aggregator.camera_token.device)


def streaming_steps(
    model: VGGT, images_shape: torch.Size, heads: Collection[str], tracking: bool, options: StreamingOptions
) -> int:
    """Steps `vggt.runtime.progress` counts for one streaming pass (see there)."""
    frames, height, width = images_shape[1], images_shape[-2], images_shape[-1]
    trunk = len(trunk_frame_slices(model.aggregator, frames, height, width, options)) + 2 * model.config.depth
    head_chunks = len(list(chunk_slices(frames, options.frames_chunk_size)))
    return trunk + ("camera" in heads) + head_chunks + (tracking and "track" in heads)


def run_heads(
    model: VGGT,
    kept: KeptOutputs,
    images_shape: torch.Size,
    patch_start_idx: int,
    heads: Collection[str],
    query_points: Tensor | None,
    options: StreamingOptions,
    shard: FrameShard | None = None,
) -> dict[str, Any]:
    """Every requested head on the kept outputs, which are released once the per-frame heads have read them.

    With `shard` (sequence parallelism) the kept outputs hold this process's frames only: the camera
    head gathers every frame's camera token, the tracker exchanges correlations, and the returned
    predictions cover the local frames.
    """
    device, local = kept.device, slice(None) if shard is None else shard.local
    predictions: dict[str, Any] = {}
    if "camera" in heads:
        camera_tokens = kept.camera_tokens(device, model.head_dtype())
        if shard is not None:
            camera_tokens[-1] = shard.gather(camera_tokens[-1], dim=1)
        camera = run_camera_head(model, camera_tokens)
        progress.advance()
        predictions["pose_enc"] = camera["pose_enc"][:, local]
        predictions["pose_enc_list"] = [p[:, local] for p in camera["pose_enc_list"]]
    track = "track" in heads and query_points is not None
    dense = [h for h in heads if h in DENSE_HEADS]
    outputs = run_frame_heads(model, kept, images_shape, patch_start_idx, dense, track, options)
    kept.release()
    fmaps = outputs.pop("track_fmaps", None)
    predictions.update(outputs)
    if track:
        tracks = run_tracker(model, fmaps, query_points, options, shard=shard)
        progress.advance()
        predictions.update({k: v[:, local] if k != "track_list" else v for k, v in tracks.items()})
    return predictions


def run_camera_head(model: VGGT, camera_tokens: list[Tensor | None]) -> dict[str, Any]:
    """Pose encodings from a tokens list whose last entry holds the camera tokens [B, S, 1, 2C]."""
    with torch.autocast(device_type=model.aggregator.camera_token.device.type, enabled=False):
        pose_enc_list = model.camera_head(camera_tokens, num_iterations=model.config.camera_iterations)
    return {"pose_enc": pose_enc_list[-1], "pose_enc_list": pose_enc_list}


def run_frame_heads(
    model: VGGT,
    kept: KeptOutputs,
    images_shape: torch.Size,
    patch_start_idx: int,
    dense: Collection[str],
    track_features: bool,
    options: StreamingOptions,
) -> dict[str, Tensor]:
    """The per-frame heads, one frame chunk at a time: dense outputs, and the tracker's normalised feature maps.

    Each chunk of the kept outputs is converted to the heads' dtype once and shared by every head; the
    kept outputs are consumed (frames every head has read are discarded, see `KeptOutputs.discard_frames`).
    Outputs are preallocated ([B, S, ...]) on the device, or on the CPU (pinned on CUDA) with offload.
    """
    batch, frames, _, height, width = images_shape
    device, dtype = kept.device, model.head_dtype()
    outputs = FrameOutputs(batch, frames, device, options.offload)
    store = outputs.store

    with torch.autocast(device_type=device.type, enabled=False):
        for frames_part in chunk_slices(frames, options.frames_chunk_size):
            tokens = kept.frames(frames_part.start, frames_part.stop, device, dtype)
            chunk = frames_part.stop - frames_part.start
            for name in dense:
                module, values_key, conf_key = DENSE_HEADS[name]
                values, conf = getattr(model, module).forward_frames(tokens, height, width, patch_start_idx, 0, chunk)
                store(values_key, frames_part, values)
                store(conf_key, frames_part, conf)
                del values, conf
            if track_features:
                head = model.track_head
                features = head.feature_extractor.forward_frames(tokens, height, width, patch_start_idx, 0, chunk)
                store("track_fmaps", frames_part, head.tracker.normalize_fmaps(features))
                del features
            del tokens
            kept.discard_frames(frames_part.stop)
            progress.advance()
    return outputs.values


def run_tracker(
    model: VGGT, fmaps: Tensor, query_points: Tensor, options: StreamingOptions, shard: FrameShard | None = None
) -> dict[str, Any]:
    """Tracks, visibility and confidence from normalised feature maps [B, S, C, h, w] (possibly on the CPU).

    With `shard` (sequence parallelism) fmaps hold this process's frames only; the tracks cover the scene.
    """
    head = model.track_head
    queries = query_points.to(device=head.tracker.query_ref_token.device, dtype=model.head_dtype())
    chunks = (options.frames_chunk_size, options.queries_chunk_size)
    with torch.autocast(device_type=model.aggregator.camera_token.device.type, enabled=False):
        if shard is None:
            track_list, vis, conf = head.tracker(
                queries,
                fmaps,
                iters=head.iters,
                normalized=True,
                frames_chunk_size=chunks[0],
                queries_chunk_size=chunks[1],
            )
        else:
            track_list, vis, conf = _track_over_processes(head.tracker, fmaps, queries, head.iters, chunks, shard)
    predictions: dict[str, Any] = {"track": track_list[-1], "vis": vis, "conf": conf}
    if model.training:
        predictions["track_list"] = track_list
    return predictions


def _track_over_processes(
    tracker: TrackerPredictor,
    fmaps: Tensor,
    query_points: Tensor,
    iters: int,
    chunks: tuple[int | None, int | None],
    shard: FrameShard,
) -> tuple[list[Tensor], Tensor, Tensor | None]:
    """`tracker(query_points, fmaps, normalized=True)` with fmaps [B, s, C, h, w] holding this process's frames
    `shard.local` only: the query features come from the process holding frame 0, each process samples the
    correlations of its frames and they are exchanged; the update runs on every process alike."""
    queries = tracker.feature_queries(query_points)
    query_feats = tracker.query_features(fmaps[:, 0], queries) if shard.local.start == 0 else None
    batch, num_tracks = queries.shape[:2]
    query_feats = shard.from_first(query_feats, (batch, num_tracks, tracker.latent_dim), queries.dtype)
    state = tracker.start(queries, query_feats, shard.num_frames, fmaps.shape[-2:])
    coord_preds = []
    for _ in range(iters):
        corr = shard.gather(tracker.correlations(fmaps, state, shard.local, chunks), dim=1)
        state = tracker.update(state, corr, chunks)
        coord_preds.append(state.coords * tracker.stride)
    vis, conf = tracker.readout(state)
    return coord_preds, vis, conf
