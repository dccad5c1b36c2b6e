"""Image preprocessing of VGGT-Omega and Pi3 / Pi3X equals their references' loaders (goldens made by
scripts/make_family_goldens.py on photos of awkward sizes, one with an alpha channel)."""

from __future__ import annotations

import json

import torch
from family_goldens import GOLDENS
from safetensors.torch import load_file

from vggt.utils.family_images import load_omega_images, load_pi3_images, omega_target_hw, pi3_target_hw

FOLDER = GOLDENS / "preprocessing"


def _photos() -> list:
    return sorted(FOLDER.glob("photo_*.png"))


def test_omega_preprocessing_matches_reference():
    meta = json.loads((FOLDER / "meta.json").read_text())
    expected = load_file(str(FOLDER / "io.safetensors"))["omega"].float() / 255
    torch.testing.assert_close(load_omega_images(_photos(), resolution=meta["omega_resolution"]), expected)


def test_pi3_preprocessing_matches_reference():
    meta = json.loads((FOLDER / "meta.json").read_text())
    expected = load_file(str(FOLDER / "io.safetensors"))["pi3"].float() / 255
    torch.testing.assert_close(load_pi3_images(_photos(), pixel_limit=meta["pi3_pixel_limit"]), expected)


def test_target_sizes_at_the_released_resolutions():
    # VGGT-Omega's README: 3:2 landscape photos become 624 x 416 at resolution 512.
    assert omega_target_hw(1500, 1000, resolution=512) == (416, 624)
    height, width = pi3_target_hw(1920, 1080)
    assert height % 14 == 0 and width % 14 == 0 and height * width <= 255_000
    assert abs(width / height - 1920 / 1080) < 0.05
