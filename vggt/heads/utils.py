"""Sinusoidal 2D position embeddings for the dense heads' feature maps."""

from __future__ import annotations

import torch
from torch import Tensor

# Base wavelength of the sinusoidal embedding: frequencies run from 1 down to 1 / POS_EMBED_OMEGA.
POS_EMBED_OMEGA = 100.0


def make_sincos_pos_embed(embed_dim: int, pos: Tensor, omega_0: float = POS_EMBED_OMEGA) -> Tensor:
    """1D sinusoidal embedding of positions [M] -> [M, embed_dim] (sines, then cosines), float32.

    Computed in float64 (float32 on MPS, which has no float64) so the embedding does not depend on
    the dtype the network runs in.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for a sine/cosine embedding, got {embed_dim}")
    compute_dtype = torch.float32 if pos.device.type == "mps" else torch.float64
    exponent = torch.arange(embed_dim // 2, dtype=compute_dtype, device=pos.device) / (embed_dim / 2.0)
    frequencies = 1.0 / omega_0**exponent  # [D/2]
    angles = pos.reshape(-1).to(compute_dtype)[:, None] * frequencies[None, :]  # [M, D/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def position_grid_to_embed(pos_grid: Tensor, embed_dim: int, omega_0: float = POS_EMBED_OMEGA) -> Tensor:
    """Embed a grid of 2D positions [H, W, 2] as [H, W, embed_dim]: x in the first half, y in the second."""
    height, width, grid_dim = pos_grid.shape
    if grid_dim != 2:
        raise ValueError(f"pos_grid must be [H, W, 2], got shape {tuple(pos_grid.shape)}")
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2D sine/cosine embedding, got {embed_dim}")
    flat = pos_grid.reshape(-1, 2)
    emb_x = make_sincos_pos_embed(embed_dim // 2, flat[:, 0], omega_0=omega_0)
    emb_y = make_sincos_pos_embed(embed_dim // 2, flat[:, 1], omega_0=omega_0)
    return torch.cat([emb_x, emb_y], dim=-1).view(height, width, embed_dim)


def create_uv_grid(
    width: int,
    height: int,
    aspect_ratio: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Pixel-centre UV coordinates [height, width, 2] of a plane whose diagonal has length 2.

    With aspect ratio a = width / height (or the one given), u spans about +-a / sqrt(1 + a^2) and
    v about +-1 / sqrt(1 + a^2); the outermost samples sit half a cell inside those edges.
    """
    if aspect_ratio is None:
        aspect_ratio = float(width) / float(height)
    diagonal = (aspect_ratio**2 + 1.0) ** 0.5
    span_x = aspect_ratio / diagonal * (width - 1) / width
    span_y = 1.0 / diagonal * (height - 1) / height
    u = torch.linspace(-span_x, span_x, steps=width, dtype=dtype, device=device)
    v = torch.linspace(-span_y, span_y, steps=height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    return torch.stack((uu, vv), dim=-1)
