"""Pre-norm transformer block: attention and MLP residuals, each with LayerScale."""

from __future__ import annotations

from torch import Tensor, nn

from vggt.layers.attention import Attention
from vggt.layers.layer_scale import LayerScale
from vggt.layers.mlp import LinearFn, Mlp, call_linear
from vggt.layers.rope import RotaryPositionEmbedding2D


class Block(nn.Module):
    """`x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))` on [B, N, dim] tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        rope: RotaryPositionEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor | None = None, linear: LinearFn = call_linear) -> Tensor:
        """Tokens [B, N, dim] (RoPE positions `pos` [B, N, 2]) -> [B, N, dim]; `linear` applies every linear layer."""
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, linear=linear))
        return x + self.ls2(self.mlp(self.norm2(x), linear=linear))
