"""The reference's `track_modules.modules` names over this package's tracker blocks: attention blocks, the MLP,
the residual convolution block and two small helpers. Arguments our blocks cannot honour raise an InputError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from vggt.errors import InputError
from vggt.heads.track_modules.blocks import MLP_RATIO, CrossAttentionBlock, SelfAttentionBlock
from vggt.layers.mlp import Mlp as _LayersMlp

# Channels per group of the residual block's group norm (`norm_fn="group"`).
GROUP_NORM_CHANNELS = 8


def exists(val: object) -> bool:
    """Whether `val` is not None."""
    return val is not None


def default(val: object, d: object) -> object:
    """`val`, or `d` when `val` is None."""
    return val if exists(val) else d


def _refuse_extras(name: str, attn_class: object, block_kwargs: dict[str, Any]) -> None:
    if attn_class is not nn.MultiheadAttention or block_kwargs:
        raise InputError(f"{name} is built on nn.MultiheadAttention with no extra arguments; leave attn_class and "
                         f"{sorted(block_kwargs) or 'the keywords'} out")  # fmt: skip


class AttnBlock(SelfAttentionBlock):
    """Self-attention and MLP on [B, L, hidden_size] tokens (`SelfAttentionBlock` under the reference's name)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        attn_class: Callable[..., nn.Module] = nn.MultiheadAttention,
        mlp_ratio: float = MLP_RATIO,
        **block_kwargs: Any,
    ) -> None:
        _refuse_extras("AttnBlock", attn_class, block_kwargs)
        super().__init__(hidden_size, num_heads, mlp_ratio)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, L, hidden_size] -> [B, L, hidden_size]; attention masks are not supported (None)."""
        if mask is not None:
            raise InputError("AttnBlock takes no attention mask here; pass mask=None")
        return super().forward(x)


class CrossAttnBlock(CrossAttentionBlock):
    """Tokens [B, L, hidden_size] attend to a context [B, M, context_dim] (`CrossAttentionBlock`); the context
    has the tokens' width here."""

    def __init__(
        self, hidden_size: int, context_dim: int, num_heads: int = 1, mlp_ratio: float = MLP_RATIO, **block_kwargs: Any
    ) -> None:
        _refuse_extras("CrossAttnBlock", nn.MultiheadAttention, block_kwargs)
        if context_dim != hidden_size:
            raise InputError(f"CrossAttnBlock needs context_dim equal to hidden_size ({context_dim} != {hidden_size})")
        super().__init__(hidden_size, num_heads, mlp_ratio)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, L, C], context [B, M, C] -> [B, L, C]; attention masks are not supported (None)."""
        if mask is not None:
            raise InputError("CrossAttnBlock takes no attention mask here; pass mask=None")
        return super().forward(x, context)


class Mlp(_LayersMlp):
    """`fc2(act(fc1(x)))` on [..., in_features]: `vggt.layers.Mlp` with the reference tracker's arguments.

    `norm_layer` is accepted and, as in the reference, not applied; 1x1 convolutions (`use_conv`) are not provided.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        bias: bool = True,
        drop: float = 0.0,
        use_conv: bool = False,
    ) -> None:
        if use_conv:
            raise InputError("this Mlp has linear layers only; pass use_conv=False")
        super().__init__(in_features, hidden_features, out_features, act_layer, drop, bias)


def _norm(norm_fn: str, planes: int) -> nn.Module:
    if norm_fn == "group":
        return nn.GroupNorm(max(planes // GROUP_NORM_CHANNELS, 1), planes)
    if norm_fn == "batch":
        return nn.BatchNorm2d(planes)
    if norm_fn == "instance":
        return nn.InstanceNorm2d(planes)
    if norm_fn == "none":
        return nn.Identity()
    raise InputError(f"norm_fn {norm_fn!r} is not one of 'group', 'batch', 'instance', 'none'")


class ResidualBlock(nn.Module):
    """Two convolutions with norm and ReLU plus a shortcut (a strided 1x1 convolution and norm when `stride` > 1):
    [B, in_planes, H, W] -> [B, planes, H / stride, W / stride]."""

    def __init__(
        self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1, kernel_size: int = 3
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size, padding=padding, stride=stride, padding_mode="zeros")
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, padding=padding, padding_mode="zeros")
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = _norm(norm_fn, planes), _norm(norm_fn, planes)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm_fn, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        return self.relu((x if self.downsample is None else self.downsample(x)) + y)
