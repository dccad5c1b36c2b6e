"""Known intrinsics (vggt.data.intrinsics): JSON and COLMAP files read back as written, and undistortion."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pycolmap
import pytest

from vggt.data.intrinsics import CAMERA_MODELS, CameraCalibration, read_colmap_cameras, read_intrinsics, undistort_image
from vggt.errors import InputError

WIDTH, HEIGHT = 640, 480
# One camera of every supported model, with COLMAP parameters (principal point at COLMAP's half-pixel offset).
COLMAP_PARAMS = {
    "SIMPLE_PINHOLE": [500.0, 320.5, 240.5],
    "PINHOLE": [500.0, 510.0, 321.0, 239.0],
    "SIMPLE_RADIAL": [505.0, 320.0, 240.0, -0.1],
    "RADIAL": [505.0, 320.0, 240.0, -0.1, 0.02],
    "OPENCV": [500.0, 502.0, 319.0, 241.0, -0.2, 0.05, 0.001, -0.002],
    "FULL_OPENCV": [500.0, 502.0, 319.0, 241.0, -0.2, 0.05, 0.001, -0.002, 0.01, 0.001, 0.002, 0.003],
}
NAMES = [f"frame_{i:02d}.jpg" for i in range(len(COLMAP_PARAMS))]
DISTORTION_INVERSION_STEPS = 60


def expected_camera(model: str, params: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """K in this package's convention (principal point 0.5 smaller) and the distortion coefficients."""
    pinhole = 3 if CAMERA_MODELS[model][1][0] == "f" else 4
    fx, fy = (params[0], params[0]) if pinhole == 3 else (params[0], params[1])
    cx, cy = params[pinhole - 2] - 0.5, params[pinhole - 1] - 0.5
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), np.array(params[pinhole:])


def write_model(folder, text: bool = False):
    """A COLMAP model with one camera per image, each of another model, written by pycolmap."""
    reconstruction = pycolmap.Reconstruction()
    for i, (model, params) in enumerate(COLMAP_PARAMS.items()):
        camera = pycolmap.Camera(model=model, width=WIDTH, height=HEIGHT, params=params, camera_id=i + 1)
        reconstruction.add_camera_with_trivial_rig(camera)
        # Images listed out of camera order, so matching by name and by order differ.
        image = pycolmap.Image(name=NAMES[i], camera_id=i + 1, image_id=len(NAMES) - i)
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    folder.mkdir(parents=True)
    (reconstruction.write_text if text else reconstruction.write_binary)(str(folder))
    return folder


def assert_matches_colmap(camera: CameraCalibration, model: str):
    intrinsic, coefficients = expected_camera(model, COLMAP_PARAMS[model])
    assert camera.model == model and camera.image_wh == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(camera.intrinsic, intrinsic)
    np.testing.assert_array_equal(camera.distortion[: len(coefficients)], coefficients)
    assert not camera.distortion[len(coefficients) :].any()


@pytest.mark.parametrize("text", [False, True])
def test_colmap_model_written_by_pycolmap_reads_back_by_image_name(tmp_path, text):
    folder = write_model(tmp_path / "sparse", text=text)
    known = read_intrinsics(folder, NAMES[::-1], [(WIDTH, HEIGHT)] * len(NAMES))
    for camera, name in zip(known.cameras, NAMES[::-1]):
        assert_matches_colmap(camera, list(COLMAP_PARAMS)[NAMES.index(name)])
    assert known.intrinsics.shape == (len(NAMES), 3, 3)
    np.testing.assert_array_equal(known.is_distorted, [True] * 4 + [False] * 2)


def test_colmap_cameras_files_alone_map_cameras_by_id_to_images_in_order(tmp_path):
    write_model(tmp_path / "bin")
    write_model(tmp_path / "txt", text=True)
    from_bin, from_txt = (
        read_colmap_cameras(tmp_path / "bin/cameras.bin"),
        read_colmap_cameras(tmp_path / "txt/cameras.txt"),
    )
    assert sorted(from_bin) == sorted(from_txt) == list(range(1, len(NAMES) + 1))
    for camera_id, model in enumerate(COLMAP_PARAMS, start=1):
        assert_matches_colmap(from_bin[camera_id], model)
        assert_matches_colmap(from_txt[camera_id], model)
    known = read_intrinsics(tmp_path / "bin/cameras.bin", ["b.jpg", "a.jpg"] * 3, [(WIDTH, HEIGHT)] * 6)
    assert [camera.model for camera in known.cameras] == list(COLMAP_PARAMS)

    # A folder holding only cameras.txt is read the same way; one camera serves every image.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "cameras.txt").write_text("# comment\n7 OPENCV 640 480 500 502 319 241 -0.2 0.05 0.001 -0.002\n")
    known = read_intrinsics(alone, ["x.jpg", "y.jpg", "z.jpg"], [(WIDTH, HEIGHT)] * 3)
    assert len(known) == 3 and all(camera is known.cameras[0] for camera in known.cameras)
    assert_matches_colmap(known.cameras[0], "OPENCV")


