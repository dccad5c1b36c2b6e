"""Training augmentation as in the VGGT paper, keeping pixels, depth and cameras consistent.

Every frame of a sample is cropped to one shared aspect ratio (drawn from 0.33..1.0, height / width) and
resized so that the longest side is `max_size` (518) with both sides multiples of the patch size (14).
Intrinsics follow the crop and resize exactly; depth and masks are resized with nearest neighbour, so
each output depth value is the original depth of the source pixel that contains the output pixel centre.
Colours are then jittered per frame (brightness, contrast, saturation, hue: OpenCV computes them in float32, the
hue turned exactly in float HSV), sometimes turned grey, and sometimes blurred; with `shared_color_jitter_prob`
a sample's frames share one such change (the reference's `cojitter_ratio`), as frames of one video would.
Extrinsics never change. A frame's random draws can be made ahead of the work (`frame_plans`, `FramePlan`), in the
order `augment_frames` makes them, so that frames can then be augmented on several threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from vggt.data.scene import Frame
from vggt.utils.optional import import_cv2

# ITU-R BT.601 luma weights, as used by PIL's "L" conversion.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
FULL_TURN_DEGREES = 360.0  # OpenCV's float HSV measures hue in degrees


@dataclass
class AugmentConfig:
    """Augmentation settings. Probabilities are per frame; `*_range` are (low, high) of a uniform draw."""

    max_size: int = 518  # longest output side (rounded down to a multiple of patch_size)
    patch_size: int = 14
    aspect_range: tuple[float, float] = (0.33, 1.0)  # output height / width
    crop_scale_range: tuple[float, float] = (0.8, 1.0)  # side of the crop relative to the largest that fits
    color_jitter_prob: float = 0.9
    brightness: float = 0.5  # factor drawn from [1 - x, 1 + x]
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.1  # shift in turns, drawn from [-x, x]
    grayscale_prob: float = 0.05
    blur_prob: float = 0.05
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)  # pixels at max_size; scaled with the output size
    shared_color_jitter_prob: float = 0.0  # chance that all frames of a sample share one colour change

    def __post_init__(self) -> None:
        self.aspect_range = tuple(self.aspect_range)
        self.crop_scale_range = tuple(self.crop_scale_range)
        self.blur_sigma_range = tuple(self.blur_sigma_range)
        if self.max_size < self.patch_size:
            raise ValueError(f"max_size {self.max_size} must be at least patch_size {self.patch_size}")
        if not 0 < self.aspect_range[0] <= self.aspect_range[1]:
            raise ValueError(f"aspect_range {self.aspect_range} must be increasing and positive")
        if not 0 < self.crop_scale_range[0] <= self.crop_scale_range[1] <= 1:
            raise ValueError(f"crop_scale_range {self.crop_scale_range} must lie in (0, 1]")


def target_shape(aspect_ratio: float, max_size: int, patch_size: int) -> tuple[int, int]:
    """(height, width) for an aspect ratio height / width: longest side `max_size`, multiples of `patch_size`."""
    long_side = (max_size // patch_size) * patch_size
    short_side = max(patch_size, int(long_side * min(aspect_ratio, 1 / aspect_ratio)) // patch_size * patch_size)
    return (short_side, long_side) if aspect_ratio <= 1 else (long_side, short_side)


def crop_box(
    height: int, width: int, out_hw: tuple[int, int], rng: np.random.Generator | None, scale_range=(1.0, 1.0)
) -> tuple[int, int, int, int]:
    """(x0, y0, crop_width, crop_height): a crop with the aspect ratio of `out_hw`.

    Its size is the largest that fits times a factor from `scale_range`; its place is random with `rng`
    and centred without.
    """
    out_h, out_w = out_hw
    scale = 1.0 if rng is None else rng.uniform(*scale_range)
    fit = min(width / out_w, height / out_h) * scale
    crop_w = min(width, max(1, round(out_w * fit)))
    crop_h = min(height, max(1, round(out_h * fit)))
    if rng is None:
        return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h
    return int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1)), crop_w, crop_h


def crop_and_resize(frame: Frame, box: tuple[int, int, int, int], out_hw: tuple[int, int]) -> Frame:
    """Crop `frame` to `box` = (x0, y0, w, h) and resize it to `out_hw`, updating the intrinsic.

    With pixel centres at integer coordinates, a source coordinate u maps to (u + 0.5 - x0) * s - 0.5 with
    s = out_w / w, so fx' = fx * s and cx' = (cx + 0.5 - x0) * s - 0.5 (likewise for y).
    """
    x0, y0, crop_w, crop_h = box
    out_h, out_w = out_hw
    scale_x, scale_y = out_w / crop_w, out_h / crop_h
    intrinsic = np.array(frame.intrinsic, dtype=np.float64)
    intrinsic[0] *= scale_x
    intrinsic[1] *= scale_y
    intrinsic[0, 2] = (frame.intrinsic[0, 2] + 0.5 - x0) * scale_x - 0.5
    intrinsic[1, 2] = (frame.intrinsic[1, 2] + 0.5 - y0) * scale_y - 0.5

    image = Image.fromarray(frame.image).resize(
        (out_w, out_h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    # Nearest neighbour: the source pixel that contains each output pixel centre.
    source_cols = np.minimum(x0 + ((np.arange(out_w) + 0.5) / scale_x).astype(np.int64), x0 + crop_w - 1)
    source_rows = np.minimum(y0 + ((np.arange(out_h) + 0.5) / scale_y).astype(np.int64), y0 + crop_h - 1)
    # Rows, then columns: two plain takes are several times faster than one np.ix_ gather.
    depth = None if frame.depth is None else frame.depth[source_rows][:, source_cols]
    mask = None if frame.mask is None else frame.mask[source_rows][:, source_cols]
    return Frame(np.asarray(image), intrinsic, np.array(frame.extrinsic), depth, mask)


def draw_jitter(rng: np.random.Generator, config: AugmentConfig) -> tuple[tuple[int, float], ...]:
    """The colour jitter's random draws: the order of the four steps, then one value per step in that order.

    Returns (step, value) pairs in the order applied: 0 brightness, 1 contrast, 2 saturation (value: the factor),
    3 hue (value: the turn)."""
    strengths = (config.brightness, config.contrast, config.saturation)
    steps = []
    for operation in rng.permutation(4).tolist():
        if operation == 3:
            steps.append((3, float(rng.uniform(-config.hue, config.hue))))
        else:
            steps.append((operation, float(rng.uniform(1 - strengths[operation], 1 + strengths[operation]))))
    return tuple(steps)


def apply_jitter(image: np.ndarray, steps: tuple[tuple[int, float], ...]) -> np.ndarray:
    """An [H, W, 3] uint8 image with the brightness, contrast, saturation and hue steps of `draw_jitter` applied.

    Each step is computed in float32 on [0, 1] and clipped to it; the image is rounded to uint8 once, at the end.
    Brightness (p * f), contrast (m + (p - m) * f, m the mean luma) and saturation (g + (p - g) * f, g each
    pixel's luma) are 3 x 4 affine colour maps applied by OpenCV; the hue turns exactly (`rotate_hue`).
    """
    cv2 = import_cv2()
    pixels = np.divide(image, np.float32(255), dtype=np.float32)
    for operation, value in steps:
        if operation == 3:
            pixels = rotate_hue(pixels, value)
        else:
            if operation == 0:
                affine = _color_map(value, np.zeros(3))
            elif operation == 1:
                mean_luma = float(np.dot(cv2.mean(pixels)[:3], LUMA_WEIGHTS))
                affine = _color_map(value, np.full(3, mean_luma))
            else:
                affine = _color_map(value, LUMA_WEIGHTS, True)
            pixels = cv2.transform(pixels, affine)
        np.clip(pixels, 0.0, 1.0, out=pixels)
    pixels *= 255
    return np.round(pixels, out=pixels).astype(np.uint8)


def jitter_colors(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast, saturation and hue (in a random order) of an [H, W, 3] uint8 image."""
    return apply_jitter(image, draw_jitter(rng, config))


def _color_map(factor: float, toward: np.ndarray, per_pixel: bool = False) -> np.ndarray:
    """[3, 4] affine map p -> t + (p - t) * factor: towards the colour `toward` [3], or with `per_pixel` towards
    each pixel's grey level `toward @ p` (`toward` then the weights of the grey level)."""
    affine = np.zeros((3, 4))
    affine[:, :3] = factor * np.eye(3)
    if per_pixel:
        affine[:, :3] += (1 - factor) * np.outer(np.ones(3), toward)
    else:
        affine[:, 3] = (1 - factor) * toward
    return affine.astype(np.float32)


def rotate_hue(pixels: np.ndarray, turns: float) -> np.ndarray:
    """[H, W, 3] float32 RGB in [0, 1] with every pixel's HSV hue turned by `turns` (value and saturation kept).

    Exact up to float32 rounding: OpenCV's float HSV conversion (hue in degrees), no 8-bit steps in between.
    """
    cv2 = import_cv2()
    hsv = cv2.cvtColor(np.ascontiguousarray(pixels, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0]
    hue += np.float32((FULL_TURN_DEGREES * turns) % FULL_TURN_DEGREES)
    np.subtract(hue, np.float32(FULL_TURN_DEGREES), out=hue, where=hue >= FULL_TURN_DEGREES)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> the same image in grey, still 3 channels."""
    gray = np.round(image.astype(np.float32) @ LUMA_WEIGHTS).clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


@dataclass(frozen=True)
class ColorChange:
    """One frame's photometric augmentation, drawn in advance: jitter steps (`draw_jitter`, None: no jitter), then
    grey, then a Gaussian blur of `blur_sigma` pixels (None: no blur)."""

    jitter: tuple[tuple[int, float], ...] | None = None
    grayscale: bool = False
    blur_sigma: float | None = None


def draw_color_change(rng: np.random.Generator, config: AugmentConfig, image_hw: tuple[int, int]) -> ColorChange:
    """The random draws of `augment_colors` for an image of `image_hw`, in the same order."""
    jitter = draw_jitter(rng, config) if rng.random() < config.color_jitter_prob else None
    grayscale = bool(rng.random() < config.grayscale_prob)
    blur_sigma = None
    if rng.random() < config.blur_prob:
        blur_sigma = float(rng.uniform(*config.blur_sigma_range) * max(image_hw) / config.max_size)
    return ColorChange(jitter, grayscale, blur_sigma)


def apply_color_change(image: np.ndarray, change: ColorChange) -> np.ndarray:
    """An [H, W, 3] uint8 image with a drawn `ColorChange` applied."""
    if change.jitter is not None:
        image = apply_jitter(image, change.jitter)
    if change.grayscale:
        image = to_grayscale(image)
    if change.blur_sigma is not None:
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=change.blur_sigma)))
    return image


def augment_colors(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Per-frame photometric augmentation of an [H, W, 3] uint8 image (geometry untouched)."""
    return apply_color_change(image, draw_color_change(rng, config, image.shape[:2]))


def color_generators(rng: np.random.Generator, num_frames: int, config: AugmentConfig) -> list[np.random.Generator]:
    """The generator each frame's colour augmentation draws from: `rng` itself, or (with probability
    `shared_color_jitter_prob`) one fresh generator per frame, all seeded alike so every frame gets the same change."""
    if config.shared_color_jitter_prob > 0 and rng.random() < config.shared_color_jitter_prob:
        seed = int(rng.integers(2**63))
        return [np.random.default_rng(seed) for _ in range(num_frames)]
    return [rng] * num_frames


@dataclass(frozen=True)
class FramePlan:
    """One frame's augmentation, drawn in advance: the crop box (x0, y0, width, height) and the colour change
    (None: colours kept). Applying plans needs no generator, so frames can be augmented in any order or thread."""

    box: tuple[int, int, int, int]
    color: ColorChange | None = None


def frame_plans(
    sizes_hw: Iterable[tuple[int, int]],
    num_frames: int,
    out_hw: tuple[int, int],
    rng: np.random.Generator | None,
    config: AugmentConfig,
) -> Iterator[FramePlan]:
    """The plans of `augment_frames` for `num_frames` frames of `sizes_hw` (height, width), drawn in its order;
    `rng=None`: centre crops only. Lazy: a frame's size is asked for only when its plan is drawn, so `sizes_hw` may
    wait for frames still being read."""
    color_rngs = [None] * num_frames if rng is None else color_generators(rng, num_frames, config)
    for (height, width), color_rng in zip(sizes_hw, color_rngs):
        box = crop_box(height, width, out_hw, rng, config.crop_scale_range)
        yield FramePlan(box, None if color_rng is None else draw_color_change(color_rng, config, out_hw))


def apply_frame_plan(frame: Frame, plan: FramePlan, out_hw: tuple[int, int]) -> Frame:
    """`frame` cropped and resized to `out_hw` by `plan.box`, its colours changed by `plan.color`."""
    frame = crop_and_resize(frame, plan.box, out_hw)
    if plan.color is not None:
        frame.image = apply_color_change(frame.image, plan.color)
    return frame


def augment_frames(
    frames: list[Frame],
    out_hw: tuple[int, int],
    rng: np.random.Generator | None,
    config: AugmentConfig,
) -> list[Frame]:
    """Crop and resize every frame to `out_hw` and jitter its colours; `rng=None` gives centre crops only."""
    plans = frame_plans((frame.image.shape[:2] for frame in frames), len(frames), out_hw, rng, config)
    return [apply_frame_plan(frame, plan, out_hw) for frame, plan in zip(frames, plans)]
