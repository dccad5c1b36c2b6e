"""The colour jitter's fast path (OpenCV affine maps and float HSV) against slow exact references.

`jitter_colors` draws the same parameters in the same order as before (the random order of the four steps, then
one factor per step), so the same generator gives the same change; only how each step is computed changed:
brightness, contrast and saturation as 3 x 4 affine colour maps, the hue turned exactly in float HSV where the
previous version went through PIL's 8-bit HSV (which moved colours by up to ~10 levels on its own).
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from vggt.data.augment import LUMA_WEIGHTS, AugmentConfig, jitter_colors, rotate_hue


def smooth_photo(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """[H, W, 3] uint8: a low-resolution random image enlarged (smooth like a photo), with a grey corner."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)).copy()
    image[:8, :8] = 128  # saturation 0: the hue is undefined and must stay grey
    return image


def hue_by_colorsys(pixels: np.ndarray, turns: float) -> np.ndarray:
    """The exact hue rotation, one pixel at a time with the standard library."""
    out = np.empty(pixels.shape, dtype=np.float64)
    for index in np.ndindex(pixels.shape[:2]):
        hue, saturation, value = colorsys.rgb_to_hsv(*map(float, pixels[index]))
        out[index] = colorsys.hsv_to_rgb((hue + turns) % 1.0, saturation, value)
    return out


def pil_8bit_hue(pixels: np.ndarray, turns: float) -> np.ndarray:
    """The previous implementation's hue step: through PIL's 8-bit HSV."""
    hsv = np.asarray(Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + round(turns * 256)) % 256
    return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB")).astype(np.float32) / 255.0


def jitter_by_formulas(image, rng, config, dtype=np.float64, hue_step=hue_by_colorsys) -> np.ndarray:
    """The colour jitter written out step by step: the same draws, each step's defining formula, clipped.
    float64 with the exact hue: the reference; float32 with `pil_8bit_hue`: the previous implementation."""
    pixels, luma = image.astype(dtype) / 255, LUMA_WEIGHTS.astype(dtype)
    for operation in rng.permutation(4):
        if operation == 0:
            pixels = pixels * rng.uniform(1 - config.brightness, 1 + config.brightness)
        elif operation == 1:
            mean = (pixels @ luma).mean()
            pixels = mean + (pixels - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast)
        elif operation == 2:
            gray = (pixels @ luma)[..., None]
            pixels = gray + (pixels - gray) * rng.uniform(1 - config.saturation, 1 + config.saturation)
        else:
            pixels = hue_step(np.clip(pixels, 0.0, 1.0), rng.uniform(-config.hue, config.hue))
        pixels = np.clip(pixels, 0.0, 1.0)
    return np.round(pixels * 255).astype(np.uint8)


@pytest.mark.parametrize("turns", [-0.5, -0.1, 0.0, 0.03, 0.25, 0.5, 0.99])
def test_hue_rotation_is_exact(turns):
    pixels = smooth_photo(0).astype(np.float32) / 255
    rotated = rotate_hue(pixels, turns)
    assert rotated.dtype == np.float32 and rotated.shape == pixels.shape
    np.testing.assert_allclose(rotated, hue_by_colorsys(pixels, turns), atol=2e-6)
    np.testing.assert_allclose(rotated[:8, :8], pixels[:8, :8], atol=1e-6)  # grey stays grey


def test_jitter_equals_its_formulas_with_the_same_draws():
    config = AugmentConfig()
    for seed in range(12):
        image = smooth_photo(seed)
        fast_rng, slow_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        fast, slow = jitter_colors(image, fast_rng, config), jitter_by_formulas(image, slow_rng, config)
        assert fast.dtype == np.uint8 and fast.shape == image.shape
        # float32 against float64: a value that lands next to a half level may round the other way
        assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
        assert np.mean(fast != slow) < 0.01
        assert fast_rng.random() == slow_rng.random()  # the same draws, in the same order
        assert not np.array_equal(fast, image)


def test_jitter_stays_within_the_previous_8bit_hue_versions_rounding():
    config = AugmentConfig()
    differences = []
    for seed in range(12):
        image = smooth_photo(seed)
        fast = jitter_colors(image, np.random.default_rng(seed), config).astype(int)
        before = jitter_by_formulas(image, np.random.default_rng(seed), config, np.float32, pil_8bit_hue).astype(int)
        differences.append(np.abs(fast - before))
    differences = np.concatenate([d.ravel() for d in differences])
    # PIL's 8-bit HSV steps (hue in 1/255 turns, saturation in 1/255) moved colours by a level or so on average
    # and by up to ~10 levels at worst (dark, saturated pixels); the exact rotation removes that error.
    assert differences.mean() < 1.0
    assert np.percentile(differences, 99) <= 6
