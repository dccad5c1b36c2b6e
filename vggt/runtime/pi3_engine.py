"""Pi3 and Pi3X run by the streaming engine: the numbers of `model(images)` with working memory bounded by chunks.

The image encoder (and Pi3X's conditioning encoders: viewing rays from known intrinsics, known depth) runs frame
chunk by frame chunk into the scene's token state; the decoder's block pairs run as a `TrunkBlocks` (the even,
per-frame blocks by frame chunks, the odd, all-frames blocks through `chunked_block_forward`: token chunks and
head groups); only the last pair's outputs are kept (the decoders read the last two decoder outputs), in CPU memory
with `offload`. Pi3X's metric decoder, whose one query token reads every frame's tokens, projects them frame chunk
by frame chunk and attends over them in token chunks; then the per-frame decoders and heads (`predict_frames`) run
frame chunk by frame chunk into preallocated outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.layers.rope import patch_positions
from vggt.models.pi3 import PATCH_SIZE
from vggt.models.pi3x import Pi3X, _ray_slopes, depth_scale
from vggt.runtime import progress
from vggt.runtime.chunked_block import KeyValueGather
from vggt.runtime.engine import FrameOutputs
from vggt.runtime.host_memory import scene_buffer
from vggt.runtime.kept import KeptOutputs
from vggt.runtime.onednn import linear, onednn_linear
from vggt.runtime.options import StreamingOptions
from vggt.runtime.trunk import TrunkBlocks, embed_frames, run_blocks
from vggt.utils.chunks import chunk_slices

if TYPE_CHECKING:
    from vggt.models.pi3 import Pi3
    from vggt.runtime.engine import FrameShard, StreamingEngine

__all__ = ["run_pi3"]


def pi3_frame_positions(model: Pi3, grid_hw: tuple[int, int], device: torch.device) -> Tensor:
    """RoPE positions [P, 2] of one frame's decoder tokens: the registers at (0, 0), patches from (1, 1)."""
    grid = patch_positions(1, *grid_hw, device)[0] + 1
    return torch.cat([grid.new_zeros(model.config.num_register_tokens, 2), grid], dim=0)


