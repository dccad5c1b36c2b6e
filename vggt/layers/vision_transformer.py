"""DINOv2 vision transformer with register tokens: the patch encoder of VGGT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt.layers.block import Block
from vggt.layers.mlp import LinearFn, call_linear
from vggt.layers.patch_embed import PatchEmbed

DINO_NORM_EPS = 1e-6


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT: [B, 3, H, W] normalised images -> [B, (H/p)(W/p), dim] normalised patch tokens.

    The learned position grid covers `img_size / patch_size` patches per side and is resampled
    (bicubic, antialiased) to the input's patch grid.
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Kept for checkpoint compatibility (DINOv2's masked-image training); unused and frozen.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=DINO_NORM_EPS)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=DINO_NORM_EPS)
        self.gradient_checkpointing = gradient_checkpointing
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

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
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", antialias=True)
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
