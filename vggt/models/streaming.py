"""Streaming inference: how big the pieces are, and where the kept aggregator outputs live.

The streaming forward pass gives the same numbers as the full one while holding only one chunk of
frames, tokens, attention heads or query points in working memory at a time. `StreamingOptions`
fixes those chunk sizes in one place; `KeptOutputs` stores the aggregator outputs the heads read,
in the trunk's compute dtype, optionally in (pinned) CPU memory, and hands them back one frame chunk
at a time in the dtype and on the device a head asks for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vggt.layers.chunked_block import chunk_slices
from vggt.layers.token_merging import MAX_MERGE_RATIO
from vggt.utils.host_memory import discard, scene_buffer

__all__ = ["KeptOutputs", "StreamingOptions", "autocast_dtype", "chunk_slices"]

# Automatic chunk sizes per device type: (frames, tokens, heads, queries). GPUs want large matrix
# products; on a CPU small chunks cost no speed and keep the working set in cache-sized pieces.
AUTO_CHUNKS = {
    "cuda": (8, 32768, None, 1024),
    "mps": (4, 16384, None, 512),
    "cpu": (1, 1024, 4, 256),
}


def _check_chunk(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None (everything at once), got {value!r}")


@dataclass(frozen=True)
class StreamingOptions:
    """Chunk sizes of the streaming forward pass; None means all at once. The results do not depend on them.

    Attributes:
        frames_chunk_size: frames per step of the dense heads and of the track head's feature extractor
            and correlation sampling; the patch encoder and the frame-wise blocks take at least this many
            frames per step, and more while they fit in `tokens_chunk_size` tokens (see `trunk_frames`).
        tokens_chunk_size: tokens per step of the token-wise parts of the global blocks (norms,
            projections, MLP, residuals); attention itself always sees every key and value.
        heads_chunk_size: attention heads whose keys and values a global block holds at once.
        queries_chunk_size: query points per step of the tracker's correlation sampling and time attention.
        offload: keep the aggregator outputs the heads read in CPU memory (pinned on CUDA), streamed
            back to the device one frame chunk at a time; outputs of the dense heads are returned on the CPU.
        merge_ratio: the fast mode, the one option that changes the numbers: before each global attention this
            fraction of the patch tokens of every frame but the first is merged into similar tokens and restored
            after it (`vggt.layers.token_merging`); 0 (the default) is the exact model.
    """

    frames_chunk_size: int | None = 8
    tokens_chunk_size: int | None = 32768
    heads_chunk_size: int | None = 4
    queries_chunk_size: int | None = 1024
    offload: bool = False
    merge_ratio: float = 0.0

    def __post_init__(self) -> None:
        for field in ("frames_chunk_size", "tokens_chunk_size", "heads_chunk_size", "queries_chunk_size"):
            _check_chunk(field, getattr(self, field))
        if not isinstance(self.offload, bool):
            raise ValueError(f"offload must be True or False, got {self.offload!r}")
        if not 0 <= self.merge_ratio <= MAX_MERGE_RATIO:
            raise ValueError(f"merge_ratio must be in [0, {MAX_MERGE_RATIO}], got {self.merge_ratio!r}")

    @classmethod
    def auto(
        cls, device: torch.device | str, *, max_frames_chunk_size: int | None = None, offload: bool = False
    ) -> StreamingOptions:
        """Sensible chunk sizes for `device`.

        `max_frames_chunk_size` (e.g. `config.frames_chunk_size`) caps the frames per chunk.
        """
        device_type = torch.device(device).type
        frames, tokens, heads, queries = AUTO_CHUNKS.get(device_type, AUTO_CHUNKS["cpu"])
        if max_frames_chunk_size is not None:
            frames = min(frames, max_frames_chunk_size)
        return cls(frames, tokens, heads, queries, offload)

    @classmethod
    def whole(cls) -> StreamingOptions:
        """Everything in one chunk: the streaming code path with the full pass's working memory."""
        return cls(None, None, None, None)

    def trunk_frames(self, tokens_per_frame: int) -> int | None:
        """Frames per step of the patch encoder and frame-wise blocks: whole frames filling a token chunk.

        Small frames are batched so that the matrix products stay large; never fewer than
        `frames_chunk_size` frames (None: all frames at once).
        """
        if self.frames_chunk_size is None:
            return None
        if self.tokens_chunk_size is None:
            return self.frames_chunk_size
        return max(self.frames_chunk_size, self.tokens_chunk_size // tokens_per_frame)

    def replace(self, **changes: float | bool | None) -> StreamingOptions:
        return dataclasses.replace(self, **changes)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes matrix products in on `device` right now, None where autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class KeptOutputs:
    """The aggregator outputs the heads read, written as the trunk produces them.

    Each kept layer is stored as its two halves, the frame-block and the global-block output, [B, S, P, C]
    each (the heads read them concatenated, [B, S, P, 2C]). Stored in `dtype` (the trunk's compute
    dtype) on `device`, or in CPU memory (pinned when the compute device is CUDA) with `offload`.
    With `adopt_buffers` (same dtype and device as the token stream), the halves are not allocated here:
    the trunk hands over its own token buffers with `adopt`, so a kept layer costs no copy.
    `frames(start, end, device, dtype)` returns one frame chunk of every kept layer converted for a
    head; `camera_tokens` the first token of the last one.
    """

    def __init__(
        self,
        depth: int,
        keep: Sequence[int],
        shape: tuple[int, int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        offload: bool,
        adopt_buffers: bool = False,
    ) -> None:
        self.depth = depth
        self.keep = sorted(set(keep))
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.adopts = adopt_buffers and not offload
        store_device = torch.device("cpu") if offload else device
        pin = offload and device.type == "cuda"
        self.layers: dict[int, list[Tensor | None]] = {}
        for i in self.keep:
            if self.adopts:
                self.layers[i] = [None, None]
            else:
                self.layers[i] = [scene_buffer(shape, dtype, store_device, pin_memory=pin) for _ in range(2)]

    def adopt(self, layer: int, second: bool, tokens: Tensor) -> None:
        """Keep the trunk's buffer `tokens` [B, S, P, C] as a half of a kept layer (the trunk no longer writes it)."""
        self.layers[layer][int(second)] = tokens

    def write(self, layer: int, second: bool, tokens: slice, values: Tensor) -> None:
        """Store values [B, n, C] at flattened token positions `tokens` of one half of a kept layer."""
        stored = self.layers[layer][int(second)]
        stored.view(stored.shape[0], -1, stored.shape[-1])[:, tokens].copy_(values, non_blocking=True)

    def frames(self, start: int, end: int, device: torch.device, dtype: torch.dtype) -> list[Tensor | None]:
        """Frames start:end of every layer, [B, end - start, P, 2C] in `dtype` on `device`; None where not kept."""
        out: list[Tensor | None] = [None] * self.depth
        for i, halves in self.layers.items():
            moved = [h[:, start:end].to(device=device, non_blocking=True) for h in halves]
            out[i] = torch.cat(moved, dim=-1).to(dtype)
        return out

    def camera_tokens(self, device: torch.device, dtype: torch.dtype) -> list[Tensor | None]:
        """A tokens list whose last entry holds each frame's camera token only, [B, S, 1, 2C].

        That is all the camera head reads.
        """
        out: list[Tensor | None] = [None] * self.depth
        halves = self.layers[self.depth - 1]
        out[-1] = torch.cat([h[:, :, :1].to(device=device) for h in halves], dim=-1).to(dtype)
        return out

    def discard_frames(self, end: int) -> None:
        """Give back the memory of frames 0:end of every stored layer (every head has read them; see host_memory).

        Only buffers of `vggt.utils.host_memory.scene_buffer` (the CPU's) shrink; the frames must not be read again.
        """
        for halves in self.layers.values():
            for half in halves:
                for sample in half:
                    discard(sample[:end])

    def release(self) -> None:
        """Free the stored layers (once every head has read them)."""
        self.layers.clear()

    def as_list(self) -> list[Tensor | None]:
        """The stored layers as an aggregator tokens list, [B, S, P, 2C] (None where not kept)."""
        return [torch.cat(self.layers[i], dim=-1) if i in self.layers else None for i in range(self.depth)]
