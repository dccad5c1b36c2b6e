"""VGGT-Omega run by the streaming engine: the numbers of `model(images)` with working memory bounded by chunks.

The DINOv3 patch encoder runs frame chunk by frame chunk into the scene's token state; the aggregator's block pairs
run as a `TrunkBlocks`: the frame blocks (`PrefixRopeBlock`, RoPE on the patch tokens) by frame chunks, the
inter-frame blocks through `chunked_block_forward` (token chunks and head groups), those that attend over camera and
register tokens only on those tokens alone. The layers the heads read are kept (in CPU memory with `offload`); the
camera and text-alignment heads read the last layer's camera and register tokens of every frame, the dense head
runs frame chunk by frame chunk into preallocated outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vggt.runtime import progress
from vggt.runtime.chunked_block import KeyValueGather
from vggt.runtime.engine import FrameOutputs
from vggt.runtime.onednn import linear, onednn_linear
from vggt.runtime.trunk import TrunkBlocks, embed_frames, run_blocks
from vggt.utils.chunks import chunk_slices

if TYPE_CHECKING:
    from vggt.models.vggt_omega import VGGTOmega
    from vggt.runtime.engine import FrameShard, StreamingEngine

__all__ = ["run_omega"]


@torch.no_grad()
def run_omega(
    model: VGGTOmega,
    images: Tensor,
    engine: StreamingEngine,
    *,
    shard: FrameShard | None = None,
    gather: KeyValueGather | None = None,
) -> dict[str, Any]:
    """`model(images)` computed in chunks; see `VGGTOmega.forward` for the outputs.

    images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1], possibly on the CPU with the model on a GPU. With `shard`
    and `gather` (sequence parallelism) these are this process's frames only: the camera and text-alignment heads
    read every process's camera and register tokens, the outputs cover the local frames.
    """
    images = images.unsqueeze(0) if images.dim() == 4 else images
    agg, c = model.aggregator, model.config
    B, S, _, H, W = images.shape
    device = agg.camera_token.device
    options = engine.options
    start = c.patch_start_idx
    tokens_per_frame = start + (H // c.patch_size) * (W // c.patch_size)
    frame_slices = list(chunk_slices(S, options.trunk_frames(tokens_per_frame)))
    head_chunks = list(chunk_slices(S, options.frames_chunk_size))
    progress.begin(len(frame_slices) + 2 * c.depth + 1 + (len(head_chunks) if model.dense_head is not None else 0))
    includes_first = shard is None or shard.local.start == 0
    keep = sorted({c.depth - 1, *(c.dense_layers if model.dense_head is not None else ())})
    with onednn_linear(device.type == "cpu"):

        def embed(frames: slice) -> Tensor:
            chunk = images[:, frames].to(device, non_blocking=True)
            tokens = agg.embed(chunk, includes_first and frames.start == 0)
            return tokens.view(B, chunk.shape[1], *tokens.shape[1:])

        state = embed_frames(embed, S, frame_slices)
        rope = agg.rope_embed(H // c.patch_size, W // c.patch_size)

        def frame_block(i: int, tokens: Tensor) -> Tensor:
            return agg.frame_blocks[i](tokens, pos=rope, linear=linear)

        blocks = TrunkBlocks(c.depth, frame_block, agg.inter_frame_blocks, None, start, agg.register_only)
        kept = run_blocks(blocks, state, keep, options, frame_slices, merge_ratio=engine.merge_ratio, gather=gather)

        special = kept.first_tokens(start, device, kept.dtype)  # [B, S, 1 + registers, 2 * dim]
        predictions: dict[str, Any] = {"camera_and_register_tokens": special}
        scene = special if shard is None else shard.gather(special, dim=1)
        local = slice(None) if shard is None else shard.local
        last_only = [None] * (c.depth - 1) + [scene]
        if model.camera_head is not None:
            predictions["pose_enc"] = model.camera_head(last_only, start)[:, local]
        if model.text_alignment_head is not None:
            predictions.update(model.text_alignment_head(last_only, start))
        progress.advance()
        del scene, last_only
        if model.dense_head is not None:
            outputs = FrameOutputs(B, S, device, options.offload)
            for frames in head_chunks:
                tokens_list = kept.frames(frames.start, frames.stop, device, kept.dtype)
                chunk = frames.stop - frames.start
                depth, conf = model.dense_head.forward_frames(tokens_list, images[:, frames], start, 0, chunk)
                outputs.store("depth", frames, depth)
                outputs.store("depth_conf", frames, conf)
                del tokens_list, depth, conf
                kept.discard_frames(frames.stop)
                progress.advance()
            predictions.update(outputs.values)
        kept.release()
    if options.offload and device.type == "cuda":
        torch.cuda.synchronize(device)  # outputs were copied to pinned CPU memory asynchronously
    predictions["images"] = images
    return predictions
