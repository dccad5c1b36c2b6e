"""Non-overlapping patch embedding by a strided convolution."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """[B, 3, H, W] -> [B, (H / p) * (W / p), dim] patch tokens, row-major."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 1024) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
