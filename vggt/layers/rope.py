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


class PositionGetter:
    """Callable giving (y, x) patch positions [batch, height * width, 2] (the reference's name for
    `patch_positions`)."""

    def __call__(self, batch_size: int, height: int, width: int, device: torch.device | str) -> Tensor:
        return patch_positions(batch_size, height, width, device)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE to queries or keys [B, heads, N, head_dim] given positions [B, N, 2] (y, x)."""

    def __init__(self, frequency: float = 100.0, scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.frequency = frequency
        # The reference's argument, stored and, as there, never applied to the angles.
        self.scaling_factor = scaling_factor
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    def tables(self, positions: Tensor, head_dim: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """cos and sin of the row and column angles of positions [B, N, 2]: four [B, 1, N, head_dim / 2].

        `rotate` with these tables equals `forward`; computing them once serves every head group.
        """
        half = head_dim // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, positions.device, dtype)
        rows, cols = positions[..., 0], positions[..., 1]
        return tuple(F.embedding(p, t)[:, None] for p in (rows, cols) for t in (cos, sin))

    @staticmethod
    def rotate(x: Tensor, tables: tuple[Tensor, ...]) -> Tensor:
        """Apply RoPE with precomputed `tables` to x [B, heads, N, head_dim]."""
        cos_rows, sin_rows, cos_cols, sin_cols = tables
        x_rows, x_cols = x.chunk(2, dim=-1)
        x_rows = x_rows * cos_rows + _rotate_half(x_rows) * sin_rows
        x_cols = x_cols * cos_cols + _rotate_half(x_cols) * sin_cols
        return torch.cat((x_rows, x_cols), dim=-1)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        return self.rotate(x, self.tables(positions, x.shape[-1], x.dtype))
