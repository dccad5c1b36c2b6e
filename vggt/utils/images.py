"""Reading image files robustly into upright 8-bit RGB.

Every failure (missing file, not an image, corrupt or truncated data) is an `ImageReadError`, a `ValueError`
whose message names the file, so that command-line tools can report it in one line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vggt.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Modes that carry an alpha channel; such images are composited on white, as VGGT's reference loader does for RGBA.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# 8-bit range / 16-bit range: maps 0 -> 0 and 65535 -> 255.
_UINT16_TO_UINT8 = 255.0 / 65535.0
_UINT16_MAX = 65535
_WHITE = (255, 255, 255, 255)
# The EXIF orientation tag, and the orientations that swap width and height (90 or 270 degrees, flipped or not).
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class ImageReadError(InputError):
    """An image file could not be read; the message names the file and the reason."""


def read_image_rgb(path: str | os.PathLike, exif_orientation: bool = True) -> Image.Image:
    """Read one image file as an upright 8-bit RGB PIL image.

    - applies the EXIF orientation tag (so width and height are those of the image as displayed), unless
      `exif_orientation` is False (the reference package's loaders keep the stored orientation);
    - alpha (RGBA, LA, PA, palette or RGB with a transparent colour) is composited on white;
    - palette, grayscale, bilevel and CMYK images are converted to RGB;
    - 16-bit and 32-bit integer grayscale (`I;16*`, `I`) is rescaled from the 16-bit range to 8 bits, not clipped.

    Raises:
        ImageReadError: missing file, not an image, corrupt or truncated data, unsupported pixel format.
    """
    path = Path(path)
    with _image_errors(path), Image.open(path) as opened:
        opened.load()  # decode now: truncated or corrupt data fails here, not later
        image = _upright(opened, path) if exif_orientation else opened.copy()
    try:
        return _to_rgb(image, path)
    except ImageReadError:
        raise
    except Exception as error:
        raise ImageReadError(
            "cannot convert image {path} (mode {mode}) to RGB: {error}", path=path, mode=image.mode, error=error
        ) from error


@contextmanager
def _image_errors(path: Path) -> Iterator[None]:
    """Pillow's errors while reading `path` as one `ImageReadError` that names the file and the way out."""
    if not path.exists():
        raise ImageReadError("image file not found: {path}", path=path)
    if not path.is_file():
        raise ImageReadError("not an image file (it is a directory or special file): {path}", path=path)
    try:
        yield
    except PermissionError:
        raise ImageReadError(
            "cannot read image {path}: permission denied; make it readable (chmod) or remove it", path=path
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(
            "not a readable image (unknown or unsupported format): {path}; remove it or convert it to PNG/JPEG",
            path=path,
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            "image is too large to decode safely: {path} ({error}); downscale it first", path=path, error=error
        ) from None
    except ImageReadError:
        raise
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, EOFError... for bad data
        raise ImageReadError(
            "corrupt or truncated image file: {path} ({error}); re-save or remove it", path=path, error=error
        ) from error


def _upright(image: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block only costs the orientation, not the image."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow's EXIF parser raises assorted errors on malformed tags
        logger.warning("ignoring unreadable EXIF orientation of %s: %s", path, error)
        return image.copy()


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image).astype(np.float64).clip(0, _UINT16_MAX)
        image = Image.fromarray(np.round(pixels * _UINT16_TO_UINT8).astype(np.uint8))
    elif image.mode == "F":
        raise ImageReadError(
            "32-bit floating-point image {path} is not supported (unknown value range); save it as 8 or 16-bit",
            path=path,
        )
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def image_size_upright(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF rotation applied), read from the header only."""
    with _image_errors(Path(path)), Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION_TAG) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return width, height


def is_upright_rgb_file(path: str | os.PathLike) -> bool:
    """Whether the file's pixels are what `read_image_rgb` gives: 8-bit RGB (not 16-bit RGB, which Pillow opens
    as 8-bit), no rotation tag, no transparency."""
    with Image.open(path) as image:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        sixteen_bit = any(";16" in str(tile.args) for tile in image.tile)
        return image.mode == "RGB" and not sixteen_bit and orientation == 1 and "transparency" not in image.info


def is_image_file(path: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether `path` names an image by its extension (case-insensitive)."""
    return Path(path).suffix.lower() in {e.lower() for e in extensions}


def natural_sort_key(path: str | os.PathLike) -> list:
    """Sort key that puts `img2` before `img10`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def list_image_files(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files (by extension, case-insensitive) directly inside `folder`, in natural order.

    Raises:
        ValueError: the folder does not exist or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder not found: {folder}")
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p, extensions)), key=natural_sort_key)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted({e.lower() for e in extensions}))}) in {folder}")
    return files
