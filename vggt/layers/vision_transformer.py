"""DINOv2 vision transformer with register tokens: the patch encoder of VGGT."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt.errors import InputError
from vggt.layers.attention import MemEffAttention
from vggt.layers.block import Block
from vggt.layers.mlp import LinearFn, Mlp, call_linear
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.swiglu_ffn import SwiGLUFFNFused

DINO_NORM_EPS = 1e-6
# How VGGT's and Pi3's encoders resample their position table (antialiased, to the exact patch grid) and keep
# their blocks (flat, as their checkpoints name them): the reference's Aggregator passes these to vit_large.
VGGT_ENCODER_OPTIONS = {"interpolate_antialias": True, "interpolate_offset": 0.0, "block_chunks": 0}
# The feed-forward layers `ffn_layer` names.
FFN_LAYERS = {"mlp": Mlp, "swiglu": SwiGLUFFNFused, "swiglufused": SwiGLUFFNFused}


def named_apply(
    fn: Callable[..., object], module: nn.Module, name: str = "", depth_first: bool = True, include_root: bool = False
) -> nn.Module:
    """Call `fn(module=..., name=...)` on every submodule with its dotted name (children first when
    `depth_first`; the root too when `include_root`). Returns `module`."""
    if not depth_first and include_root:
        fn(module=module, name=name)
    for child_name, child in module.named_children():
        named_apply(fn, child, ".".join((name, child_name)) if name else child_name, depth_first, include_root=True)
    if depth_first and include_root:
        fn(module=module, name=name)
    return module


def init_weights_vit_timm(module: nn.Module, name: str = "") -> None:
    """timm's ViT initialisation of one module: linear weights truncated normal (std 0.02), biases zero."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class BlockChunk(nn.ModuleList):
    """Consecutive blocks run as one (DINOv2's `block_chunks`, for FSDP wrapping); `nn.Identity` entries keep the
    checkpoint's block numbering and pass tokens through."""

    def forward(self, x: Tensor, pos: Tensor | None = None, linear: LinearFn = call_linear) -> Tensor:
        """Tokens [B, N, dim] through every block of the chunk."""
        for block in self:
            x = x if isinstance(block, nn.Identity) else block(x, pos=pos, linear=linear)
        return x


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT: [B, C, H, W] normalised images -> [B, (H/p)(W/p), dim] normalised patch tokens.

    The learned position grid covers `img_size / patch_size` patches per side and is resampled (bicubic,
    antialiased when `interpolate_antialias`, with DINOv2's `interpolate_offset` added to the grid for the scale
    factor) to the input's patch grid. `block_fn(dim=..., num_heads=..., mlp_ratio=..., qkv_bias=..., proj_bias=...,
    ffn_bias=..., drop_path=..., norm_layer=..., act_layer=..., ffn_layer=..., init_values=..., qk_norm=...)` builds
    each block; `ffn_layer` is "mlp", "swiglu", "swiglufused" or "identity"; `block_chunks` > 0 groups the blocks
    into that many `BlockChunk`s. `gradient_checkpointing` recomputes each block in the backward pass.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ffn_bias: bool = True,
        proj_bias: bool = True,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        init_values: float | None = None,
        embed_layer: Callable[..., nn.Module] = PatchEmbed,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        block_fn: Callable[..., nn.Module] = Block,
        ffn_layer: str = "mlp",
        block_chunks: int = 1,
        num_register_tokens: int = 0,
        interpolate_antialias: bool = False,
        interpolate_offset: float = 0.1,
        qk_norm: bool = False,
        *,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS and ffn_layer != "identity":
            raise InputError(f"ffn_layer {ffn_layer!r} is not one of {sorted([*FFN_LAYERS, 'identity'])}")
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias, self.interpolate_offset = interpolate_antialias, interpolate_offset
        self.patch_embed = embed_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Kept for checkpoint compatibility (DINOv2's masked-image training); unused and frozen.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        steps = [1.0] * depth if drop_path_uniform else [i / max(depth - 1, 1) for i in range(depth)]
        rates = [drop_path_rate * step for step in steps]  # stochastic depth rising linearly unless uniform
        norm_layer = partial(nn.LayerNorm, eps=DINO_NORM_EPS)
        blocks = [
            block_fn(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                drop_path=rates[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                ffn_layer=FFN_LAYERS.get(ffn_layer, _IdentityFfn),
                init_values=init_values,
                qk_norm=qk_norm,
            )  # fmt: skip
            for i in range(depth)
        ]
        self.blocks = nn.ModuleList(_chunked(blocks, block_chunks))
        self.norm = norm_layer(embed_dim)
        self.gradient_checkpointing = gradient_checkpointing
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        named_apply(init_weights_vit_timm, self)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> Tensor:
        """Position embedding [1, 1 + grid_h * grid_w, dim] for a grid_h x grid_w patch grid."""
        pos_embed = self.pos_embed
        num_patches = pos_embed.shape[1] - 1
        side = int(round(num_patches**0.5))
        if grid_h == side and grid_w == side:
            return pos_embed
        dtype = pos_embed.dtype
        pos_embed = pos_embed.float()
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:  # DINOv2's scale factor of the grid plus the offset (for backward compatibility)
            scale = ((grid_h + self.interpolate_offset) / side, (grid_w + self.interpolate_offset) / side)
            resize: dict = {"scale_factor": scale}
        else:
            resize = {"size": (grid_h, grid_w)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **resize)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def forward(self, images: Tensor, linear: LinearFn = call_linear) -> Tensor:
        """[B, 3, H, W] -> normalised patch tokens [B, (H/p)(W/p), dim]; `linear` applies the blocks' linear layers."""
        B, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size)
        x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, None, linear, use_reentrant=False)
            else:
                x = block(x, linear=linear)
        return self.norm(x)[:, 1 + self.num_register_tokens :]


class _IdentityFfn(nn.Identity):
    """DINOv2's `ffn_layer="identity"`: no feed-forward (its constructor arguments are ignored)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor, linear: LinearFn = call_linear) -> Tensor:
        return x


def _chunked(blocks: list[nn.Module], block_chunks: int) -> list[nn.Module]:
    """The blocks as they are kept: flat for 0 chunks, else in `block_chunks` BlockChunks (numbered as DINOv2's)."""
    if block_chunks <= 0:
        return blocks
    size = -(-len(blocks) // block_chunks)
    return [BlockChunk([nn.Identity()] * start + blocks[start : start + size]) for start in range(0, len(blocks), size)]


# (embed_dim, depth, num_heads) of the DINOv2 sizes.
VIT_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant2": (1536, 40, 24)}


def _vit(size: str, patch_size: int, num_register_tokens: int, kwargs: dict[str, Any]) -> DinoVisionTransformer:
    embed_dim, depth, num_heads = VIT_SIZES[size]
    kwargs = {"mlp_ratio": 4, "block_fn": partial(Block, attn_class=MemEffAttention), **kwargs}
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_small(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-S (384 wide, 12 blocks, 6 heads); `kwargs` go to `DinoVisionTransformer`."""
    return _vit("small", patch_size, num_register_tokens, kwargs)


def vit_base(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-B (768 wide, 12 blocks, 12 heads); `kwargs` go to `DinoVisionTransformer`."""
    return _vit("base", patch_size, num_register_tokens, kwargs)


def vit_large(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-L (1024 wide, 24 blocks, 16 heads): VGGT's patch encoder; `kwargs` go to `DinoVisionTransformer`."""
    return _vit("large", patch_size, num_register_tokens, kwargs)


def vit_giant2(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any) -> DinoVisionTransformer:
    """DINOv2 ViT-g/2 (1536 wide, 40 blocks, 24 heads; the hub's uses `ffn_layer="swiglufused"`)."""
    return _vit("giant2", patch_size, num_register_tokens, kwargs)
