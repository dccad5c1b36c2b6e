"""Image preprocessing of the VGGT-Omega and Pi3 / Pi3X references: which size each photo is resized to.

- VGGT-Omega ("balanced"): photos whose height / width lies outside [0.5, 2] are centre-cropped into it; each is
  then resized (bicubic) to the patch grid whose token count is closest to (resolution / patch)^2 at its aspect
  ratio; photos of different sizes are padded (centred, with white) to a common size.
- Pi3 / Pi3X ("pixel limit"): every photo is resized (Lanczos) to one size, derived from the FIRST photo: the
  largest multiple-of-14 grid near its aspect ratio whose pixel count stays within the limit (255,000).
Both return images in [0, 1] as [S, 3, H, W].
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

OMEGA_ASPECT_RANGE = (0.5, 2.0)  # height / width
PI3_PIXEL_LIMIT = 255_000
PI3_PATCH = 14


def omega_target_hw(width: int, height: int, resolution: int = 512, patch_size: int = 16) -> tuple[int, int]:
    """(height, width) of the patch grid with about (resolution / patch_size)^2 tokens at this aspect ratio."""
    tokens = (resolution // patch_size) ** 2
    aspect = height / max(width, 1)
    cols = math.sqrt(tokens / aspect)
    rows = tokens / cols
    return max(1, round(rows)) * patch_size, max(1, round(cols)) * patch_size


def crop_to_aspect_range(image: Image.Image, low: float = 0.5, high: float = 2.0) -> Image.Image:
    """Centre crop of a photo whose height / width lies outside [low, high] to the nearest bound."""
    width, height = image.size
    aspect = height / max(width, 1)
    if aspect < low:
        crop = min(width, max(1, round(height / low)))
        left = max((width - crop) // 2, 0)
        return image.crop((left, 0, left + crop, height))
    if aspect > high:
        crop = min(height, max(1, round(width * high)))
        top = max((height - crop) // 2, 0)
        return image.crop((0, top, width, top + crop))
    return image


def pi3_target_hw(width: int, height: int, pixel_limit: int = PI3_PIXEL_LIMIT) -> tuple[int, int]:
    """(height, width), multiples of 14, of the largest grid near the photo's aspect ratio within `pixel_limit`."""
    scale = math.sqrt(pixel_limit / (width * height)) if width * height > 0 else 1.0
    target_w, target_h = width * scale, height * scale
    cols, rows = round(target_w / PI3_PATCH), round(target_h / PI3_PATCH)
    while cols * PI3_PATCH * rows * PI3_PATCH > pixel_limit:
        if cols / rows > target_w / target_h:
            cols -= 1
        else:
            rows -= 1
    return max(1, rows) * PI3_PATCH, max(1, cols) * PI3_PATCH


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def _open_rgb(path: str | os.PathLike, white_background: bool) -> Image.Image:
    with Image.open(path) as image:
        if white_background and image.mode == "RGBA":
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        return image.convert("RGB")


def load_omega_images(paths: Sequence[str | os.PathLike], resolution: int = 512, patch_size: int = 16) -> torch.Tensor:
    """VGGT-Omega's preprocessing (see the module docstring): [S, 3, H, W] in [0, 1]."""
    images = []
    for path in paths:
        image = crop_to_aspect_range(_open_rgb(path, white_background=True), *OMEGA_ASPECT_RANGE)
        height, width = omega_target_hw(*image.size, resolution, patch_size)
        images.append(_to_tensor(image.resize((width, height), Image.Resampling.BICUBIC)))
    max_h, max_w = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    padded = []
    for image in images:
        dh, dw = max_h - image.shape[1], max_w - image.shape[2]
        padding = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
        padded.append(torch.nn.functional.pad(image, padding, value=1.0))
    return torch.stack(padded)


def load_pi3_images(paths: Sequence[str | os.PathLike], pixel_limit: int = PI3_PIXEL_LIMIT) -> torch.Tensor:
    """Pi3's preprocessing (see the module docstring): [S, 3, H, W] in [0, 1]."""
    photos = [_open_rgb(path, white_background=False) for path in paths]
    height, width = pi3_target_hw(*photos[0].size, pixel_limit)
    return torch.stack([_to_tensor(p.resize((width, height), Image.Resampling.LANCZOS)) for p in photos])
