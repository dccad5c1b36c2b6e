"""The trunk run by the streaming engine: frame chunks for the patch encoder and the frame-wise blocks,
`chunked_block_forward` for the global blocks, the outputs the heads read stored in a `KeptOutputs`.

`run_blocks` runs any trunk of alternating frame-wise and all-frames blocks described as a `TrunkBlocks` (VGGT's
aggregator here, Pi3's decoder in `pi3_engine`, VGGT-Omega's aggregator in `omega_engine`); `run_trunk` is VGGT's.
It calls only the aggregator's public pieces (`embed`, `frame_positions`, `frame_blocks`, `global_blocks`) and
gives the numbers of `Aggregator.forward` for the kept layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vggt.layers.block import Block
from vggt.models.aggregator import Aggregator
from vggt.runtime import progress
from vggt.runtime.chunked_block import KeyValueGather, chunked_block_forward
from vggt.runtime.host_memory import release_freed_host_memory, scene_buffer
from vggt.runtime.kept import KeptOutputs, autocast_dtype
from vggt.runtime.onednn import linear
from vggt.runtime.options import StreamingOptions
from vggt.runtime.token_merging import TokenMerging
from vggt.utils.chunks import chunk_slices


def trunk_frame_slices(agg: Aggregator, frames: int, height: int, width: int, options: StreamingOptions) -> list[slice]:
    """The frame chunks of the patch encoder and the frame-wise blocks over `frames` frames of height x width."""
    tokens_per_frame = agg.patch_start_idx + (height // agg.patch_size) * (width // agg.patch_size)
    return list(chunk_slices(frames, options.trunk_frames(tokens_per_frame)))


@dataclass(frozen=True)
class TrunkBlocks:
    """The alternating blocks of a trunk as the streaming pass runs them (VGGT's aggregator, Pi3's decoder,
    VGGT-Omega's aggregator): pair i is `frame_block(i, tokens)` within each frame, then `global_blocks[i]` across
    all frames; a kept pair's output is the two halves [frame-block output, global-block output].

    Attributes:
        depth: block pairs.
        frame_block: pair i's frame-wise block on whole frames [b, P, C] -> [b, P, C].
        global_blocks: the all-frames blocks (`vggt.layers.block.Block`s, run by `chunked_block_forward`).
        frame_pos: RoPE positions [P, 2] of one frame's tokens in the global blocks (the same for every frame);
            None where they take no positions.
        protected: tokens at the start of every frame (camera, registers) that token merging never merges.
        prefix_only: global blocks that attend over the first `protected` tokens of each frame only (the others
            pass through them unchanged).
    """

    depth: int
    frame_block: Callable[[int, Tensor], Tensor]
    global_blocks: Sequence[Block]
    frame_pos: Tensor | None
    protected: int
    prefix_only: frozenset[int] = frozenset()


def embed_frames(embed: Callable[[slice], Tensor], num_frames: int, frame_slices: list[slice]) -> Tensor:
    """The token state [B, S, P, C] of `embed(frames)` ([B, s, P, C] for a slice of frames), chunk by chunk."""
    state: Tensor | None = None
    for frames in frame_slices:
        tokens = embed(frames)
        if state is None:
            state = scene_buffer((tokens.shape[0], num_frames, *tokens.shape[2:]), tokens.dtype, tokens.device)
        state[:, frames] = tokens
        del tokens
        progress.advance()
    return state


def run_blocks(
    blocks: TrunkBlocks,
    state: Tensor,
    keep: Sequence[int],
    options: StreamingOptions,
    frame_slices: list[slice],
    *,
    merge_ratio: float = 0.0,
    gather: KeyValueGather | None = None,
) -> KeptOutputs:
    """Every block pair of `blocks` on the token state [B, S, P, C] (consumed); the pairs `keep` stored.

    `merge_ratio` > 0: the fast mode's token merging in every global block over all tokens. `gather` exchanges the
    global blocks' keys and values with the other ranks (sequence parallelism).
    """
    B, S, P, C = state.shape
    kept_dtype = autocast_dtype(state.device) or state.dtype
    adopt = kept_dtype == state.dtype and not options.offload
    kept = KeptOutputs(blocks.depth, keep, (B, S, P, C), kept_dtype, state.device, options.offload, adopt)
    merge = TokenMerging(S, P, blocks.protected, merge_ratio) if merge_ratio > 0 else None
    _StreamingTrunk(blocks, kept, frame_slices, options, gather, merge).run(state)
    return kept


def run_trunk(
    agg: Aggregator,
    images: Tensor,
    options: StreamingOptions,
    keep_layers: Sequence[int],
    *,
    merge_ratio: float = 0.0,
    includes_first: bool = True,
    gather: KeyValueGather | None = None,
) -> KeptOutputs:
    """The aggregator outputs `keep_layers` of images [B, S, 3, H, W] in [0, 1], computed in chunks.

    `images` may live on the CPU while the model is on a GPU. `merge_ratio` > 0: the fast mode's token merging
    in every global block (`vggt.runtime.token_merging`). For sequence parallelism, `includes_first` says whether
    these frames start with the scene's first frame, and `gather` exchanges the global blocks' keys and values
    with the other ranks.
    """
    _, S, _, H, W = images.shape
    device = agg.camera_token.device
    frame_slices = trunk_frame_slices(agg, S, H, W, options)

    def embed(frames: slice) -> Tensor:
        first = includes_first and frames.start == 0
        return agg.embed(images[:, frames].to(device, non_blocking=True), first, linear=linear)

    state = embed_frames(embed, S, frame_slices)
    frame_pos = agg.frame_positions(H, W, device)

    def frame_block(i: int, tokens: Tensor) -> Tensor:
        pos = None if frame_pos is None else frame_pos.expand(tokens.shape[0], -1, -1)
        return agg.frame_blocks[i](tokens, pos=pos, linear=linear)

    blocks = TrunkBlocks(agg.depth, frame_block, agg.global_blocks, frame_pos, agg.patch_start_idx)
    keep = sorted({i % agg.depth for i in keep_layers})
    return run_blocks(blocks, state, keep, options, frame_slices, merge_ratio=merge_ratio, gather=gather)


@dataclass
class _StreamingTrunk:
    """The alternating blocks, with as few scene-sized token buffers as possible.

    Token buffers come from a pool and go back to it once read. Where the kept outputs share the stream's dtype
    and device, a kept layer keeps the two buffers its blocks wrote (the frame block's and the global block's
    output): no copy, and nothing scene-sized is freed and reallocated (which the CPU allocator would not give
    back to the system). A buffer handed to the kept outputs never returns to the pool, so no later block can
    write over a kept layer.
    """

    blocks: TrunkBlocks
    kept: KeptOutputs
    frame_slices: list[slice]
    options: StreamingOptions
    gather: KeyValueGather | None
    merge: TokenMerging | None
    pool: list[Tensor] = field(default_factory=list)
    batch: int = 1

    def _take(self, like: Tensor) -> Tensor:
        """A token buffer shaped like `like` from the pool, else a new one."""
        return self.pool.pop() if self.pool else scene_buffer(like.shape, like.dtype, like.device)

    def _global_positions(self, tokens: slice) -> Tensor | None:
        frame_pos = self.blocks.frame_pos
        if frame_pos is None:
            return None
        index = torch.arange(tokens.start, tokens.stop, device=frame_pos.device) % frame_pos.shape[0]
        return frame_pos[index].expand(self.batch, -1, -1)

    def _frame_blocks(self, i: int, state: Tensor, dest: Tensor) -> None:
        B, _, P, C = state.shape
        for frames in self.frame_slices:
            chunk = state[:, frames].reshape(-1, P, C)
            dest[:, frames] = self.blocks.frame_block(i, chunk).view(B, -1, P, C)

    def _prefix_block(self, i: int, state: Tensor, out: Tensor, kv_dtype: torch.dtype | None) -> None:
        """Global block i over the first `protected` tokens of every frame of state [B, S, P, C] into out; the
        other tokens are copied."""
        B, S, _, C = state.shape
        k = self.blocks.protected
        prefix = state[:, :, :k].reshape(B, S * k, C)  # a copy: small (camera and register tokens)
        result = torch.empty_like(prefix)
        chunked_block_forward(
            self.blocks.global_blocks[i],
            prefix,
            result,
            lambda tokens: None,
            self.options.tokens_chunk_size,
            self.options.heads_chunk_size,
            kv_dtype=kv_dtype,
            gather=self.gather,
        )
        for frames in self.frame_slices:
            out[:, frames, k:] = state[:, frames, k:]
        out[:, :, :k] = result.view(B, S, k, C)

    def _keep(self, i: int, halves: tuple[Tensor, Tensor]) -> None:
        """Hand layer i's halves to the kept outputs: the buffers themselves, or copies frame chunk by frame chunk."""
        for second, tokens in enumerate(halves):
            if self.kept.adopts:
                self.kept.adopt(i, bool(second), tokens)
                continue
            P = tokens.shape[2]
            for frames in self.frame_slices:
                part = slice(frames.start * P, frames.stop * P)
                self.kept.write(i, bool(second), part, tokens[:, frames].flatten(1, 2))

    @staticmethod
    def _block_done(device: torch.device) -> None:
        progress.advance()
        if device.type == "cpu":
            # Give back the heap pages the block's temporaries left free: glibc would keep up to 64 MiB
            # of them resident, by an amount that depends on the scene (host_memory explains why).
            release_freed_host_memory()

    def run(self, state: Tensor) -> None:
        """Run every block pair on state [B, S, P, C] (consumed), filling the kept outputs."""
        self.batch = state.shape[0]
        kv_dtype = autocast_dtype(state.device)
        kv_buffers: list[Tensor] = []
        state_in_pool = True  # whether `state` may be written over (it was not handed to the kept outputs)
        for i in range(self.blocks.depth):
            dest = state if state_in_pool else self._take(state)
            self._frame_blocks(i, state, dest)
            self._block_done(state.device)
            out = self._take(dest)
            if i in self.blocks.prefix_only:
                self._prefix_block(i, dest, out, kv_dtype)
            else:
                chunked_block_forward(
                    self.blocks.global_blocks[i],
                    dest.flatten(1, 2),
                    out.flatten(1, 2),
                    self._global_positions,
                    self.options.tokens_chunk_size,
                    self.options.heads_chunk_size,
                    kv_dtype=kv_dtype,
                    gather=self.gather,
                    kv_buffers=kv_buffers,
                    merge=self.merge,
                )
            self._block_done(state.device)
            handed_over = i in self.kept.layers and self.kept.adopts
            if i in self.kept.layers:
                self._keep(i, (dest, out))
            if not handed_over:
                self.pool.append(dest)
            state, state_in_pool = out, not handed_over
        self.pool.clear()
