"""Pre-norm transformer block: attention and MLP residuals, each with LayerScale (and stochastic depth)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from vggt.layers.attention import Attention
from vggt.layers.drop_path import DropPath
from vggt.layers.layer_scale import LayerScale
from vggt.layers.mlp import LinearFn, Mlp, call_linear
from vggt.layers.rope import RotaryPositionEmbedding2D


class Block(nn.Module):
    """`x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))` on [B, N, dim] tokens.

    `attn_class(dim, num_heads=..., qkv_bias=..., proj_bias=..., attn_drop=..., proj_drop=drop, qk_norm=...,
    fused_attn=..., rope=...)` builds the attention and `ffn_layer(in_features=dim, hidden_features=dim * mlp_ratio,
    act_layer=..., drop=..., bias=ffn_bias)` the feed-forward; `drop_path` is each residual's stochastic depth
    (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        attn_class: Callable[..., nn.Module] = Attention,
        ffn_layer: Callable[..., nn.Module] = Mlp,
        qk_norm: bool = False,
        fused_attn: bool = True,
        rope: RotaryPositionEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_class(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            qk_norm=qk_norm,
            fused_attn=fused_attn,
            rope=rope,
        )
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = ffn_layer(in_features=dim, hidden_features=hidden, act_layer=act_layer, drop=drop, bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor | None = None, linear: LinearFn = call_linear) -> Tensor:
        """Tokens [B, N, dim] (RoPE positions `pos` [B, N, 2]) -> [B, N, dim]; `linear` applies every linear layer
        (passed on only when it is not the plain call, so that any `attn_class` and `ffn_layer` fit)."""
        extra = {} if linear is call_linear else {"linear": linear}
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), pos=pos, **extra)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x), **extra)))


class NestedTensorBlock(Block):
    """The reference's name for the transformer block; a list of token tensors runs through it one by one."""

    def forward(
        self, x_or_x_list: Tensor | list[Tensor], pos: Tensor | None = None, linear: LinearFn = call_linear
    ) -> Tensor | list[Tensor]:
        """Tokens [B, N, dim], or a list of such tensors -> the same structure of outputs."""
        if isinstance(x_or_x_list, list):
            return [super(NestedTensorBlock, self).forward(x, pos=pos, linear=linear) for x in x_or_x_list]
        return super().forward(x_or_x_list, pos=pos, linear=linear)
