"""The heads of Pi3 (yyfz/Pi3): per-frame transformer decoders, a linear pixel-shuffle head for points and
confidence, and a camera head that pools patch features into a camera-to-world pose.

Attribute names are the keys of the released Pi3 checkpoint.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.layers.block import Block
from vggt.layers.rope import RotaryPositionEmbedding2D

DECODER_NORM_EPS = 1e-6


class TransformerDecoder(nn.Module):
    """Tokens [B, N, in_dim] with (y, x) positions [B, N, 2] -> [B, N, out_dim] through `depth` RoPE blocks."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        dim: int = 1024,
        depth: int = 5,
        num_heads: int = 16,
        rope: RotaryPositionEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(
            Block(
                dim, num_heads, 4.0, init_values=None, norm_layer=partial(nn.LayerNorm, eps=DECODER_NORM_EPS), rope=rope
            )
            for _ in range(depth)
        )
        self.linear_out = nn.Linear(dim, out_dim)

    def forward(self, hidden: Tensor, pos: Tensor) -> Tensor:
        hidden = self.projects(hidden)
        for block in self.blocks:
            hidden = block(hidden, pos=pos)
        return self.linear_out(hidden)


class LinearPixelHead(nn.Module):
    """Patch tokens [B, h * w, dim] -> per-pixel values [B, h * p, w * p, out_dim] (one linear map per patch)."""

    def __init__(self, patch_size: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, out_dim * patch_size**2)

    def forward(self, tokens: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        B = tokens.shape[0]
        features = self.proj(tokens).transpose(-1, -2).reshape(B, -1, *grid_hw)
        return F.pixel_shuffle(features, self.patch_size).permute(0, 2, 3, 1)


class ResidualMlp(nn.Module):
    """`x + relu(l3(relu(l2(relu(l1(x))))))` on [..., dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))


def orthogonalize(matrices: Tensor) -> Tensor:
    """Nearest rotations [B, 3, 3] to 9-vectors [B, 9] (rows normalised first) by SVD, with det +1, in float32
    (under bfloat16 autocast too: SVD and det have no low-precision kernels)."""
    with torch.autocast(matrices.device.type, enabled=False):
        m = F.normalize(matrices.float().reshape(-1, 3, 3), p=2, dim=-1).transpose(-1, -2)
        u, _, vh = torch.linalg.svd(m)
        v = vh.transpose(-1, -2)
        det = torch.det(v @ u.transpose(-1, -2))
        v = torch.cat([v[:, :, :-1], v[:, :, -1:] * det.view(-1, 1, 1)], dim=2)
        return v @ u.transpose(-1, -2)


class Pi3CameraHead(nn.Module):
    """Camera-decoder tokens [B, h * w, dim] -> camera-to-world poses [B, 4, 4] (rotation by SVD)."""

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResidualMlp(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, tokens: Tensor) -> Tensor:
        for block in self.res_conv:
            tokens = block(tokens)
        pooled = self.more_mlps(tokens.mean(dim=1)).float()
        pose = torch.zeros(pooled.shape[0], 4, 4, dtype=pooled.dtype, device=pooled.device)
        pose[:, :3, :3] = orthogonalize(self.fc_rot(pooled))
        pose[:, :3, 3] = self.fc_t(pooled)
        pose[:, 3, 3] = 1.0
        return pose
