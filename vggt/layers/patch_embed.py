"""Non-overlapping patch embedding by a strided convolution."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def make_2tuple(x: int | tuple[int, int]) -> tuple[int, int]:
    """`(x, x)` for an int, a 2-tuple unchanged (image and patch sizes as (height, width))."""
    if isinstance(x, tuple):
        if len(x) != 2:
            raise ValueError(f"expected an int or a (height, width) pair, got {x!r}")
        return x
    return (x, x)


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, (H / p) * (W / p), dim] patch tokens, row-major ([B, H / p, W / p, dim] when not
    `flatten_embedding`), normalised by `norm_layer(dim)` when one is given.

    `img_size` is the training image size (kept as `img_size`, with the patch grid as `patches_resolution`);
    any size divisible by the patch size is embedded.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[[int], nn.Module] | None = None,
        flatten_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = make_2tuple(img_size)
        self.patch_size = patch_size
        patch = make_2tuple(patch_size)
        self.patches_resolution = (self.img_size[0] // patch[0], self.img_size[1] // patch[1])
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans, self.embed_dim, self.flatten_embedding = in_chans, embed_dim, flatten_embedding
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        height, width = x.shape[-2:]
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x if self.flatten_embedding else x.reshape(-1, height, width, self.embed_dim)