@torch.no_grad()
def run_pi3(
    model: Pi3,
    images: Tensor,
    engine: StreamingEngine,
    *,
    intrinsics: Tensor | None = None,
    depth: Tensor | None = None,
    shard: FrameShard | None = None,
    gather: KeyValueGather | None = None,
) -> dict[str, Any]:
    """`model(images, intrinsics, depth)` (Pi3: images only) computed in chunks; see `Pi3.forward` / `Pi3X.forward`.

    images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1], possibly on the CPU with the model on a GPU; Pi3X's
    conditioning intrinsics [B, S, 3, 3], depth [B, S, H, W]. With `shard` and `gather` (sequence parallelism)
    these are this process's frames only; the metric scale reads every process's tokens, the rest is per frame.
    """
    images = images.unsqueeze(0) if images.dim() == 4 else images
    c = model.config
    if c.decoder_depth % 2:
        raise ValueError(f"the streaming pass pairs the decoder blocks: an even decoder_depth, not {c.decoder_depth}")
    B, S, _, H, W = images.shape
    device = model.register_token.device
    grid_hw = (H // PATCH_SIZE, W // PATCH_SIZE)
    options = engine.options
    frame_pos = pi3_frame_positions(model, grid_hw, device)
    P = frame_pos.shape[0]
    frame_slices = list(chunk_slices(S, options.trunk_frames(P)))
    pairs = c.decoder_depth // 2
    progress.begin(len(frame_slices) + c.decoder_depth + len(list(chunk_slices(S, options.frames_chunk_size))))
    with onednn_linear(device.type == "cpu"):
        embed = _Pi3Embedding(model, images, intrinsics, depth, shard)
        state = embed_frames(embed, S, frame_slices)

        def frame_block(i: int, tokens: Tensor) -> Tensor:
            return model.decoder[2 * i](tokens, pos=frame_pos.expand(tokens.shape[0], -1, -1), linear=linear)

        blocks = TrunkBlocks(pairs, frame_block, model.decoder[1::2], frame_pos, c.num_register_tokens)
        kept = run_blocks(
            blocks, state, [pairs - 1], options, frame_slices, merge_ratio=engine.merge_ratio, gather=gather
        )
        extra = {}
        if isinstance(model, Pi3X):
            extra["metric"] = _metric_scale(model, kept, (B, S), frame_pos, options, shard)
        outputs = FrameOutputs(B, S, device, options.offload)
        for frames in chunk_slices(S, options.frames_chunk_size):
            hidden = kept.frames(frames.start, frames.stop, device, kept.dtype)[-1].flatten(0, 1)
            predicted = model.predict_frames(hidden, frame_pos.expand(hidden.shape[0], -1, -1), B, grid_hw, **extra)
            for key, value in predicted.items():
                if key != "metric":
                    outputs.store(key, frames, value)
            del hidden, predicted
            kept.discard_frames(frames.stop)
            progress.advance()
        kept.release()
    if options.offload and device.type == "cuda":
        torch.cuda.synchronize(device)  # outputs were copied to pinned CPU memory asynchronously
    return {**outputs.values, **extra}


class _Pi3Embedding:
    """The decoder's input tokens [B, s, R + hw, dim] of a frame chunk: the registers, then the encoder's patch
    tokens (plus Pi3X's ray and depth conditioning)."""

    def __init__(
        self, model: Pi3, images: Tensor, intrinsics: Tensor | None, depth: Tensor | None, shard: FrameShard | None
    ) -> None:
        self.model, self.images, self.intrinsics, self.depth = model, images, intrinsics, depth
        self.device = model.register_token.device
        self.scale = None
        if depth is not None:  # the mean known depth of the whole scene (over every process's frames)
            self.scale = depth_scale(depth) if shard is None else _scene_depth_scale(depth.to(self.device), shard)
            self.scale = self.scale.to(self.device)

    def __call__(self, frames: slice) -> Tensor:
        model, (B, _, _, H, W) = self.model, self.images.shape
        images = self.images[:, frames].to(self.device, non_blocking=True)
        s = images.shape[1]
        tokens = model.encode(images)
        if self.intrinsics is not None:
            slopes = _ray_slopes(self.intrinsics[:, frames].to(self.device), H, W)
            tokens = tokens + model.ray_embed(slopes.reshape(B * s, H, W, 2).permute(0, 3, 1, 2))
        if self.depth is not None:
            tokens = tokens + model._depth_tokens(self.depth[:, frames].to(self.device), self.scale)
        registers = model.register_token.expand(B, s, -1, -1)
        return torch.cat([registers, tokens.view(B, s, *tokens.shape[1:])], dim=2)


def _scene_depth_scale(depth: Tensor, shard: FrameShard) -> Tensor:
    """`depth_scale` of the whole scene from this process's depth [B, s, H, W]: each frame's sum and count of known
    depth gathered from every process."""
    known = depth > 0
    per_frame = torch.stack([torch.where(known, depth, 0).sum(dim=(2, 3)), known.sum(dim=(2, 3)).to(depth.dtype)])
    total = shard.gather(per_frame, dim=2).sum(dim=2)  # [2, B]
    return torch.where(total[1] > 0, total[0] / total[1].clamp(min=1), torch.ones_like(total[0]))


def _metric_scale(
    model: Pi3X,
    kept: KeptOutputs,
    batch_frames: tuple[int, int],
    frame_pos: Tensor,
    options: StreamingOptions,
    shard: FrameShard | None,
) -> Tensor:
    """Pi3X's metric scale [B]: the metric decoder's query token attends over every frame's kept tokens, which are
    projected frame chunk by frame chunk; keys and values of each block are computed in token chunks."""
    decoder = model.metric_decoder
    (B, S), P = batch_frames, frame_pos.shape[0]
    device = kept.device
    context: Tensor | None = None
    for frames in chunk_slices(S, options.frames_chunk_size):
        tokens = kept.frames(frames.start, frames.stop, device, kept.dtype)[-1].flatten(1, 2)
        projected = linear(decoder.projects_y, tokens)
        if context is None:
            context = scene_buffer((B, S * P, projected.shape[-1]), projected.dtype, device)
        context[:, frames.start * P : frames.stop * P] = projected
        del tokens, projected
    if shard is not None:
        context = shard.gather(context.view(B, S, P, -1), dim=1).flatten(1, 2)
    num_tokens = context.shape[1]
    x = decoder.projects_x(model.metric_token.expand(B, -1, -1).to(context.dtype))
    query_pos = frame_pos[:1].expand(B, 1, 2)  # the first frame's first register token

    def context_pos(tokens: slice) -> Tensor:
        index = torch.arange(tokens.start, tokens.stop, device=device) % P
        return frame_pos[index].expand(B, -1, -1)

    token_slices = list(chunk_slices(num_tokens, options.tokens_chunk_size))
    for block in decoder.blocks:
        attn = block.cross_attn
        queries = attn._heads(attn.q_proj(block.norm2(x)))
        if attn.rope is not None:
            queries = attn.rope(queries, query_pos)
        keys = values = None
        for tokens in token_slices:
            normed = block.norm_y(context[:, tokens])
            k, v = attn._heads(linear(attn.k_proj, normed)), attn._heads(linear(attn.v_proj, normed))
            if attn.rope is not None:
                k = attn.rope(k, context_pos(tokens))
            if keys is None:
                shape = (B, attn.num_heads, num_tokens, k.shape[-1])
                keys, values = scene_buffer(shape, k.dtype, device), scene_buffer(shape, v.dtype, device)
            keys[:, :, tokens], values[:, :, tokens] = k, v
        attended = F.scaled_dot_product_attention(queries, keys, values)
        del keys, values
        x = x + attn.proj(attended.transpose(1, 2).reshape(x.shape))
        x = x + block.mlp(block.norm3(x))
    return model.metric_scale(decoder.linear_out(x))
