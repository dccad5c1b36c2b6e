"""DINOv3-style transformer pieces: the patch encoder and blocks of VGGT-Omega.

They differ from the DINOv2 pieces of `vision_transformer.py` in three ways that the released weights depend on:
- positions enter as an axial RoPE on the patch tokens only (no learned position table); its frequencies are the
  persistent buffer `periods` [head_dim / 4], and coordinates are pixel centres on [-1, 1] divided by the longer
  side of the patch grid ("max" normalisation);
- the fused qkv projection has no key bias: the persistent buffer `bias_mask` zeroes the middle third of the bias;
- the encoder keeps "storage" (register) tokens and a class token in front of the patches; norms use eps 1e-5.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.layers.block import Block
from vggt.layers.mlp import LinearFn, call_linear
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.rope import _rotate_half

NORM_EPS = 1e-5


class MaskedKeyBiasLinear(nn.Linear):
    """The fused qkv projection [..., dim] -> [..., 3 * dim] whose key rows get no bias (`bias * bias_mask`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3:
            raise ValueError(f"a fused qkv projection needs 3 * dim outputs, got {out_features}")
        if self.bias is not None:
            mask = torch.ones(out_features)
            mask[out_features // 3 : 2 * out_features // 3] = 0.0
            self.register_buffer("bias_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)


class AxialRope(nn.Module):
    """sin and cos tables [H * W, head_dim] of the axial RoPE for an H x W patch grid.

    Angles are `2 pi * coordinate / period`: the first head_dim / 4 frequencies read the row coordinate, the next
    the column, and the pair is repeated so that `rotate_half` pairs channel i with i + head_dim / 2.
    """

    def __init__(self, embed_dim: int, num_heads: int, base: float = 100.0) -> None:
        super().__init__()
        if embed_dim % (4 * num_heads):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 * num_heads ({4 * num_heads})")
        head_dim = embed_dim // num_heads
        exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", base**exponents)

    def forward(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        device = self.periods.device
        longest = max(height, width)
        rows = torch.arange(0.5, height, device=device, dtype=torch.float32) / longest
        cols = torch.arange(0.5, width, device=device, dtype=torch.float32) / longest
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1) * 2.0 - 1.0  # [HW, 2]
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]  # [HW, 2, head_dim / 4]
        angles = angles.flatten(1, 2).tile(2)  # [HW, head_dim]
        return torch.sin(angles), torch.cos(angles)


class PrefixRopeAttention(nn.Module):
    """Self-attention over [B, N, dim] tokens; RoPE `(sin, cos)` [HW, head_dim] rotates the last HW tokens only.

    The tokens in front (class, register, camera tokens) keep no position. Rotation runs in float32.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, mask_key_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        linear = MaskedKeyBiasLinear if mask_key_bias else nn.Linear
        self.qkv = linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor, pos: tuple[Tensor, Tensor] | None = None, linear: LinearFn = call_linear) -> Tensor:
        """Tokens [B, N, dim] -> [B, N, dim]; `linear` applies the projections (as in `Attention`)."""
        B, N, C = x.shape
        q, k, v = linear(self.qkv, x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if pos is not None:
            q, k = _rotate_suffix(q, pos), _rotate_suffix(k, pos)
        x = F.scaled_dot_product_attention(q, k, v)
        return linear(self.proj, x.transpose(1, 2).reshape(B, N, C))


def _rotate_suffix(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """RoPE on the last HW tokens of x [B, heads, N, head_dim], in the tables' dtype."""
    sin, cos = rope
    prefix = x.shape[-2] - sin.shape[-2]
    rotated = x[:, :, prefix:].to(sin.dtype)
    rotated = (rotated * cos + _rotate_half(rotated) * sin).to(x.dtype)
    return torch.cat((x[:, :, :prefix], rotated), dim=-2)


class PrefixRopeBlock(Block):
    """Pre-norm block (LayerScale, GELU MLP) whose attention is `PrefixRopeAttention`; `pos` is `(sin, cos)`."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False, init_values: float = 1e-5
    ) -> None:
        super().__init__(
            dim, num_heads, mlp_ratio, init_values=init_values, norm_layer=partial(nn.LayerNorm, eps=NORM_EPS)
        )
        self.attn = PrefixRopeAttention(dim, num_heads, qk_norm=qk_norm)


class DinoV3Encoder(nn.Module):
    """DINOv3 ViT with storage tokens: [B, 3, H, W] normalised images -> normed patch tokens [B, (H/p)(W/p), dim]."""

    def __init__(
        self,
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_storage_tokens: int = 4,
        rope_base: float = 100.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, num_storage_tokens, embed_dim))
        # Kept for checkpoint compatibility (masked-image training); it adds nothing at inference.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.rope_embed = AxialRope(embed_dim, num_heads, base=rope_base)
        self.blocks = nn.ModuleList(PrefixRopeBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=NORM_EPS)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.storage_tokens, std=0.02)

    def forward(self, images: Tensor) -> Tensor:
        B, _, H, W = images.shape
        x = self.patch_embed(images)
        prefix = torch.cat((self.cls_token, self.storage_tokens), dim=1).expand(B, -1, -1)
        x = torch.cat((prefix, x), dim=1)
        rope = self.rope_embed(H // self.patch_size, W // self.patch_size)
        for block in self.blocks:
            x = block(x, pos=rope)
        return self.norm(x)[:, prefix.shape[1] :]
