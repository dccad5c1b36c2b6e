"""The aggregator run by the streaming engine: frame chunks for the patch encoder and the frame-wise blocks,
`chunked_block_forward` for the global blocks, the outputs the heads read stored in a `KeptOutputs`.

It calls only the aggregator's public pieces (`embed`, `frame_positions`, `frame_blocks`, `global_blocks`) and
gives the numbers of `Aggregator.forward` for the kept layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

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
    B, S, _, H, W = images.shape
    device = agg.camera_token.device
    frame_slices = trunk_frame_slices(agg, S, H, W, options)
    state: Tensor | None = None
    for frames in frame_slices:
        tokens = agg.embed(
            images[:, frames].to(device, non_blocking=True), includes_first and frames.start == 0, linear=linear
        )
        if state is None:
            state = scene_buffer((B, S, *tokens.shape[2:]), tokens.dtype, device)
        state[:, frames] = tokens
        del tokens
        progress.advance()
    P, C = state.shape[2], state.shape[3]
    kept_dtype = autocast_dtype(device) or state.dtype
    adopt = kept_dtype == state.dtype and not options.offload
    keep = sorted({i % agg.depth for i in keep_layers})
    kept = KeptOutputs(agg.depth, keep, (B, S, P, C), kept_dtype, device, options.offload, adopt)
    merge = None
    if merge_ratio > 0:
        merge = TokenMerging(S, P, agg.patch_start_idx, merge_ratio)
    trunk = _StreamingTrunk(agg, kept, frame_slices, agg.frame_positions(H, W, device), options, gather, merge)
    trunk.run(state)
    return kept


@dataclass
class _StreamingTrunk:
    """The alternating blocks, with as few scene-sized token buffers as possible.

    Token buffers come from a pool and go back to it once read. Where the kept outputs share the stream's dtype
    and device, a kept layer keeps the two buffers its blocks wrote (the frame block's and the global block's
    output): no copy, and nothing scene-sized is freed and reallocated (which the CPU allocator would not give
    back to the system). A buffer handed to the kept outputs never returns to the pool, so no later block can
    write over a kept layer.
    """

    agg: Aggregator
    kept: KeptOutputs
    frame_slices: list[slice]
    frame_pos: Tensor | None
    options: StreamingOptions
    gather: KeyValueGather | None
    merge: TokenMerging | None
    pool: list[Tensor] = field(default_factory=list)
    batch: int = 1

    def _take(self, like: Tensor) -> Tensor:
        """A token buffer shaped like `like` from the pool, else a new one."""
        return self.pool.pop() if self.pool else scene_buffer(like.shape, like.dtype, like.device)

    def _global_positions(self, tokens: slice) -> Tensor | None:
        if self.frame_pos is None:
            return None
        index = torch.arange(tokens.start, tokens.stop, device=self.frame_pos.device) % self.frame_pos.shape[0]
        return self.frame_pos[index].expand(self.batch, -1, -1)

    def _frame_blocks(self, i: int, state: Tensor, dest: Tensor) -> None:
        B, _, P, C = state.shape
        for frames in self.frame_slices:
            chunk = state[:, frames].reshape(-1, P, C)
            pos = None if self.frame_pos is None else self.frame_pos.expand(chunk.shape[0], P, 2)
            dest[:, frames] = self.agg.frame_blocks[i](chunk, pos=pos, linear=linear).view(B, -1, P, C)

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
        for i in range(self.agg.depth):
            dest = state if state_in_pool else self._take(state)
            self._frame_blocks(i, state, dest)
            self._block_done(state.device)
            out = self._take(dest)
            chunked_block_forward(
                self.agg.global_blocks[i],
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
