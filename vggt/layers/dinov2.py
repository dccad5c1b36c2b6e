"""DINOv2's `forward_features` outputs of this package's `DinoVisionTransformer`, and the DINOv2 names the
reference's `vggt.layers` exports, re-exported from the modules that define them (under the reference's paths).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vggt.layers.attention import MemEffAttention
from vggt.layers.block import NestedTensorBlock
from vggt.layers.drop_path import DropPath, drop_path
from vggt.layers.rope import PositionGetter
from vggt.layers.swiglu_ffn import SwiGLUFFN, SwiGLUFFNFused
from vggt.layers.vision_transformer import VIT_SIZES, DinoVisionTransformer, vit_base, vit_giant2, vit_large, vit_small

__all__ = [
    "VIT_SIZES",
    "DropPath",
    "MemEffAttention",
    "NestedTensorBlock",
    "PositionGetter",
    "SwiGLUFFN",
    "SwiGLUFFNFused",
    "drop_path",
    "forward_features",
    "vit_base",
    "vit_giant2",
    "vit_large",
    "vit_small",
]


def forward_features(model: DinoVisionTransformer, images: Tensor) -> dict[str, Tensor]:
    """DINOv2's `forward_features` outputs of a normalised image batch [B, 3, H, W].

    Returns:
        `x_norm_clstoken` [B, C], `x_norm_regtokens` [B, R, C] and `x_norm_patchtokens` [B, (H/p)(W/p), C].
    """
    batch, _, height, width = images.shape
    x = model.patch_embed(images)
    x = torch.cat((model.cls_token.expand(batch, -1, -1), x), dim=1)
    x = x + model.interpolate_pos_encoding(height // model.patch_size, width // model.patch_size)
    x = torch.cat((x[:, :1], model.register_tokens.expand(batch, -1, -1), x[:, 1:]), dim=1)
    for block in model.blocks:
        x = block(x)
    x = model.norm(x)
    registers = 1 + model.num_register_tokens
    return {"x_norm_clstoken": x[:, 0], "x_norm_regtokens": x[:, 1:registers], "x_norm_patchtokens": x[:, registers:]}
