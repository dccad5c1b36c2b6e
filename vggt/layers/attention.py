"""Multi-head self-attention with optional QK-norm and 2D RoPE."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.layers.mlp import LinearFn, LinearRowsFn, call_linear, linear_rows
from vggt.layers.rope import RotaryPositionEmbedding2D

# Row blocks of the fused qkv projection: queries, keys, values.
QUERY, KEY, VALUE = 0, 1, 2


class Attention(nn.Module):
    """Self-attention over [B, N, dim] tokens through `scaled_dot_product_attention`.

    `pos` [B, N, 2] holds (y, x) grid positions when a RoPE module is attached.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        qk_norm: bool = False,
        fused_attn: bool = True,
        rope: RotaryPositionEmbedding2D | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope
        # Dropout of the attention weights and of the output, in training only. `fused_attn` is the reference's
        # switch between fused and explicit softmax attention: both give the same numbers, here always fused.
        self.attn_drop, self.proj_drop = attn_drop, nn.Dropout(proj_drop)
        self.fused_attn = fused_attn

    def forward(self, x: Tensor, pos: Tensor | None = None, linear: LinearFn = call_linear) -> Tensor:
        """Tokens [B, N, dim] -> [B, N, dim]; `linear` applies the projections (LinearFn)."""
        B, N, C = x.shape
        qkv = linear(self.qkv, x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = self._finish(q, QUERY, pos), self._finish(k, KEY, pos)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(linear(self.proj, x.transpose(1, 2).reshape(B, N, C)))

    def _finish(self, x: Tensor, part: int, pos: Tensor | tuple[Tensor, ...] | None) -> Tensor:
        """QK-norm and RoPE of queries or keys [B, heads, N, head_dim]; values pass unchanged.

        `pos`: positions [B, N, 2], or the RoPE tables `rope.tables` made of them.
        """
        if part == VALUE:
            return x
        x = (self.q_norm if part == QUERY else self.k_norm)(x)
        if self.rope is not None and pos is not None:
            x = self.rope.rotate(x, pos) if isinstance(pos, tuple) else self.rope(x, pos)
        return x

    def project_heads(
        self,
        x: Tensor,
        part: int,
        heads: slice,
        pos: Tensor | tuple[Tensor, ...] | None = None,
        rows_of: LinearRowsFn = linear_rows,
    ) -> Tensor:
        """Queries, keys or values (`part`) of heads `heads` for normed tokens [B, n, dim] -> [B, h, n, head_dim].

        The same numbers as `forward` computes for those heads, from only their rows of the projection.
        `pos`: positions [B, n, 2] or their RoPE tables (`rope.tables`). `rows_of` applies rows of the
        projection (LinearRowsFn).
        """
        B, n, _ = x.shape
        start = part * self.num_heads * self.head_dim
        rows = slice(start + heads.start * self.head_dim, start + heads.stop * self.head_dim)
        if type(self.qkv) is nn.Linear:
            out = rows_of(self.qkv, x, rows)
        else:  # a wrapped projection (e.g. LoRA): run it whole so its extra terms are kept
            out = self.qkv(x)[..., rows]
        out = out.reshape(B, n, heads.stop - heads.start, self.head_dim).transpose(1, 2)
        return self._finish(out, part, pos)


class MemEffAttention(Attention):
    """The reference's name for attention; scaled-dot-product attention is already memory-efficient here."""

    def forward(
        self, x: Tensor, attn_bias: Tensor | None = None, pos: Tensor | None = None, linear: LinearFn = call_linear
    ) -> Tensor:
        """Tokens [B, N, dim] -> [B, N, dim]; `attn_bias` (xFormers' block-diagonal mask) is refused."""
        if attn_bias is not None:
            raise InputError("MemEffAttention takes no attn_bias here (that was xFormers' block-diagonal mask)")
        return super().forward(x, pos=pos, linear=linear)
