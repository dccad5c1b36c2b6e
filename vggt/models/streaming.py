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

__all__ = ["KeptOutputs", "StreamingOptions", "autocast_dtype", "chunk_slices"]

# Automatic chunk sizes per device type: (frames, tokens, heads, queries). GPUs want large matrix
# products; on a CPU small chunks cost no speed and keep the working set in cache-sized pieces.
AUTO_CHUNKS = {
    "cuda": (8, 32768, None, 1024),
    "mps": (4, 16384, None, 512),
    "cpu": (1, 4096, 8, 256),
}


def _check_chunk(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None (everything at once), got {value!r}")


@dataclass(frozen=True)
class StreamingOptions:
    """Chunk sizes of the streaming forward pass; None means all at once. The results do not depend on them.

    Attributes:
        frames_chunk_size: frames per step of the patch encoder, the frame-wise blocks, the dense heads
            and the track head's feature extractor and correlation sampling.
        tokens_chunk_size: tokens per step of the token-wise parts of the global blocks (norms,
            projections, MLP, residuals); attention itself always sees every key and value.
        heads_chunk_size: attention heads whose keys and values a global block holds at once.
        queries_chunk_size: query points per step of the tracker's correlation sampling and time attention.
        offload: keep the aggregator outputs the heads read in CPU memory (pinned on CUDA), streamed
            back to the device one frame chunk at a time; outputs of the dense heads are returned on the CPU.
    """

    frames_chunk_size: int | None = 8
    tokens_chunk_size: int | None = 32768
    heads_chunk_size: int | None = 4
    queries_chunk_size: int | None = 1024
    offload: bool = False

    def __post_init__(self) -> None:
        for field in ("frames_chunk_size", "tokens_chunk_size", "heads_chunk_size", "queries_chunk_size"):
            _check_chunk(field, getattr(self, field))
        if not isinstance(self.offload, bool):
            raise ValueError(f"offload must be True or False, got {self.offload!r}")

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

    def replace(self, **changes: int | bool | None) -> StreamingOptions:
        return dataclasses.replace(self, **changes)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes matrix products in on `device` right now, None where autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class KeptOutputs:
    """The aggregator outputs the heads read, [B, S, P, 2C] each, written as the trunk produces them.

    Stored in `dtype` (the trunk's compute dtype) on `device`, or in CPU memory (pinned when the
    compute device is CUDA) with `offload`. `frames(start, end, device, dtype)` returns one frame chunk
    of every kept layer converted for a head; `camera_tokens` the first token of the last one.
    """

    def __init__(
        self,
        depth: int,
        keep: Sequence[int],
        shape: tuple[int, int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        offload: bool,
    ) -> None:
        batch, frames, tokens, width = shape
        self.depth = depth
        self.keep = sorted(set(keep))
        self.device = device
        store_device = torch.device("cpu") if offload else device
        pin = offload and device.type == "cuda"
        self.layers: dict[int, Tensor] = {
            i: torch.empty(batch, frames, tokens, 2 * width, dtype=dtype, device=store_device, pin_memory=pin)
            for i in self.keep
        }

    @property
    def offloaded(self) -> bool:
        return any(t.device != self.device for t in self.layers.values())

    def half(self, layer: int, second: bool) -> Tensor:
        """View [B, S * P, C] of the frame-block (first) or global-block (second) half of a kept layer."""
        stored = self.layers[layer]
        width = stored.shape[-1] // 2
        flat = stored.view(stored.shape[0], -1, stored.shape[-1])
        return flat[..., width:] if second else flat[..., :width]

    def write(self, layer: int, second: bool, tokens: slice, values: Tensor) -> None:
        """Store values [B, n, C] at flattened token positions `tokens` of one half of a kept layer."""
        self.half(layer, second)[:, tokens].copy_(values, non_blocking=True)

    def frames(self, start: int, end: int, device: torch.device, dtype: torch.dtype) -> list[Tensor | None]:
        """Frames start:end of every layer, [B, end - start, P, 2C] in `dtype` on `device`; None where not kept."""
        out: list[Tensor | None] = [None] * self.depth
        for i, stored in self.layers.items():
            out[i] = stored[:, start:end].to(device=device, non_blocking=True).to(dtype)
        return out

    def camera_tokens(self, device: torch.device, dtype: torch.dtype) -> list[Tensor | None]:
        """A tokens list whose last entry holds each frame's camera token only, [B, S, 1, 2C].

        That is all the camera head reads.
        """
        out: list[Tensor | None] = [None] * self.depth
        out[-1] = self.layers[self.depth - 1][:, :, :1].to(device=device).to(dtype)
        return out

    def release(self) -> None:
        """Free the stored layers (once every head has read them)."""
        self.layers.clear()

    def as_list(self) -> list[Tensor | None]:
        """The stored layers as an aggregator tokens list (None where not kept), without copying."""
        return [self.layers.get(i) for i in range(self.depth)]
