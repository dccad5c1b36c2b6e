"""The streaming forward pass of VGGT: the aggregator in chunks, then every head one frame chunk at a time.

Same numbers as the full pass (`VGGT.forward(..., streaming=False)`), with working memory bounded by
the chunk sizes of a `StreamingOptions` rather than by the scene. The kept aggregator outputs are
converted (and, offloaded, copied back to the device) one frame chunk at a time; the dense heads
write into preallocated outputs; the track head stores its normalised feature maps, then the tracker
samples correlations chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vggt.heads.track_modules.tracker import FrameShard
from vggt.layers.chunked_block import chunk_slices
from vggt.layers.onednn import onednn_linear
from vggt.models import progress
from vggt.models.streaming import KeptOutputs, StreamingOptions
from vggt.utils.host_memory import scene_buffer

if TYPE_CHECKING:
    from vggt.models.vggt import VGGT


# Dense heads and the prediction keys of their (values, confidence) outputs.
DENSE_HEADS = {
    "depth": ("depth_head", "depth", "depth_conf"),
    "point": ("point_head", "world_points", "world_points_conf"),
}


@torch.no_grad()
def streaming_forward(
    model: VGGT,
    images: Tensor,
    query_points: Tensor | None,
    heads: Collection[str],
    options: StreamingOptions,
) -> dict[str, Any]:
    """`model(images, query_points, heads=heads)` computed in chunks; see `VGGT.forward` for the outputs."""
    device = model.aggregator.camera_token.device
    progress.begin(streaming_steps(model, images.shape, heads, query_points is not None, options))
    with onednn_linear(device.type == "cpu"):
        # An aggregator told to keep every layer (keep_layers None, as the reference does) keeps them all.
        keep = None if model.aggregator.keep_layers is None else model.config.layers_needed(heads)
        # (on the CPU the trunk gave back its heap's free pages after its last block; its keys, values and
        # spare buffers are mappings of their own, unmapped as they are freed)
        kept, patch_start_idx = model.aggregator(images, keep, streaming=options)
        predictions = run_heads(model, kept, images.shape, patch_start_idx, heads, query_points, options)
    if options.offload and device.type == "cuda":
        torch.cuda.synchronize(device)  # outputs were copied to pinned CPU memory asynchronously
    if not model.training:
        predictions["images"] = images
    return predictions


def streaming_steps(
    model: VGGT, images_shape: torch.Size, heads: Collection[str], tracking: bool, options: StreamingOptions
) -> int:
    """Steps `vggt.models.progress` counts for one streaming pass (see there)."""
    frames, height, width = images_shape[1], images_shape[-2], images_shape[-1]
    trunk = len(model.aggregator.streaming_frame_slices(frames, height, width, options)) + 2 * model.config.depth
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
    outputs: dict[str, Tensor] = {}

    def store(key: str, frames_part: slice, value: Tensor) -> None:
        if key not in outputs:
            on_cpu = options.offload and device.type != "cpu"
            outputs[key] = scene_buffer(
                (batch, frames, *value.shape[2:]),
                value.dtype,
                "cpu" if on_cpu else device,
                pin_memory=on_cpu and device.type == "cuda",
            )
        outputs[key][:, frames_part].copy_(value, non_blocking=True)

    with torch.autocast(device_type=device.type, enabled=False):
        for frames_part in chunk_slices(frames, options.frames_chunk_size):
            tokens = kept.frames(frames_part.start, frames_part.stop, device, dtype)
            chunk = frames_part.stop - frames_part.start
            for name in dense:
                module, values_key, conf_key = DENSE_HEADS[name]
                values, conf = getattr(model, module)._forward_frames(tokens, height, width, patch_start_idx, 0, chunk)
                store(values_key, frames_part, values)
                store(conf_key, frames_part, conf)
                del values, conf
            if track_features:
                head = model.track_head
                features = head.feature_extractor._forward_frames(tokens, height, width, patch_start_idx, 0, chunk)
                store("track_fmaps", frames_part, head.tracker.normalize_fmaps(features))
                del features
            del tokens
            kept.discard_frames(frames_part.stop)
            progress.advance()
    return outputs


def run_tracker(
    model: VGGT, fmaps: Tensor, query_points: Tensor, options: StreamingOptions, shard: FrameShard | None = None
) -> dict[str, Any]:
    """Tracks, visibility and confidence from normalised feature maps [B, S, C, h, w] (possibly on the CPU).

    With `shard` (sequence parallelism) fmaps hold this process's frames only; the tracks cover the scene.
    """
    head = model.track_head
    with torch.autocast(device_type=model.aggregator.camera_token.device.type, enabled=False):
        track_list, vis, conf = head.tracker(
            query_points.to(device=head.tracker.query_ref_token.device, dtype=model.head_dtype()),
            fmaps,
            iters=head.iters,
            normalized=True,
            frames_chunk_size=options.frames_chunk_size,
            queries_chunk_size=options.queries_chunk_size,
            shard=shard,
        )
    predictions: dict[str, Any] = {"track": track_list[-1], "vis": vis, "conf": conf}
    if model.training:
        predictions["track_list"] = track_list
    return predictions
