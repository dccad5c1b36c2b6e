"""Loading photos into VGGT's input tensor, and mapping cameras back to the original photos.

Preprocessing (as VGGT's reference `load_and_preprocess_images`), with T = 518 and patch P = 14:
- "crop": resize (bicubic) to width T and height round(H * T / W / P) * P; centre-crop the height to T if taller.
- "pad": resize so that the longer side is T and the shorter one round(... / P) * P; pad to T x T with white.
- "square": pad the photo to a square with black, then resize to T x T (reference default T = 1024).
When photos of different sizes end up with different shapes, each is padded (white, centred) to the largest.

Every step is a per-axis scale plus shift, kept as a `PreprocessTransform`, so predictions on the model input
(pixels, intrinsics) can be mapped back to the original photo.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vggt.utils.images import read_image_rgb

logger = logging.getLogger(__name__)

Array = TypeVar("Array", np.ndarray, torch.Tensor)
PreprocessMode = Literal["crop", "pad", "square"]

DEFAULT_TARGET_SIZE = 518  # VGGTConfig.img_size
DEFAULT_SQUARE_TARGET_SIZE = 1024  # the reference's default for `load_and_preprocess_images_square`
PATCH_SIZE = 14  # VGGTConfig.patch_size
PREPROCESS_MODES = ("crop", "pad", "square")
PAD_VALUE = 1.0  # white, for "pad" mode and for batching photos of different shapes
SQUARE_BACKGROUND = (0, 0, 0)  # black, for "square" mode


@dataclass(frozen=True)
class PreprocessTransform:
    """Where the pixels of one original photo land in the model input: `input_xy = scale * original_xy + offset`.

    Pixel coordinates are `(x, y) = (column, row)` with pixel centres at integers, as in `vggt.utils.geometry`.
    A resize from W to W' pixels maps pixel edges to pixel edges, `x' + 0.5 = (W' / W) (x + 0.5)`, so its scale is
    `W' / W` and its offset `(W' / W - 1) / 2`; cropping and padding then shift the offset by whole pixels.
    The original photo is the upright one (EXIF orientation applied).
    """

    original_size: tuple[int, int]  # (width, height) of the original photo
    input_size: tuple[int, int]  # (width, height) of the preprocessed image
    scale: tuple[float, float]  # (sx, sy)
    offset: tuple[float, float]  # (ox, oy), in input pixels

    def matrix(self) -> np.ndarray:
        """[3, 3] float64 matrix taking homogeneous original pixels to input pixels."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        return np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])

    def original_to_input(self, points_xy: Array) -> Array:
        """Map [..., 2] pixel coordinates of the original photo to the model input."""
        scale, offset = _like(self.scale, points_xy), _like(self.offset, points_xy)
        return points_xy * scale + offset

    def input_to_original(self, points_xy: Array) -> Array:
        """Map [..., 2] pixel coordinates of the model input to the original photo."""
        scale, offset = _like(self.scale, points_xy), _like(self.offset, points_xy)
        return (points_xy - offset) / scale

    def shifted(self, dx: float, dy: float, input_size: tuple[int, int]) -> PreprocessTransform:
        """The transform after padding by (dx, dy) pixels at the left/top into an image of `input_size`."""
        ox, oy = self.offset
        return dataclasses.replace(self, offset=(ox + dx, oy + dy), input_size=input_size)


@dataclass
class LoadedImages:
    """A batch of preprocessed photos and how each relates to its original."""

    images: torch.Tensor  # [N, 3, H, W], RGB in [0, 1]
    transforms: list[PreprocessTransform]
    paths: list[Path]

    @property
    def original_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each original (upright) photo."""
        return [t.original_size for t in self.transforms]


def load_images(
    image_paths: Sequence[str | os.PathLike],
    mode: PreprocessMode = "crop",
    target_size: int = DEFAULT_TARGET_SIZE,
    patch_size: int = PATCH_SIZE,
    pad_to: tuple[int, int] | None = None,
    exif_orientation: bool = True,
) -> LoadedImages:
    """Read and preprocess photos for VGGT (see the module docstring), keeping how to map results back.

    `pad_to` (width, height), at least every image's `input_size`, pads every image (white, centred) to that size,
    so that batches loaded separately share one shape. `exif_orientation=False` reads the pixels as stored, as the
    reference package's loaders do (a portrait photo from a phone may then come out sideways).

    Raises:
        ValueError: no paths, unknown mode, bad target size, or a file that cannot be read (message names it).
    """
    if isinstance(image_paths, (str, os.PathLike)):
        raise ValueError(f"expected a list of image paths, got the single path {image_paths!r}; wrap it in a list")
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("At least 1 image is required: the list of image paths is empty")
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}")
    if target_size <= 0 or (mode != "square" and target_size % patch_size):
        raise ValueError(f"target_size must be a positive multiple of the patch size {patch_size}, got {target_size}")

    images, transforms = [], []
    for path in paths:
        photo = read_image_rgb(path, exif_orientation=exif_orientation)
        if mode == "square":
            image, transform = _square(photo, target_size)
        else:
            image, transform = _crop_or_pad(photo, path, mode, target_size, patch_size)
        images.append(image)
        transforms.append(transform)

    shapes = {tuple(image.shape[1:]) for image in images}
    if pad_to is not None:
        images, transforms = _pad_to_common_shape(images, transforms, (pad_to[1], pad_to[0]))
    elif len(shapes) > 1:
        logger.warning("images have different shapes %s; padding them (white) to the largest", sorted(shapes))
        images, transforms = _pad_to_common_shape(images, transforms)
    return LoadedImages(images=torch.stack(images), transforms=transforms, paths=paths)


def load_and_preprocess_images(
    image_path_list: Sequence[str | os.PathLike],
    mode: Literal["crop", "pad"] = "crop",
    *,
    exif_orientation: bool = True,
) -> torch.Tensor:
    """VGGT's reference loader: [N, 3, H, W] float32 RGB in [0, 1] (see `load_images` for the original sizes).

    `exif_orientation=False` gives the reference's exact tensors (it ignores the EXIF orientation tag).
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    return load_images(image_path_list, mode=mode, exif_orientation=exif_orientation).images


def load_and_preprocess_images_square(
    image_path_list: Sequence[str | os.PathLike],
    target_size: int = DEFAULT_SQUARE_TARGET_SIZE,
    *,
    exif_orientation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad each photo to a square (black) and resize it to `target_size` (`exif_orientation` as in
    `load_and_preprocess_images`).

    Returns:
        images [N, 3, T, T], and [N, 6] float `(x1, y1, x2, y2, width, height)`: the photo's box in the square
        image (pixel-edge coordinates) and its original size.
    """
    loaded = load_images(image_path_list, mode="square", target_size=target_size, exif_orientation=exif_orientation)
    coords = []
    for transform in loaded.transforms:
        width, height = transform.original_size
        scale = target_size / max(width, height)
        left, top = (max(width, height) - width) // 2, (max(width, height) - height) // 2
        coords.append([left * scale, top * scale, (left + width) * scale, (top + height) * scale, width, height])
    return loaded.images, torch.tensor(coords, dtype=torch.float32)


def rescale_intrinsics_to_original(
    intrinsics: Array, transforms: PreprocessTransform | Sequence[PreprocessTransform]
) -> Array:
    """Intrinsics predicted on the model input, re-expressed for the original photos.

    With `A` the transform's matrix (`input_px = A original_px`) and `input_px ~ K X`, the original pixels are
    `A^-1 K X`, so `K_original = A^-1 K`: `fx / sx`, `fy / sy`, `(cx - ox) / sx`, `(cy - oy) / sy`.

    Args:
        intrinsics: [..., N, 3, 3] for a sequence of N transforms, or [..., 3, 3] for one transform.
        transforms: from `load_images(...).transforms`.

    Returns:
        intrinsics of the same shape and type.
    """
    return _apply_to_intrinsics(intrinsics, transforms, inverse=True)


def rescale_intrinsics_to_input(
    intrinsics: Array, transforms: PreprocessTransform | Sequence[PreprocessTransform]
) -> Array:
    """Intrinsics of original photos re-expressed for the preprocessed images: `K_input = A K` (see above)."""
    return _apply_to_intrinsics(intrinsics, transforms, inverse=False)


# --- internals ----------------------------------------------------------------------------------------------------


def resized_size(width: int, height: int, mode: str, target_size: int, patch_size: int) -> tuple[int, int]:
    """(width, height) a photo of `width` x `height` is resized to in "crop" or "pad" mode, before the crop or
    padding (same arithmetic, and Python's round-half-to-even, as the reference, so sizes match it exactly)."""
    if mode == "crop" or width >= height:
        new_width = target_size
        new_height = round(height * (new_width / width) / patch_size) * patch_size
    else:
        new_height = target_size
        new_width = round(width * (new_height / height) / patch_size) * patch_size
    return new_width, new_height


def input_size(width: int, height: int, mode: str, target_size: int, patch_size: int) -> tuple[int, int]:
    """(width, height) of the model input made of a `width` x `height` photo by `load_images` (before photos of
    different shapes are padded to a common one)."""
    if mode == "square":
        return target_size, target_size
    new_width, new_height = resized_size(width, height, mode, target_size, patch_size)
    if mode == "pad":
        return max(new_width, target_size), max(new_height, target_size)
    return new_width, min(new_height, target_size)


def _crop_or_pad(
    photo: Image.Image, path: Path, mode: str, target_size: int, patch_size: int
) -> tuple[torch.Tensor, PreprocessTransform]:
    width, height = photo.size
    new_width, new_height = resized_size(width, height, mode, target_size, patch_size)
    if new_width == 0 or new_height == 0:
        raise ValueError(
            f"image {path} ({width}x{height}) is too elongated: one side would shrink below one {patch_size}-pixel "
            "patch; crop it to a less extreme aspect ratio"
        )

    image = _to_tensor(photo.resize((new_width, new_height), Image.Resampling.BICUBIC))
    scale = (new_width / width, new_height / height)
    transform = PreprocessTransform(
        original_size=(width, height),
        input_size=(new_width, new_height),
        scale=scale,
        offset=((scale[0] - 1) / 2, (scale[1] - 1) / 2),
    )

    if mode == "crop" and new_height > target_size:
        top = (new_height - target_size) // 2
        image = image[:, top : top + target_size, :]
        transform = transform.shifted(0, -top, input_size=(new_width, target_size))
    if mode == "pad":
        image, transform = _pad(image, transform, target_size, target_size)
    return image, transform


def _square(photo: Image.Image, target_size: int) -> tuple[torch.Tensor, PreprocessTransform]:
    width, height = photo.size
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    square = Image.new("RGB", (side, side), SQUARE_BACKGROUND)
    square.paste(photo, (left, top))
    image = _to_tensor(square.resize((target_size, target_size), Image.Resampling.BICUBIC))
    scale = target_size / side
    transform = PreprocessTransform(
        original_size=(width, height),
        input_size=(target_size, target_size),
        scale=(scale, scale),
        offset=(scale * (left + 0.5) - 0.5, scale * (top + 0.5) - 0.5),
    )
    return image, transform


def _pad(
    image: torch.Tensor, transform: PreprocessTransform, height: int, width: int
) -> tuple[torch.Tensor, PreprocessTransform]:
    """Centre `image` [3, h, w] in a white [3, height, width] canvas."""
    pad_h, pad_w = height - image.shape[1], width - image.shape[2]
    if pad_h <= 0 and pad_w <= 0:
        return image, transform
    top, left = pad_h // 2, pad_w // 2
    image = F.pad(image, (left, pad_w - left, top, pad_h - top), mode="constant", value=PAD_VALUE)
    return image, transform.shifted(left, top, input_size=(width, height))


def _pad_to_common_shape(
    images: list[torch.Tensor], transforms: list[PreprocessTransform], shape_hw: tuple[int, int] | None = None
) -> tuple[list[torch.Tensor], list[PreprocessTransform]]:
    height = max(image.shape[1] for image in images) if shape_hw is None else shape_hw[0]
    width = max(image.shape[2] for image in images) if shape_hw is None else shape_hw[1]
    if any(image.shape[1] > height or image.shape[2] > width for image in images):
        raise ValueError(f"pad_to {(width, height)} is smaller than an image: {[tuple(i.shape[1:]) for i in images]}")
    padded = [_pad(image, transform, height, width) for image, transform in zip(images, transforms)]
    return [image for image, _ in padded], [transform for _, transform in padded]


def _to_tensor(photo: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> [3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


def _like(values: tuple[float, ...], reference: Array) -> Array:
    if isinstance(reference, torch.Tensor):
        dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
        return torch.tensor(values, dtype=dtype, device=reference.device)
    return np.asarray(values, dtype=np.result_type(reference, np.float32))


def _apply_to_intrinsics(
    intrinsics: Array, transforms: PreprocessTransform | Sequence[PreprocessTransform], inverse: bool
) -> Array:
    single = isinstance(transforms, PreprocessTransform)
    transforms = [transforms] if single else list(transforms)
    if intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must have shape [..., 3, 3], got {tuple(intrinsics.shape)}")
    if not single and (intrinsics.ndim < 3 or intrinsics.shape[-3] != len(transforms)):
        raise ValueError(
            f"intrinsics {tuple(intrinsics.shape)} must be [..., N, 3, 3] for the N = {len(transforms)} transforms"
        )
    matrices = np.stack([t.matrix() for t in transforms])  # [N, 3, 3]
    if inverse:
        matrices = np.linalg.inv(matrices)
    if single:
        matrices = matrices[0]
    if isinstance(intrinsics, torch.Tensor):
        return torch.from_numpy(matrices).to(device=intrinsics.device, dtype=intrinsics.dtype) @ intrinsics
    return (matrices @ intrinsics).astype(np.result_type(intrinsics, np.float32), copy=False)
