"""2D rotary position embedding over a patch grid.

The head dimension is split in two halves: the first rotates with the token's row (y), the second
with its column (x), each as a standard 1D RoPE with base frequency `frequency`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patch_positions(batch: int, height: int, width: int, device: torch.device | str) -> Tensor:
    """Integer (y, x) grid positions, row-major: [batch, height * width, 2]."""
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    grid = torch.cartesian_prod(ys, xs)
    return grid.view(1, height * width, 2).expand(batch, -1, -1)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE to queries or keys [B, heads, N, head_dim] given positions [B, N, 2] (y, x)."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    def _rotate_1d(self, x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos = F.embedding(pos, cos)[:, None]  # [B, 1, N, dim]
        sin = F.embedding(pos, sin)[:, None]
        return x * cos + _rotate_half(x) * sin

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, x.device, x.dtype)
        x_rows, x_cols = x.chunk(2, dim=-1)
        x_rows = self._rotate_1d(x_rows, positions[..., 0], cos, sin)
        x_cols = self._rotate_1d(x_cols, positions[..., 1], cos, sin)
        return torch.cat((x_rows, x_cols), dim=-1)
