"""Building blocks: attention, transformer blocks, rotary embedding, patch embedding, DINOv2 ViT."""

from vggt.layers.attention import Attention
from vggt.layers.block import Block
from vggt.layers.layer_scale import LayerScale
from vggt.layers.mlp import Mlp
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.rope import RotaryPositionEmbedding2D, patch_positions
from vggt.layers.vision_transformer import DinoVisionTransformer

__all__ = [
    "Attention",
    "Block",
    "DinoVisionTransformer",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "RotaryPositionEmbedding2D",
    "patch_positions",
]
