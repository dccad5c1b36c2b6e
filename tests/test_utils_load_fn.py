"""Image reading and preprocessing: odd image kinds, clear errors, and the original <-> input pixel mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggt.utils.geometry import camera_points_to_pixels
from vggt.utils.images import ImageReadError, list_image_files, read_image_rgb
from vggt.utils.load_fn import (
    PreprocessTransform,
    load_and_preprocess_images,
    load_and_preprocess_images_square,
    load_images,
    rescale_intrinsics_to_input,
    rescale_intrinsics_to_original,
)

# A width of 518 and a height that is a multiple of 14 make "crop" preprocessing an identity resize, so pixel
# values pass through exactly.
EXACT_SIZE = (518, 28)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


def _random_rgb(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- odd image kinds ------------------------------------------------------------------------------------------------


def test_palette_image_matches_its_rgb_conversion(tmp_path: Path) -> None:
    rgb = Image.fromarray(_random_rgb(EXACT_SIZE))
    palette = rgb.quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"

    read = read_image_rgb(tmp_path / "palette.png")
    assert read.mode == "RGB"
    np.testing.assert_array_equal(_pixels(read), _pixels(palette.convert("RGB")))
    loaded = load_and_preprocess_images([tmp_path / "palette.png"])
    expected = torch.from_numpy(_pixels(palette.convert("RGB"))).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(loaded[0], expected, atol=0, rtol=0)


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    indices = np.zeros((10, 12), dtype=np.uint8)
    indices[:, 6:] = 1
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 6))
    palette.save(tmp_path / "transparent.png", transparency=1)

    pixels = _pixels(read_image_rgb(tmp_path / "transparent.png"))
    np.testing.assert_array_equal(pixels[:, :6], np.broadcast_to([200, 10, 10], (10, 6, 3)))
    np.testing.assert_array_equal(pixels[:, 6:], np.full((10, 6, 3), 255))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str) -> None:
    width, height = EXACT_SIZE
    color = np.full((height, width, 3), (40, 120, 200), dtype=np.uint8)
    alpha = np.zeros((height, width), dtype=np.uint8)
    alpha[:, : width // 3] = 255
    alpha[:, width // 3 : 2 * width // 3] = 128
    image = Image.fromarray(np.dstack([color, alpha]), mode="RGBA")
    if mode == "LA":
        image = image.convert("LA")
    image.save(tmp_path / "alpha.png")

    pixels = _pixels(read_image_rgb(tmp_path / "alpha.png"))
    opaque = _pixels(image.convert("RGB"))[0, 0]
    np.testing.assert_array_equal(pixels[0, 0], opaque)  # alpha 255: the colour itself
    np.testing.assert_array_equal(pixels[0, -1], [255, 255, 255])  # alpha 0: white
    half = pixels[0, width // 2]
    np.testing.assert_allclose(half, opaque * 128 / 255 + 255 * 127 / 255, atol=1)

    loaded = load_and_preprocess_images([tmp_path / "alpha.png"])
    assert loaded.shape == (1, 3, height, width)
    torch.testing.assert_close(loaded[0, :, :, -1], torch.ones(3, height))


def test_grayscale_becomes_equal_channels(tmp_path: Path) -> None:
    gray = _random_rgb(EXACT_SIZE)[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    pixels = _pixels(read_image_rgb(tmp_path / "gray.png"))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray)


@pytest.mark.parametrize(("name", "dtype"), [("gray16.png", np.uint16), ("gray32.tif", np.int32)])
def test_high_bit_depth_is_rescaled_not_clipped(tmp_path: Path, name: str, dtype: type) -> None:
    values = np.array([[0, 1000, 257 * 100, 40000, 65535]], dtype=dtype).repeat(3, axis=0)
    Image.fromarray(values).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode in ("I;16", "I")

    pixels = _pixels(read_image_rgb(tmp_path / name))[0, :, 0]
    np.testing.assert_array_equal(pixels, [0, 4, 100, 156, 255])


def test_float_image_is_rejected_with_the_file_name(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "depth.tif")
    with pytest.raises(ValueError, match=r"floating-point.*depth\.tif"):
        read_image_rgb(tmp_path / "depth.tif")


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    width, height = EXACT_SIZE
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2] = (220, 30, 40)
    rgb[:, width // 2 :] = (20, 60, 230)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"

    read = read_image_rgb(tmp_path / "cmyk.jpg")
    assert read.mode == "RGB" and read.size == EXACT_SIZE
    # JPEG is lossy: compare away from the colour edge.
    np.testing.assert_allclose(_pixels(read)[:, 10:200], rgb[:, 10:200], atol=8)
    np.testing.assert_allclose(_pixels(read)[:, 320:500], rgb[:, 320:500], atol=8)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((40, 60, 3), dtype=np.uint8)  # 60 wide, 40 high as stored
    stored[:12, :12] = (255, 0, 0)  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)

    upright = read_image_rgb(tmp_path / "rotated.jpg")
    assert upright.size == (40, 60)
    pixels = _pixels(upright)
    assert pixels[4, 35, 0] > 200 and pixels[4, 35, 1] < 60  # clockwise turn: top-left -> top-right
    assert pixels[4, 4, 0] < 60

    rotated, plain = load_images([tmp_path / "rotated.jpg"]), load_images([tmp_path / "plain.jpg"])
    assert rotated.original_sizes == [(40, 60)] and plain.original_sizes == [(60, 40)]
    assert plain.images.shape == (1, 3, 350, 518)  # landscape: 518 wide, 40 * 518 / 60 -> 350 high
    assert rotated.images.shape == (1, 3, 518, 518)  # portrait: 784 high after resize, centre-cropped to 518


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_raises_naming_it(tmp_path: Path, suffix: str) -> None:
    Image.fromarray(_random_rgb((80, 64))).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"corrupt or truncated.*cut\{suffix}"):
        load_and_preprocess_images([tmp_path / f"full{suffix}", tmp_path / f"cut{suffix}"])


def test_corrupt_pixel_data_raises(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb((80, 64))).save(tmp_path / "bad.png")
    data = bytearray((tmp_path / "bad.png").read_bytes())
    data[100:] = bytes(len(data) - 100)  # keep the header, zero the compressed pixels
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        read_image_rgb(tmp_path / "bad.png")


def test_text_file_named_jpg_raises(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"not a readable image.*notes\.jpg"):
        load_images([tmp_path / "notes.jpg"])


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not found.*missing\.png"):
        load_images([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="directory"):
        read_image_rgb(tmp_path)


def test_bad_arguments_raise(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb(EXACT_SIZE)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="empty"):
        load_and_preprocess_images([])
    with pytest.raises(ValueError, match="mode"):
        load_and_preprocess_images([tmp_path / "ok.png"], mode="stretch")
    with pytest.raises(ValueError, match="list"):
        load_images(str(tmp_path / "ok.png"))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_images([tmp_path / "ok.png"], target_size=500)


def test_extreme_aspect_ratio_raises(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb((2000, 20))).save(tmp_path / "strip.png")
    with pytest.raises(ValueError, match=r"strip\.png.*too elongated"):
        load_images([tmp_path / "strip.png"])


def test_list_image_files(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.JPG"]
    with pytest.raises(ValueError, match="no image files"):
        list_image_files(tmp_path, extensions=(".webp",))
    with pytest.raises(ValueError, match="not found"):
        list_image_files(tmp_path / "absent")


# --- geometry of preprocessing ---------------------------------------------------------------------------------------


def _blob_photo(path: Path, size: tuple[int, int], centre: tuple[float, float], sigma: float) -> None:
    """A red Gaussian blob on black: its intensity centroid is `centre` in pixel-centre coordinates."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(255 * blob)
    Image.fromarray(pixels).save(path)