def test_json_single_camera_and_per_image_cameras_equal_the_file(tmp_path):
    single = {"camera": {"width": 640, "height": 480, "fx": 500.5, "fy": 501.0, "cx": 319.25, "cy": 240.75}}
    single["camera"]["distortion"] = [-0.1, 0.01, 0.001, 0.002, 0.003]
    (tmp_path / "single.json").write_text(json.dumps(single))
    known = read_intrinsics(tmp_path / "single.json", ["a.jpg", "b.jpg"], [(640, 480), (640, 480)])
    camera = known.cameras[1]
    assert camera.model == "FULL_OPENCV"
    np.testing.assert_array_equal(camera.intrinsic, [[500.5, 0, 319.25], [0, 501.0, 240.75], [0, 0, 1]])
    np.testing.assert_array_equal(camera.distortion, [-0.1, 0.01, 0.001, 0.002, 0.003, 0, 0, 0])

    per_image = {
        "cameras": {
            "a.jpg": {"width": 640, "height": 480, "K": [[400, 0, 320], [0, 410, 240], [0, 0, 1]]},
            "b.jpg": {"width": 320, "height": 240, "f": 250, "cx": 160, "cy": 120, "distortion": [-0.05]},
            "unused.jpg": {"width": 1, "height": 1, "f": 1, "cx": 0, "cy": 0},
        }
    }
    (tmp_path / "per_image.json").write_text(json.dumps(per_image))
    known = read_intrinsics(tmp_path / "per_image.json", ["b.jpg", "sub/a.jpg"], [(320, 240), (640, 480)])
    assert [camera.model for camera in known.cameras] == ["SIMPLE_RADIAL", "PINHOLE"]
    np.testing.assert_array_equal(known.intrinsics[1], [[400, 0, 320], [0, 410, 240], [0, 0, 1]])
    np.testing.assert_array_equal(known.cameras[0].distortion, [-0.05, 0, 0, 0])


def test_a_proportionally_resized_photo_gets_scaled_intrinsics_and_other_sizes_fail(tmp_path):
    write_model(tmp_path / "sparse")
    known = read_intrinsics(tmp_path / "sparse", [NAMES[1]], [(2 * WIDTH, 2 * HEIGHT)])
    fx, fy, cx, cy = COLMAP_PARAMS["PINHOLE"]
    # Doubling the size doubles COLMAP's coordinates (corner at 0); ours sit 0.5 below them.
    np.testing.assert_allclose(known.intrinsics[0], [[2 * fx, 0, 2 * cx - 0.5], [0, 2 * fy, 2 * cy - 0.5], [0, 0, 1]])
    assert known.cameras[0].image_wh == (2 * WIDTH, 2 * HEIGHT)
    with pytest.raises(InputError, match="is for 640x480 images but the photo is 480x640"):
        read_intrinsics(tmp_path / "sparse", [NAMES[1]], [(HEIGHT, WIDTH)])


def distort(camera: CameraCalibration, pixels: np.ndarray) -> np.ndarray:
    """[N, 2] ideal pinhole pixels to where the lens puts them, by OpenCV's forward model (cv2.projectPoints)."""
    normalized = (pixels - camera.intrinsic[:2, 2]) / np.diag(camera.intrinsic)[:2]
    rays = np.concatenate((normalized, np.ones((len(pixels), 1))), axis=1)
    projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), camera.intrinsic, camera.distortion)
    return projected[:, 0]


def render(camera: CameraCalibration, pattern, distorted: bool) -> np.ndarray:
    """[H, W] image of `pattern(x, y)` (a function of ideal pinhole pixel coordinates) as the camera sees it."""
    width, height = camera.image_wh
    pixels = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).reshape(-1, 2).astype(np.float64)
    ideal = pixels.copy()
    for _ in range(DISTORTION_INVERSION_STEPS if distorted else 0):  # fixed point of distort(ideal) = pixels
        ideal -= distort(camera, ideal) - pixels
    if distorted:
        assert np.abs(distort(camera, ideal) - pixels).max() < 1e-6
    return pattern(ideal[:, 0].reshape(height, width), ideal[:, 1].reshape(height, width))


