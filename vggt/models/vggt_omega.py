"""VGGT-Omega (facebookresearch/vggt-omega): a DINOv3 patch encoder, an alternating-attention aggregator whose
inter-frame blocks attend globally or over camera and register tokens only, a camera head and one dense depth head.

Inputs are images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1] with H and W multiples of the patch size (16).
Outputs (`VGGTOmega.forward`): `pose_enc` [B, S, 9] (`vggt.utils.pose_enc` layout: camera-from-world, first
frame is the world), `depth` [B, S, H, W, 1], `depth_conf` [B, S, H, W], `camera_and_register_tokens`
[B, S, 1 + registers, 2 * dim], `images`; with the alignment head also `text_alignment_embedding` [B, 2 * dim]
and `text_alignment_token`. Points come from unprojecting depth with the cameras (`omega_to_geometry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vggt.heads.omega_heads import OmegaCameraHead, OmegaDenseHead, TextAlignmentHead
from vggt.layers.dinov3 import AxialRope, DinoV3Encoder, PrefixRopeBlock
from vggt.models.aggregator import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class OmegaConfig:
    """Every size of VGGT-Omega. `OmegaConfig()` is VGGT-Omega-1B."""

    patch_size: int = 16
    # The image width (crop) or longer side (pad) the pipeline resizes photos to (the reference's "balanced"
    # loader: `vggt.utils.family_images.load_omega_images`).
    default_resolution: int = 512
    embed_dim: int = 1024
    # The DINOv3 patch encoder.
    encoder_depth: int = 24
    encoder_num_heads: int = 16
    encoder_storage_tokens: int = 4
    # The aggregator: `depth` frame blocks alternating with `depth` inter-frame blocks.
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 16
    # Inter-frame blocks that attend over camera and register tokens only (the others attend over all tokens).
    register_attention_blocks: tuple[int, ...] = (2, 6, 9, 14, 20)
    rope_base: float = 100.0
    # Heads.
    camera_trunk_depth: int = 4
    head_num_heads: int = 16
    dense_features: int = 256
    dense_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dense_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_alignment: bool = False

    def __post_init__(self) -> None:
        if any(not 0 <= i < self.depth for i in (*self.register_attention_blocks, *self.dense_layers)):
            raise ValueError(f"block indices must lie below depth {self.depth}")

    @property
    def patch_start_idx(self) -> int:
        return 1 + self.num_register_tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class OmegaAggregator(nn.Module):
    """Images [B, S, 3, H, W] in [0, 1] -> one entry per block pair: [B, S, N, 2 * dim] (frame and inter-frame
    outputs concatenated) for the blocks in `keep_layers`, None for the others; N = 1 + registers + patches."""

    def __init__(self, config: OmegaConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_embed = DinoV3Encoder(
            c.patch_size, c.embed_dim, c.encoder_depth, c.encoder_num_heads, c.mlp_ratio, c.encoder_storage_tokens
        )
        self.rope_embed = AxialRope(c.embed_dim, c.num_heads, base=c.rope_base)

        def block() -> PrefixRopeBlock:
            return PrefixRopeBlock(c.embed_dim, c.num_heads, c.mlp_ratio, qk_norm=True)

        self.frame_blocks = nn.ModuleList(block() for _ in range(c.depth))
        self.inter_frame_blocks = nn.ModuleList(block() for _ in range(c.depth))
        # Index 0: the first frame's tokens; index 1: every other frame's.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-3)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-3)
        self.register_only = frozenset(c.register_attention_blocks)
        self.keep_layers = frozenset((*c.dense_layers, c.depth - 1))

    def _special_tokens(self, B: int, S: int, includes_first: bool = True) -> Tensor:
        """Camera and register tokens [B * S, 1 + registers, dim]: the first frame's set (when these frames start
        with the scene's first frame, `includes_first`), then the others'."""
        tokens = torch.cat([self.camera_token, self.register_token], dim=2)  # [1, 2, 1 + R, dim]
        others = tokens[:, 1:].expand(1, S - 1 if includes_first else S, -1, -1)
        per_frame = torch.cat([tokens[:, :1], others], dim=1) if includes_first else others
        return per_frame.expand(B, -1, -1, -1).reshape(B * S, *tokens.shape[2:])

    def embed(self, images: Tensor, includes_first: bool = True) -> Tensor:
        """Images [B, S, 3, H, W] in [0, 1] -> tokens [B * S, N, dim]: camera, registers, patches (see
        `_special_tokens` for `includes_first`)."""
        B, S, _, H, W = images.shape
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
        x = ((images - mean) / std).reshape(B * S, 3, H, W)
        return torch.cat([self._special_tokens(B, S, includes_first), self.patch_embed(x)], dim=1)

    def forward(self, images: Tensor) -> tuple[list[Tensor | None], int]:
        B, S, _, H, W = images.shape
        p = self.config.patch_size
        tokens = self.embed(images)
        N, C = tokens.shape[1:]
        rope = self.rope_embed(H // p, W // p)
        start = self.config.patch_start_idx
        outputs: list[Tensor | None] = []
        for i in range(self.config.depth):
            tokens = self.frame_blocks[i](tokens.reshape(B * S, N, C), pos=rope)
            frame_out = tokens.reshape(B, S, N, C)
            if i in self.register_only:
                special = self.inter_frame_blocks[i](frame_out[:, :, :start].reshape(B, S * start, C))
                tokens = torch.cat([special.reshape(B, S, start, C), frame_out[:, :, start:]], dim=2)
            else:
                tokens = self.inter_frame_blocks[i](frame_out.reshape(B, S * N, C)).reshape(B, S, N, C)
            outputs.append(torch.cat([frame_out, tokens], dim=-1) if i in self.keep_layers else None)
        return outputs, start


class VGGTOmega(nn.Module):
    """VGGT-Omega; see the module docstring for inputs and outputs."""

    def __init__(self, config: OmegaConfig | None = None) -> None:
        super().__init__()
        c = config or OmegaConfig()
        self.config = c
        self.aggregator = OmegaAggregator(c)
        dim_in = 2 * c.embed_dim
        self.camera_head = OmegaCameraHead(dim_in, c.camera_trunk_depth, c.head_num_heads) if c.enable_camera else None
        self.dense_head = (
            OmegaDenseHead(dim_in, c.patch_size, c.dense_features, c.dense_out_channels, c.dense_layers)
            if c.enable_depth
            else None
        )
        self.text_alignment_head = TextAlignmentHead(dim_in, 4, c.head_num_heads) if c.enable_alignment else None

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() == 4:
            images = images.unsqueeze(0)
        tokens_list, start = self.aggregator(images)
        last = tokens_list[-1]
        predictions = {"camera_and_register_tokens": last[:, :, :start].contiguous()}
        if self.camera_head is not None:
            predictions["pose_enc"] = self.camera_head(tokens_list, start)
        if self.dense_head is not None:
            predictions["depth"], predictions["depth_conf"] = self.dense_head(tokens_list, images, start)
        if self.text_alignment_head is not None:
            predictions.update(self.text_alignment_head(tokens_list, start))
        predictions["images"] = images
        return predictions
