"""Building blocks: attention, transformer blocks, rotary embedding, patch embedding, DINOv2 ViT.

The reference package's names (`vit_large`, `MemEffAttention`, `NestedTensorBlock`, `SwiGLUFFNFused`,
`PositionGetter`, `drop_path`, ...) are exported too, each also under the reference's module path.
"""

from vggt.layers.attention import Attention, MemEffAttention
from vggt.layers.block import Block, NestedTensorBlock
from vggt.layers.drop_path import DropPath, drop_path
from vggt.layers.layer_scale import LayerScale
from vggt.layers.mlp import Mlp
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.rope import PositionGetter, RotaryPositionEmbedding2D, patch_positions
from vggt.layers.swiglu_ffn import SwiGLUFFN, SwiGLUFFNFused
from vggt.layers.vision_transformer import DinoVisionTransformer, vit_base, vit_giant2, vit_large, vit_small

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
