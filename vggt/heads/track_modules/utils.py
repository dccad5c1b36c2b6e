"""Positional embeddings and bilinear sampling for the tracker (after CoTracker and VGGSfM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Base of the geometric frequency ladder of the sine-cosine grid embedding (as in MAE / ViT).
SINCOS_BASE = 10000.0
# The flow embedding's frequencies grow linearly: channel pair k uses 2k * FLOW_FREQ_SCALE / dim.
FLOW_FREQ_SCALE = 1000.0


def sincos_embedding_1d(positions: Tensor, dim: int) -> Tensor:
    """Sine-cosine embedding of positions [M] -> [M, dim]: `dim / 2` sines, then `dim / 2` cosines."""
    if dim % 2:
        raise ValueError(f"sine-cosine embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32, device=positions.device) / (dim / 2.0)
    omega = 1.0 / SINCOS_BASE**omega
    angles = positions.reshape(-1).float()[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_grid_embedding(dim: int, height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Sine-cosine embedding of every pixel of a height x width grid: [1, dim, height, width], float32.

    The first `dim / 2` channels encode the column (x), the other half the row (y).
    """
    if dim % 4:
        raise ValueError(f"2D sine-cosine embedding needs a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    emb = torch.cat([sincos_embedding_1d(xs, dim // 2), sincos_embedding_1d(ys, dim // 2)], dim=1)
    return emb.reshape(1, height, width, dim).permute(0, 3, 1, 2)


def flow_embedding(flows: Tensor, dim: int) -> Tensor:
    """Embed 2D displacements [..., 2] -> [..., 2 * dim], float32.

    Each axis gets `dim` channels of interleaved sin/cos: x channels first, then y.
    """
    if dim % 2:
        raise ValueError(f"flow embedding needs an even width, got {dim}")
    freqs = torch.arange(0, dim, 2, dtype=torch.float32, device=flows.device) * (FLOW_FREQ_SCALE / dim)
    angles = flows.float()[..., None] * freqs  # [..., 2, dim / 2]
    # Interleave: channel 2k is sin(a_k), channel 2k + 1 is cos(a_k).
    emb = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., 2, dim / 2, 2]
    return emb.flatten(-3)


def bilinear_sample(inputs: Tensor, points: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample [B, C, H, W] at pixel coordinates points [B, Ho, Wo, 2] (x, y) -> [B, C, Ho, Wo].

    Pixel centres sit at integer coordinates: (0, 0) is the centre of the top-left pixel and
    (W - 1, H - 1) that of the bottom-right one (`align_corners=True`). Sampling runs in the wider of
    the two dtypes, so low-precision features never round the coordinates; the result has the
    dtype of `inputs`.
    """
    height, width = inputs.shape[-2:]
    dtype = torch.promote_types(inputs.dtype, points.dtype)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=points.device, dtype=dtype)
    grid = points.to(dtype) * scale - 1.0
    sampled = F.grid_sample(inputs.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return sampled.to(inputs.dtype)


def sample_features(feature_map: Tensor, points: Tensor) -> Tensor:
    """Bilinear features of feature_map [B, C, H, W] at pixel points [B, N, 2] -> [B, N, C].

    Points outside the map take the value of the nearest border pixel.
    """
    sampled = bilinear_sample(feature_map, points[:, :, None, :], padding_mode="border")  # [B, C, N, 1]
    return sampled[..., 0].transpose(1, 2)


# The reference's names for the functions above, with its signatures and layouts.


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: Tensor) -> Tensor:
    """`sincos_embedding_1d` of positions of any shape (flattened to M) -> [1, M, embed_dim], float32."""
    return sincos_embedding_1d(pos, embed_dim)[None]


def get_2d_sincos_pos_embed_from_grid(embed_dim: int, grid: Tensor) -> Tensor:
    """Embedding of a grid [2, 1, H, W] ((x, y) planes) -> [1, H * W, embed_dim]: half for x, then half for y."""
    if embed_dim % 2:
        raise ValueError(f"2D sine-cosine embedding needs an even width, got {embed_dim}")
    halves = [get_1d_sincos_pos_embed_from_grid(embed_dim // 2, plane) for plane in (grid[0], grid[1])]
    return torch.cat(halves, dim=2)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: int | tuple[int, int], return_grid: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """`sincos_grid_embedding` of a (height, width) grid (or a square one): [1, embed_dim, H, W]; with
    `return_grid` also the grid [2, 1, H, W] of (x, y) positions."""
    height, width = grid_size if isinstance(grid_size, tuple) else (grid_size, grid_size)
    embedding = sincos_grid_embedding(embed_dim, height, width)
    if not return_grid:
        return embedding
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return embedding, torch.stack((xs, ys))[:, None]


def get_2d_embedding(xy: Tensor, C: int, cat_coords: bool = True) -> Tensor:
    """`flow_embedding` of points xy [B, N, 2] -> [B, N, 2C] (x channels, then y), after xy itself when
    `cat_coords` ([B, N, 2C + 2])."""
    embedding = flow_embedding(xy, C)
    return torch.cat((xy, embedding), dim=-1) if cat_coords else embedding


def bilinear_sampler(input: Tensor, coords: Tensor, align_corners: bool = True, padding_mode: str = "border") -> Tensor:
    """`F.grid_sample` at pixel coordinates: input [B, C, H, W] at coords [B, Ho, Wo, 2] (x, y), or [B, C, T, H, W]
    at coords [B, To, Ho, Wo, 3] (t, x, y). With `align_corners` 0 and size - 1 are the centres of the first and
    last pixels, else 0 and size are their outer edges."""
    sizes = input.shape[2:]
    if len(sizes) not in (2, 3):
        raise ValueError(f"bilinear_sampler samples 4D or 5D inputs, got {tuple(input.shape)}")
    coords = coords.to(device=input.device, dtype=input.dtype)
    if len(sizes) == 3:
        coords = coords[..., [1, 2, 0]]  # grid_sample wants (x, y, t)
    spans = [max(size - 1, 1) if align_corners else size for size in reversed(sizes)]
    scale = torch.tensor([2.0 / span for span in spans], device=coords.device, dtype=coords.dtype)
    return F.grid_sample(input, coords * scale - 1, align_corners=align_corners, padding_mode=padding_mode)


def sample_features4d(input: Tensor, coords: Tensor) -> Tensor:
    """`sample_features`: features of input [B, C, H, W] at pixel points coords [B, R, 2] -> [B, R, C]."""
    return sample_features(input, coords)
