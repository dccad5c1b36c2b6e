"""Pi3 (yyfz/Pi3): a permutation-equivariant reconstruction model with no reference frame.

A DINOv2 encoder (with registers) embeds each image; a decoder alternates per-frame and all-frames RoPE attention
over the patch tokens and 5 register tokens that are the same for every frame (so no frame is special); three
per-frame decoders read the last two decoder outputs and predict local (camera-frame) points, their confidence,
and camera-to-world poses.

Inputs are images [B, S, 3, H, W] (or [S, 3, H, W]) in [0, 1], H and W multiples of 14. Outputs
(`Pi3.forward`): `points` [B, S, H, W, 3] (world, i.e. in the frame of the predicted poses, up to scale),
`local_points` [B, S, H, W, 3] (camera frame; z is depth), `conf` [B, S, H, W, 1] (logits: sigmoid for a
probability), `camera_poses` [B, S, 4, 4] (OpenCV camera-to-world).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from vggt.heads.pi3_heads import LinearPixelHead, Pi3CameraHead, TransformerDecoder
from vggt.layers.block import Block
from vggt.layers.rope import RotaryPositionEmbedding2D, patch_positions
from vggt.layers.vision_transformer import VGGT_ENCODER_OPTIONS, DinoVisionTransformer
from vggt.models.aggregator import IMAGENET_MEAN, IMAGENET_STD

PATCH_SIZE = 14


@dataclass(frozen=True)
class Pi3Config:
    """Every size of Pi3. `Pi3Config()` is the released Pi3."""

    img_size: int = 518  # the encoder's position table covers img_size / 14 patches per side
    encoder_dim: int = 1024
    encoder_depth: int = 24
    encoder_num_heads: int = 16
    encoder_registers: int = 4
    decoder_dim: int = 1024
    decoder_depth: int = 36
    decoder_num_heads: int = 16
    num_register_tokens: int = 5
    head_dim: int = 1024  # width of the point, confidence and camera decoders
    head_depth: int = 5
    head_num_heads: int = 16
    camera_dim: int = 512
    rope_freq: float = 100.0
    # The image width (crop) or longer side (pad) the pipeline resizes photos to: 504 x 504 is the largest square
    # within the reference loader's 255,000 pixels (`vggt.utils.family_images.load_pi3_images`).
    default_resolution: int = 504

    @property
    def patch_size(self) -> int:
        return PATCH_SIZE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decoder_block(
    dim: int, num_heads: int, rope: RotaryPositionEmbedding2D | None = None, block_class: type[Block] = Block
) -> Block:
    """One block of Pi3's decoder (QK-norm, LayerScale 0.01, LayerNorm eps 1e-6) on [B, N, dim] tokens, built as
    `block_class` (a `Block` subclass with other forward code, e.g. Pi3X's pose-injection block)."""
    return block_class(
        dim, num_heads, 4.0, init_values=0.01, qk_norm=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), rope=rope
    )


