"""The heads Pi3X adds to Pi3: a convolutional upsampling head (after MoGe) for points and confidence, and a
cross-attention decoder that reads one metric-scale token out of all frames' tokens.

Attribute names are the keys of the released Pi3X checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.heads.pi3_heads import DECODER_NORM_EPS
from vggt.heads.utils import create_uv_grid
from vggt.layers.mlp import Mlp
from vggt.layers.rope import RotaryPositionEmbedding2D

GROUP_WIDTH = 32  # channels per group of the hidden GroupNorm


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="replicate")


def _with_uv(x: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Append the UV grid of the image plane (image aspect ratio) to x [N, C, h, w] as 2 more channels."""
    uv = create_uv_grid(x.shape[-1], x.shape[-2], aspect_ratio=image_hw[1] / image_hw[0], dtype=x.dtype,
                        device=x.device)  # fmt: skip
    return torch.cat([x, uv.permute(2, 0, 1)[None].expand(x.shape[0], -1, -1, -1)], dim=1)


class ResidualConvBlock(nn.Module):
    """`x + conv(relu(gn(conv(relu(gn(x))))))` on [N, C, h, w], 3x3 convolutions with replicate padding."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.ReLU(),
            _conv3x3(channels, hidden),
            nn.GroupNorm(max(hidden // GROUP_WIDTH, 1), hidden),
            nn.ReLU(),
            _conv3x3(hidden, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x) + x


class ConvHead(nn.Module):
    """Patch tokens [N, h * w, dim] -> one map [N, c, H, W] per entry of `out_channels`.

    Three stages each double the grid (transposed 2x2 conv, 3x3 conv, residual blocks) with the UV grid appended;
    the result is resized bilinearly to the image, the UV grid appended again, and each output read by a small
    convolutional branch.
    """

    def __init__(
        self,
        dim: int,
        out_channels: Sequence[int],
        upsample_channels: Sequence[int] = (256, 128, 64),
        res_blocks: int = 2,
        last_channels: int = 32,
        patch_size: int = 14,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projects = nn.Identity()
        ins = [dim, *upsample_channels[:-1]]
        self.upsample_blocks = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in + 2, c_out, kernel_size=2, stride=2),
                    _conv3x3(c_out, c_out),
                ),
                *(ResidualConvBlock(c_out, 2 * c_out) for _ in range(res_blocks)),
            )
            for c_in, c_out in zip(ins, upsample_channels)
        )
        self.output_block = nn.ModuleList(
            nn.Sequential(
                _conv3x3(upsample_channels[-1] + 2, last_channels),
                nn.ReLU(),
                nn.Conv2d(last_channels, c, kernel_size=1),
            )
            for c in out_channels
        )

    def forward(self, tokens: Tensor, grid_hw: tuple[int, int]) -> list[Tensor]:
        image_hw = (grid_hw[0] * self.patch_size, grid_hw[1] * self.patch_size)
        x = self.projects(tokens).permute(0, 2, 1).unflatten(2, grid_hw)
        for block in self.upsample_blocks:
            x = block(_with_uv(x, image_hw))
        x = _with_uv(F.interpolate(x, image_hw, mode="bilinear", align_corners=False), image_hw)
        return [block(x) for block in self.output_block]


class CrossAttention(nn.Module):
    """Queries [B, n, dim] attend to keys/values [B, m, dim]; RoPE by (y, x) positions of each side."""

    def __init__(self, dim: int, num_heads: int, rope: RotaryPositionEmbedding2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def _heads(self, x: Tensor) -> Tensor:
        B, n, C = x.shape
        return x.reshape(B, n, self.num_heads, C // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, x_pos: Tensor, context_pos: Tensor) -> Tensor:
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
        if self.rope is not None:
            q, k = self.rope(q, x_pos), self.rope(k, context_pos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class CrossOnlyBlock(nn.Module):
    """`x + cross_attn(norm2(x), norm_y(context))`, then `x + mlp(norm3(x))`."""

    def __init__(self, dim: int, num_heads: int, rope: RotaryPositionEmbedding2D | None = None) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(dim, eps=DECODER_NORM_EPS)
        self.norm_y = nn.LayerNorm(dim, eps=DECODER_NORM_EPS)
        self.cross_attn = CrossAttention(dim, num_heads, rope)
        self.norm3 = nn.LayerNorm(dim, eps=DECODER_NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor, context: Tensor, x_pos: Tensor, context_pos: Tensor) -> Tensor:
        x = x + self.cross_attn(self.norm2(x), self.norm_y(context), x_pos, context_pos)
        return x + self.mlp(self.norm3(x))


class ContextDecoder(nn.Module):
    """Query tokens [B, n, in_dim] read context tokens [B, m, in_dim] through cross-only blocks -> [B, n, out_dim]."""

    def __init__(
        self, in_dim: int, out_dim: int, dim: int = 512, depth: int = 5, num_heads: int = 8, rope=None
    ) -> None:
        super().__init__()
        self.projects_x = nn.Linear(in_dim, dim)
        self.projects_y = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(CrossOnlyBlock(dim, num_heads, rope) for _ in range(depth))
        self.linear_out = nn.Linear(dim, out_dim)

    def forward(self, queries: Tensor, context: Tensor, query_pos: Tensor, context_pos: Tensor) -> Tensor:
        x, context = self.projects_x(queries), self.projects_y(context)
        for block in self.blocks:
            x = block(x, context, query_pos, context_pos)
        return self.linear_out(x)