def test_undistortion_makes_straight_lines_straight():
    period = 16.0

    def checkerboard(x, y):  # smooth checkerboard; its zero lines x, y = k * period / 2 are straight
        return (0.5 + 0.5 * np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)).astype(np.float32)

    intrinsic = np.array([[120.0, 0, 79.5], [0, 120.0, 59.5], [0, 0, 1]])
    camera = CameraCalibration("OPENCV", (160, 120), intrinsic, np.array([-0.3, 0.08, 0.002, -0.001]))
    distorted, ideal = render(camera, checkerboard, True), render(camera, checkerboard, False)
    undistorted, new_intrinsic = undistort_image(distorted, camera)
    np.testing.assert_array_equal(new_intrinsic, intrinsic)
    assert undistorted.shape == distorted.shape and undistorted.dtype == np.float32

    inner = (slice(10, 110), slice(10, 150))  # away from the border, where interpolation reaches outside
    assert np.abs(distorted - ideal)[inner].mean() > 0.15  # the distortion is strong ...
    assert np.abs(undistorted - ideal)[inner].mean() < 0.01  # ... and undistortion removes it
    # Along the straight line x = 24 the pattern is 0.5 everywhere: true after undistortion, not before.
    assert np.abs(undistorted[10:110, 24] - 0.5).max() < 0.03
    assert np.abs(distorted[10:110, 24] - 0.5).max() > 0.2

    colour = np.full((120, 160, 3), 255, np.uint8)
    valid_only, valid_intrinsic = undistort_image(colour, camera, alpha=0.0)
    every_pixel, every_intrinsic = undistort_image(colour, camera, alpha=1.0)
    assert valid_only.dtype == np.uint8 and valid_only.shape == colour.shape
    # Barrel distortion: alpha 0 widens the view only while every pixel still comes from the photo, alpha 1 until
    # all of the photo is in view, leaving black where nothing was seen.
    assert valid_only.min() > 0 and every_pixel.min() == 0
    assert every_intrinsic[0, 0] < valid_intrinsic[0, 0] < intrinsic[0, 0]


def test_bad_files_give_one_line_input_errors(tmp_path):
    sizes = [(WIDTH, HEIGHT)] * 2
    write_model(tmp_path / "sparse")
    several = tmp_path / "several"
    several.mkdir()
    shutil.copy(tmp_path / "sparse/cameras.bin", several / "cameras.bin")
    truncated = tmp_path / "cut" / "cameras.bin"
    truncated.parent.mkdir()
    truncated.write_bytes((tmp_path / "sparse/cameras.bin").read_bytes()[:-4])
    fisheye = tmp_path / "fisheye" / "cameras.txt"
    fisheye.parent.mkdir()
    fisheye.write_text("1 OPENCV_FISHEYE 640 480 500 500 320 240 0.1 0 0 0\n")

    camera = {"width": WIDTH, "height": HEIGHT, "fx": 500, "fy": 500, "cx": 320, "cy": 240}
    json_cases = {
        "broken.json": ("{", "cannot read intrinsics file"),
        "neither.json": ({"fx": 1}, "either 'camera'"),
        "no_fx.json": ({"camera": {"width": 1, "height": 1}}, "has no 'fx'"),
        "bad_length.json": ({"camera": {**camera, "distortion": [0.1, 0, 0]}}, "distortion has 3 coefficients"),
        "bad_model.json": ({"camera": {**camera, "model": "PINHOLE", "distortion": [0.1]}}, "does not take 1"),
        "negative.json": ({"camera": {**camera, "fx": -5}}, "focal lengths must be positive"),
        "huge.json": ({"camera": {**camera, "fx": 1e308}}, "intrinsic values must be at most 1e+09 pixels"),
        "missing.json": ({"cameras": {"a.jpg": camera}}, "no camera for 1 of the images (e.g. b.jpg)"),
    }
    cases = [
        (tmp_path / "nothing.json", "does not exist"),
        (tmp_path / "sparse", "no camera for 2 of the images"),
        (several, "has 6 cameras for 2 images"),
        (truncated, "is not a COLMAP cameras file"),
        (fisheye, "OPENCV_FISHEYE is not supported"),
        (tmp_path / "sparse/cameras.bin", "has 6 cameras for 2 images"),
    ]
    (tmp_path / "calib.yaml").write_text("fx: 1\n")
    cases.append((tmp_path / "calib.yaml", "neither a .json file nor COLMAP cameras"))
    for name, (content, message) in json_cases.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
        cases.append((tmp_path / name, message))
    for path, message in cases:
        with pytest.raises(InputError) as error:
            read_intrinsics(path, ["a.jpg", "b.jpg"], sizes)
        assert message in str(error.value) and "\n" not in str(error.value), (path, str(error.value))
    with pytest.raises(InputError, match="image_wh has 1 sizes for 2 image_names"):
        read_intrinsics(tmp_path / "sparse", ["a.jpg", "b.jpg"], sizes[:1])