def _red_centroid(image: torch.Tensor) -> np.ndarray:
    """(x, y) centroid of red-minus-green in a [3, H, W] image (white padding and black background weigh 0)."""
    weight = (image[0] - image[1]).clamp(min=0).double()
    ys, xs = torch.meshgrid(
        torch.arange(image.shape[1], dtype=torch.float64),
        torch.arange(image.shape[2], dtype=torch.float64),
        indexing="ij",
    )
    return np.array([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])


BLOB_PHOTOS = [  # (width, height), blob centre, blob sigma
    ((300, 200), (120.0, 90.0), 4.0),  # upscaled
    ((300, 500), (170.0, 260.0), 4.0),  # portrait: cropped in "crop" mode, padded in "pad" mode
    ((1000, 700), (430.0, 300.0), 8.0),  # downscaled
]


@pytest.mark.parametrize(("mode", "target_size"), [("crop", 518), ("pad", 518), ("square", 280)])
def test_original_pixels_land_where_the_transform_says(tmp_path: Path, mode: str, target_size: int) -> None:
    paths = []
    for i, (size, centre, sigma) in enumerate(BLOB_PHOTOS):
        paths.append(tmp_path / f"blob{i}.png")
        _blob_photo(paths[-1], size, centre, sigma)

    loaded = load_images(paths, mode=mode, target_size=target_size)
    assert loaded.original_sizes == [size for size, _, _ in BLOB_PHOTOS]
    for image, transform, (_, centre, _) in zip(loaded.images, loaded.transforms, BLOB_PHOTOS):
        assert transform.input_size == (image.shape[2], image.shape[1])
        predicted = transform.original_to_input(np.array(centre))
        np.testing.assert_allclose(_red_centroid(image), predicted, atol=0.01)
        np.testing.assert_allclose(transform.input_to_original(predicted), centre, atol=1e-9)