class Pi3(nn.Module):
    """Pi3; see the module docstring for inputs and outputs."""

    def __init__(self, config: Pi3Config | None = None) -> None:
        super().__init__()
        c = config or Pi3Config()
        self.config = c
        self.encoder = DinoVisionTransformer(
            img_size=c.img_size,
            patch_size=PATCH_SIZE,
            embed_dim=c.encoder_dim,
            depth=c.encoder_depth,
            num_heads=c.encoder_num_heads,
            num_register_tokens=c.encoder_registers,
            init_values=1.0,
            **VGGT_ENCODER_OPTIONS,
        )
        del self.encoder.mask_token  # not in the released weights
        self.rope = RotaryPositionEmbedding2D(c.rope_freq)
        self.decoder = nn.ModuleList(
            decoder_block(c.decoder_dim, c.decoder_num_heads, self.rope) for _ in range(c.decoder_depth)
        )
        self.register_token = nn.Parameter(torch.randn(1, 1, c.num_register_tokens, c.decoder_dim) * 1e-6)

        def decoder(out_dim: int) -> TransformerDecoder:
            return TransformerDecoder(2 * c.decoder_dim, out_dim, c.head_dim, c.head_depth, c.head_num_heads, self.rope)

        self.point_decoder = decoder(c.head_dim)
        self.point_head = LinearPixelHead(PATCH_SIZE, c.head_dim, 3)
        self.conf_decoder = decoder(c.head_dim)
        self.conf_head = LinearPixelHead(PATCH_SIZE, c.head_dim, 1)
        self.camera_decoder = decoder(c.camera_dim)
        self.camera_head = Pi3CameraHead(c.camera_dim)
        # Persistent: the released checkpoint carries them.
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def decode(
        self,
        patch_tokens: Tensor,
        B: int,
        S: int,
        grid_hw: tuple[int, int],
        after_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encoder tokens [B * S, hw, dim] -> last two decoder outputs concatenated [B * S, R + hw, 2 * dim] and
        the token positions [B * S, R + hw, 2] (register tokens at (0, 0), patches from (1, 1)).

        `after_block(i, hidden)` (Pi3X's pose injection) may replace the output of block i, hidden
        [B, S, R + hw, dim], before the next block reads it."""
        R = self.config.num_register_tokens
        registers = self.register_token.expand(B, S, -1, -1).reshape(B * S, R, -1)
        hidden = torch.cat([registers, patch_tokens], dim=1)
        n, dim = hidden.shape[1:]
        pos = patch_positions(B * S, *grid_hw, hidden.device) + 1
        pos = torch.cat([pos.new_zeros(B * S, R, 2), pos], dim=1)
        last_two = []
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:  # within each frame
                hidden = block(hidden.reshape(B * S, n, dim), pos=pos)
            else:  # across all frames
                hidden = block(hidden.reshape(B, S * n, dim), pos=pos.reshape(B, S * n, 2))
            if after_block is not None:
                hidden = after_block(i, hidden.reshape(B, S, n, dim))
            if i >= len(self.decoder) - 2:
                last_two.append(hidden.reshape(B * S, n, dim))
        return torch.cat(last_two, dim=-1), pos

    def encode(self, images: Tensor) -> Tensor:
        """Images [B, S, 3, H, W] in [0, 1] -> encoder patch tokens [B * S, (H / 14) (W / 14), encoder_dim]."""
        B, S, _, H, W = images.shape
        return self.encoder((images.reshape(B * S, 3, H, W) - self.image_mean) / self.image_std)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        images = images.unsqueeze(0) if images.dim() == 4 else images
        B, S, _, H, W = images.shape
        grid_hw = (H // PATCH_SIZE, W // PATCH_SIZE)
        hidden, pos = self.decode(self.encode(images), B, S, grid_hw)
        return self.predict(hidden, pos, B, S, grid_hw)

    def predict(self, hidden: Tensor, pos: Tensor, B: int, S: int, grid_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Decoder output [B * S, R + hw, 2 * dim] and positions -> the outputs of the module docstring."""
        return self.predict_frames(hidden, pos, B, grid_hw)

    def predict_frames(self, hidden: Tensor, pos: Tensor, B: int, grid_hw: tuple[int, int]) -> dict[str, Tensor]:
        """The outputs of s frames ([B, s, ...]) from their decoder output [B * s, R + hw, 2 * dim] and positions
        [B * s, R + hw, 2]: every head reads one frame at a time, so any run of frames gives its part of `predict`."""
        H, W = grid_hw[0] * PATCH_SIZE, grid_hw[1] * PATCH_SIZE
        R, S = self.config.num_register_tokens, hidden.shape[0] // B
        point_tokens = self.point_decoder(hidden, pos)[:, R:].float()
        conf_tokens = self.conf_decoder(hidden, pos)[:, R:].float()
        camera_tokens = self.camera_decoder(hidden, pos)[:, R:].float()
        raw = self.point_head(point_tokens, grid_hw).reshape(B, S, H, W, 3)
        z = torch.exp(raw[..., 2:])
        local_points = torch.cat([raw[..., :2] * z, z], dim=-1)
        conf = self.conf_head(conf_tokens, grid_hw).reshape(B, S, H, W, 1)
        camera_poses = self.camera_head(camera_tokens).reshape(B, S, 4, 4)
        points = camera_to_world(camera_poses, local_points)
        return {"points": points, "local_points": local_points, "conf": conf, "camera_poses": camera_poses}


def camera_to_world(camera_poses: Tensor, local_points: Tensor) -> Tensor:
    """Camera-frame points [B, S, H, W, 3] mapped by camera-to-world poses [B, S, 4, 4]."""
    points = torch.einsum("bsij,bshwj->bshwi", camera_poses[..., :3, :3], local_points)
    return points + camera_poses[:, :, None, None, :3, 3]
