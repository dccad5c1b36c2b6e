"""Where the streaming engine keeps the aggregator outputs the heads read: `KeptOutputs`.

They are stored in the trunk's compute dtype, optionally in (pinned) CPU memory, and handed back one frame chunk
at a time in the dtype and on the device a head asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vggt.runtime.host_memory import discard, scene_buffer

__all__ = ["KeptOutputs", "autocast_dtype"]


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
        out[-1] = self.first_tokens(1, device, dtype)
        return out

    def first_tokens(self, count: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The first `count` tokens of every frame of the last layer (camera and register tokens), [B, S, count, 2C]."""
        halves = self.layers[self.depth - 1]
        return torch.cat([h[:, :, :count].to(device=device) for h in halves], dim=-1).to(dtype)

    def discard_frames(self, end: int) -> None:
        """Give back the memory of frames 0:end of every stored layer (every head has read them; see host_memory).

        Only buffers of `vggt.runtime.host_memory.scene_buffer` (the CPU's) shrink; the frames must not be read again.
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
