"""Building blocks: attention, transformer blocks, rotary embedding, patch embedding, DINOv2 ViT.

The reference package's names (`vit_large`, `MemEffAttention`, `NestedTensorBlock`, `SwiGLUFFNFused`,
`PositionGetter`, `drop_path`, ...) are exported too, from `vggt.layers.dinov2`.
"""

from vggt.layers.attention import Attention
from vggt.layers.block import Block
from vggt.layers.dinov2 import (
    DropPath,
    MemEffAttention,
    NestedTensorBlock,
    PositionGetter,
    SwiGLUFFN,
    SwiGLUFFNFused,
    drop_path,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
)
from vggt.layers.layer_scale import LayerScale
from vggt.layers.mlp import Mlp
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.rope import RotaryPositionEmbedding2D, patch_positions
from vggt.layers.vision_transformer import DinoVisionTransformer

__all__ = [
    "Attention",
    "Block",
    "DinoVisionTransformer",
    "DropPath",
    "LayerScale",
    "MemEffAttention",
    "Mlp",
    "NestedTensorBlock",
    "PatchEmbed",
    "PositionGetter",
    "RotaryPositionEmbedding2D",
    "SwiGLUFFN",
    "SwiGLUFFNFused",
    "drop_path",
    "patch_positions",
    "vit_base",
    "vit_giant2",
    "vit_large",
    "vit_small",
]
