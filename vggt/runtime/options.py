"""How big the pieces of the streaming engine are: `StreamingOptions`, the exact chunk sizes and offload.

The streaming engine gives the same numbers as the model's reference forward while holding only one chunk of
frames, tokens, attention heads or query points in working memory at a time. These options fix those chunk sizes
in one place; none of them changes a result (the fast mode, which does, is `StreamingEngine.merge_ratio`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["AUTO_CHUNKS", "StreamingOptions"]

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
    """Chunk sizes of the streaming engine; None means all at once. The results do not depend on them.

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

    def replace(self, **changes: int | bool | None) -> StreamingOptions:
        return dataclasses.replace(self, **changes)