def test_mixed_sizes_are_padded_white_to_the_largest(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb((518, 280), seed=1)).save(tmp_path / "wide.png")
    Image.fromarray(_random_rgb((518, 392), seed=2)).save(tmp_path / "tall.png")
    loaded = load_images([tmp_path / "wide.png", tmp_path / "tall.png"], mode="crop")

    assert loaded.images.shape == (2, 3, 392, 518)
    top = (392 - 280) // 2
    assert torch.all(loaded.images[0, :, :top] == 1.0) and torch.all(loaded.images[0, :, top + 280 :] == 1.0)
    expected = torch.from_numpy(_random_rgb((518, 280), seed=1)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(loaded.images[0, :, top : top + 280], expected, atol=0, rtol=0)
    assert loaded.transforms[0].offset == (0.0, top) and loaded.transforms[1].offset == (0.0, 0.0)


def test_square_loader_reports_the_photo_box(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb((200, 100))).save(tmp_path / "photo.png")
    images, coords = load_and_preprocess_images_square([tmp_path / "photo.png"], target_size=140)
    assert images.shape == (1, 3, 140, 140)
    torch.testing.assert_close(coords, torch.tensor([[0.0, 35.0, 140.0, 105.0, 200.0, 100.0]]))
    assert torch.all(images[0, :, :30] == 0.0)  # black above the photo


def test_rescale_intrinsics_by_hand() -> None:
    # A 1036 x 1036 photo in "crop" mode: halved to 518 x 518, nothing cropped.
    transform = PreprocessTransform(
        original_size=(1036, 1036), input_size=(518, 518), scale=(0.5, 0.5), offset=(-0.25, -0.25)
    )
    intrinsics = torch.tensor([[400.0, 0.0, 259.0], [0.0, 410.0, 259.0], [0.0, 0.0, 1.0]])
    original = rescale_intrinsics_to_original(intrinsics, transform)
    # Focal lengths double. Pixel centres sit at integers, so the input's centre is 258.5 -> 517.5, the original's
    # centre; the principal point 259 = 518 / 2 lies half an input pixel (one original pixel) right of it: 518.5.
    torch.testing.assert_close(original, torch.tensor([[800.0, 0.0, 518.5], [0.0, 820.0, 518.5], [0.0, 0.0, 1.0]]))


def test_rescaled_intrinsics_project_to_matching_pixels(tmp_path: Path) -> None:
    paths = []
    for i, (size, centre, sigma) in enumerate(BLOB_PHOTOS):
        paths.append(tmp_path / f"blob{i}.png")
        _blob_photo(paths[-1], size, centre, sigma)
    loaded = load_images(paths, mode="crop")
    height, width = loaded.images.shape[-2:]
    intrinsics_input = torch.tensor(
        [[[300.0 + 40 * i, 0.0, width / 2], [0.0, 310.0, height / 2], [0, 0, 1]] for i in range(len(paths))],
        dtype=torch.float64,
    )
    intrinsics_original = rescale_intrinsics_to_original(intrinsics_input, loaded.transforms)

    points_cam = torch.randn(len(paths), 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    points_cam[..., 2] = points_cam[..., 2].abs() + 1.0
    pixels_input, _ = camera_points_to_pixels(points_cam, intrinsics_input)
    pixels_original, _ = camera_points_to_pixels(points_cam, intrinsics_original)
    for i, transform in enumerate(loaded.transforms):
        torch.testing.assert_close(transform.original_to_input(pixels_original[i]), pixels_input[i])

    # numpy in, numpy out; and back again
    back = rescale_intrinsics_to_input(intrinsics_original.numpy(), loaded.transforms)
    assert isinstance(back, np.ndarray)
    np.testing.assert_allclose(back, intrinsics_input.numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="N = 3"):
        rescale_intrinsics_to_original(intrinsics_input[:2], loaded.transforms)


@pytest.mark.parametrize("mode", ["crop", "pad", "square"])
def test_input_size_predicts_the_loaded_shape_and_pad_to_pads(tmp_path, mode):
    from vggt.utils.load_fn import input_size

    sizes = [(64, 48), (48, 64), (100, 30), (30, 100), (518, 700), (13, 13)]
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (w, h), (i * 30, 90, 200)).save(path)
        paths.append(path)
    target = 140 if mode != "square" else 112
    for path, (w, h) in zip(paths, sizes):
        loaded = load_images([path], mode=mode, target_size=target)
        assert tuple(loaded.images.shape[-1:-3:-1]) == input_size(w, h, mode, target, 14)
    common = tuple(max(input_size(w, h, mode, target, 14)[k] for w, h in sizes) for k in (0, 1))
    halves = [
        load_images(paths[:3], mode=mode, target_size=target, pad_to=common),
        load_images(paths[3:], mode=mode, target_size=target, pad_to=common),
    ]
    whole = load_images(paths, mode=mode, target_size=target)
    torch.testing.assert_close(torch.cat([h.images for h in halves]), whole.images, rtol=0, atol=0)
    assert [t for h in halves for t in h.transforms] == whole.transforms
