"""The heads of VGGT-Omega: camera (from camera and register tokens), one dense depth head, text alignment.

Attribute names are the keys of the released VGGT-Omega checkpoints. All heads run in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.heads.dpt_head import POS_EMBED_SCALE, interpolate_bilinear
from vggt.heads.utils import create_uv_grid, position_grid_to_embed
from vggt.layers.dinov3 import NORM_EPS, PrefixRopeBlock

CAMERA_ENCODING_DIM = 9  # translation (3), quaternion (4), vertical and horizontal field of view (2)
MIN_FOV = 0.01  # radians added to the rectified field of view


def _camera_and_register_tokens(tokens: Tensor, patch_start: int, norm: nn.LayerNorm) -> Tensor:
    """Normed camera and register tokens of every frame in one sequence: [B, S, N, C] -> [B, S * patch_start, C]."""
    B, S = tokens.shape[:2]
    return norm(tokens[:, :, :patch_start].float()).reshape(B, S * patch_start, -1)


class OmegaCameraHead(nn.Module):
    """Last aggregator output [B, S, N, dim_in] -> pose encoding [B, S, 9] (`vggt.utils.pose_enc` layout)."""

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, num_heads: int = 16) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(dim_in, eps=NORM_EPS)
        self.trunk = nn.ModuleList(PrefixRopeBlock(dim_in, num_heads) for _ in range(trunk_depth))
        self.trunk_norm = nn.LayerNorm(dim_in, eps=NORM_EPS)
        self.camera_branch = nn.Sequential(
            nn.Linear(dim_in, dim_in // 2), nn.GELU(), nn.Linear(dim_in // 2, CAMERA_ENCODING_DIM)
        )

    def forward(self, tokens_list: Sequence[Tensor | None], patch_start: int) -> Tensor:
        tokens = tokens_list[-1]
        if tokens is None:
            raise ValueError("the camera head reads the last aggregator output, which was not kept")
        B, S = tokens.shape[:2]
        x = _camera_and_register_tokens(tokens, patch_start, self.token_norm)
        for block in self.trunk:
            x = block(x)
        camera_tokens = self.trunk_norm(x.reshape(B, S, patch_start, -1)[:, :, 0])
        raw = self.camera_branch(camera_tokens)
        return torch.cat([raw[..., :7], F.relu(raw[..., 7:]) + MIN_FOV], dim=-1)


class TextAlignmentHead(nn.Module):
    """Camera and register tokens of all frames -> one language-aligned embedding per sequence [B, dim_in]."""

    def __init__(self, dim_in: int = 2048, depth: int = 4, num_heads: int = 16) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(dim_in, eps=NORM_EPS)
        self.language_token = nn.Parameter(torch.zeros(1, 1, dim_in))
        nn.init.trunc_normal_(self.language_token, std=0.02)
        self.readout_blocks = nn.ModuleList(PrefixRopeBlock(dim_in, num_heads) for _ in range(depth))
        self.language_token_norm = nn.LayerNorm(dim_in, eps=NORM_EPS)
        self.embedding_projector = nn.Sequential(
            nn.Linear(dim_in, dim_in // 2),
            nn.GELU(),
            nn.LayerNorm(dim_in // 2, eps=NORM_EPS),
            nn.Linear(dim_in // 2, dim_in),
        )

    def forward(self, tokens_list: Sequence[Tensor | None], patch_start: int) -> dict[str, Tensor]:
        tokens = tokens_list[-1]
        if tokens is None:
            raise ValueError("the text alignment head reads the last aggregator output, which was not kept")
        x = _camera_and_register_tokens(tokens, patch_start, self.token_norm)
        x = torch.cat([self.language_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.readout_blocks:
            x = block(x)
        language_token = self.language_token_norm(x[:, 0])
        embedding = F.normalize(self.embedding_projector(language_token), dim=-1)
        return {"text_alignment_embedding": embedding, "text_alignment_token": language_token}


class PlainResidualConvUnit(nn.Module):
    """`x + conv2(relu(conv1(relu(x))))` on [N, C, h, w] (the skip carries x itself, unlike `dpt_head`'s unit)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FusionBlock(nn.Module):
    """Add a refined skip (if any), refine, resize bilinearly to `size`, mix channels with a 1x1 conv."""

    def __init__(self, features: int, has_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        if has_skip:
            self.resConfUnit1 = PlainResidualConvUnit(features)
        self.resConfUnit2 = PlainResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = interpolate_bilinear(x, tuple(size))
        return self.out_conv(x)


def _resize_layer(channels: int, scale: float) -> nn.Module:
    if scale == 1.0:
        return nn.Identity()
    if scale == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    return nn.ConvTranspose2d(channels, channels, kernel_size=int(scale), stride=int(scale))


def _add_uv_embedding(x: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """x [N, C, h, w] plus 0.1 x the sinusoidal embedding of its pixel-centre UV grid (image aspect ratio)."""
    height, width = image_hw
    grid = create_uv_grid(x.shape[-1], x.shape[-2], aspect_ratio=width / height, dtype=x.dtype, device=x.device)
    embedding = position_grid_to_embed(grid, x.shape[1]) * POS_EMBED_SCALE  # [h, w, C]
    return x + embedding.permute(2, 0, 1)[None]


class OmegaDenseHead(nn.Module):
    """Four aggregator outputs -> depth [B, S, H, W, 1] (exp) and its confidence [B, S, H, W] (1 + exp).

    The fused map is at 1/4 of the image; a pixel shuffle by `patch_size / 4` brings it to full resolution.
    """

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 16,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layers: Sequence[int] = (4, 11, 17, 23),
    ) -> None:
        super().__init__()
        if patch_size % 4:
            raise ValueError(f"patch_size must be divisible by 4 for the dense head, got {patch_size}")
        self.patch_size = patch_size
        self.layers = tuple(layers)
        self.shuffle = patch_size // 4
        self.norm = nn.LayerNorm(dim_in, eps=NORM_EPS)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, kernel_size=1) for c in out_channels)
        self.resize_layers = nn.ModuleList(_resize_layer(c, s) for c, s in zip(out_channels, (4.0, 2.0, 1.0, 0.5)))
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False))
        for i in (1, 2, 3):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features))
        self.scratch.refinenet4 = FusionBlock(features, has_skip=False)
        self.proj = nn.Conv2d(features, self.shuffle**2, kernel_size=1)
        self.proj_conf = nn.Conv2d(features, self.shuffle**2, kernel_size=1)
        nn.init.zeros_(self.proj_conf.weight)
        nn.init.constant_(self.proj_conf.bias, math.log(0.05))  # confidence starts near 1.05

    def forward(
        self, tokens_list: Sequence[Tensor | None], images: Tensor, patch_start: int, frames_chunk_size: int | None = 8
    ) -> tuple[Tensor, Tensor]:
        """tokens_list: aggregator outputs [B, S, N, dim_in]; images [B, S, 3, H, W]."""
        S = images.shape[1]
        step = S if not frames_chunk_size else frames_chunk_size
        parts = [self.forward_frames(tokens_list, images, patch_start, i, min(i + step, S)) for i in range(0, S, step)]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def forward_frames(
        self, tokens_list: Sequence[Tensor | None], images: Tensor, patch_start: int, start: int, stop: int
    ) -> tuple[Tensor, Tensor]:
        """Depth [B, s, H, W, 1] and confidence [B, s, H, W] of frames start:stop of the aggregator outputs (only
        H and W of images [B, S, 3, H, W] are read): each frame's maps depend on its own tokens only."""
        B, _, _, H, W = images.shape
        S = stop - start
        grid_hw = (H // self.patch_size, W // self.patch_size)
        levels = []
        for project, resize, layer in zip(self.projects, self.resize_layers, self.layers):
            tokens = tokens_list[layer]
            if tokens is None:
                raise ValueError(f"the dense head reads aggregator output {layer}, which was not kept")
            x = self.norm(tokens[:, start:stop, patch_start:].float().reshape(B * S, -1, tokens.shape[-1]))
            x = x.permute(0, 2, 1).reshape(B * S, -1, *grid_hw)
            levels.append(resize(_add_uv_embedding(project(x), (H, W))))
        rn = [getattr(self.scratch, f"layer{i}_rn")(level) for i, level in enumerate(levels, start=1)]
        out = self.scratch.refinenet4(rn[3], None, size=rn[2].shape[-2:])
        out = self.scratch.refinenet3(out, rn[2], size=rn[1].shape[-2:])
        out = self.scratch.refinenet2(out, rn[1], size=rn[0].shape[-2:])
        out = self.scratch.refinenet1(out, rn[0], size=rn[0].shape[-2:])
        fused = _add_uv_embedding(out, (H, W))
        depth = torch.exp(F.pixel_shuffle(self.proj(fused), self.shuffle).permute(0, 2, 3, 1))
        conf = 1.0 + torch.exp(F.pixel_shuffle(self.proj_conf(fused), self.shuffle)[:, 0])
        return depth.reshape(B, S, *depth.shape[1:]), conf.reshape(B, S, *conf.shape[1:])
