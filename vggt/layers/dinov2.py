"""The DINOv2 names the reference's `vggt.layers` exports: ViT factories, the xFormers-era block and attention
names, SwiGLU feed-forward layers, the RoPE position helper and stochastic depth.

They build this package's own modules (`DinoVisionTransformer`, `Block`, `Attention`); the reference names are
thin adapters over them. Arguments the implementation cannot honour raise an `InputError` naming them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.layers.attention import Attention
from vggt.layers.block import Block
from vggt.layers.rope import patch_positions
from vggt.layers.vision_transformer import DinoVisionTransformer

# (embed_dim, depth, num_heads) of the DINOv2 sizes.
VIT_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant2": (1536, 40, 24)}
# The reference DinoVisionTransformer's arguments and the values at which our encoder behaves the same; any other
# value is refused.
_HONOURED = {"block_chunks": (0, 1), "interpolate_antialias": (True,), "interpolate_offset": (0.0,)}
_HONOURED |= {"qkv_bias": (True,), "proj_bias": (True,), "ffn_bias": (True,), "ffn_layer": ("mlp",)}
_HONOURED |= {"drop_path_rate": (0.0,), "qk_norm": (False,), "in_chans": (3,)}


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob` (training only),
    scaling the kept ones by 1 / (1 - drop_prob). x: [B, ...]."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """`drop_path` as a module."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)


class SwiGLUFFN(nn.Module):
    """`w3(silu(a) * b)` with `(a, b) = w12(x)`: [..., in_features] -> [..., out_features]."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class SwiGLUFFNFused(SwiGLUFFN):
    """`SwiGLUFFN` whose hidden width is 2/3 of the given one, rounded up to a multiple of 8 (DINOv2's sizing)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        hidden = hidden_features or in_features
        super().__init__(in_features, (int(hidden * 2 / 3) + 7) // 8 * 8, out_features, act_layer, drop, bias)


class MemEffAttention(Attention):
    """The reference's name for attention; scaled-dot-product attention is already memory-efficient here."""

    def forward(self, x: Tensor, attn_bias: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        if attn_bias is not None:
            raise InputError("MemEffAttention takes no attn_bias here (that was xFormers' block-diagonal mask)")
        return super().forward(x, pos=pos)


class NestedTensorBlock(Block):
    """The reference's name for the transformer block; a list of token tensors runs through it one by one."""

    def forward(self, x_or_x_list: Tensor | list[Tensor], pos: Tensor | None = None) -> Tensor | list[Tensor]:
        if isinstance(x_or_x_list, list):
            return [super(NestedTensorBlock, self).forward(x, pos=pos) for x in x_or_x_list]
        return super().forward(x_or_x_list, pos=pos)


class PositionGetter:
    """Callable giving (y, x) patch positions [batch, height * width, 2] (see `vggt.layers.rope.patch_positions`)."""

    def __call__(self, batch_size: int, height: int, width: int, device: torch.device | str) -> Tensor:
        return patch_positions(batch_size, height, width, device)


def _vit(size: str, patch_size: int, num_register_tokens: int, kwargs: dict[str, Any]) -> DinoVisionTransformer:
    embed_dim, depth, num_heads = VIT_SIZES[size]
    kwargs.pop("block_fn", None)  # the reference passes Block with MemEffAttention: ours already
    refused = sorted(k for k, v in kwargs.items() if k in _HONOURED and v not in _HONOURED[k])
    refused += sorted(k for k in kwargs if k not in _HONOURED and k not in ("img_size", "init_values", "mlp_ratio"))
    if refused:
        raise InputError(
            "vit_{size} cannot honour {refused}: this DINOv2 encoder has an MLP feed-forward with biases, no QK "
            "norm and antialiased position interpolation; leave those arguments out",
            size=size,
            refused=", ".join(refused),
        )
    return DinoVisionTransformer(
        img_size=kwargs.get("img_size", 224),
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=kwargs.get("mlp_ratio", 4.0),
        num_register_tokens=num_register_tokens,
        init_values=kwargs.get("init_values"),
    )


def vit_small(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-S (384 wide, 12 blocks, 6 heads)."""
    return _vit("small", patch_size, num_register_tokens, kwargs)


def vit_base(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-B (768 wide, 12 blocks, 12 heads)."""
    return _vit("base", patch_size, num_register_tokens, kwargs)


def vit_large(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-L (1024 wide, 24 blocks, 16 heads): VGGT's patch encoder."""
    return _vit("large", patch_size, num_register_tokens, kwargs)


def vit_giant2(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-g/2 (1536 wide, 40 blocks, 24 heads) with an MLP feed-forward (the hub's uses SwiGLU: refused)."""
    return _vit("giant2", patch_size, num_register_tokens, kwargs)


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
