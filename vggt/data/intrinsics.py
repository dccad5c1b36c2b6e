"""Known camera calibrations: read them from a JSON file or COLMAP cameras, and undistort images with them.

`read_intrinsics(path, image_names, image_wh)` gives one `CameraCalibration` per image at the photo's original
resolution, in this package's pixel convention (pixel centres at integer coordinates, as OpenCV; COLMAP's
principal point is 0.5 larger). `path` is one of (formats in docs/dataset_format.md, "Known intrinsics"):

- a JSON file: `{"camera": {...}}` for all images, or `{"cameras": {"<image name>": {...}, ...}}` per image;
- a COLMAP sparse model folder: each image takes the camera of the model's image of the same name (the folder
  needs `images.bin` or `images.txt` beside the cameras; without it, its cameras are read as below);
- a COLMAP `cameras.txt` / `cameras.bin` alone: one camera serves all images, or N cameras serve N images, in
  ascending camera id for the images in the order of `image_names`.

Models: SIMPLE_PINHOLE, PINHOLE, and, with lens distortion, SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV, whose
coefficients map exactly onto OpenCV's distortion vector; `undistort_image` removes the distortion with OpenCV.
A calibration for a proportionally resized copy of the photos is rescaled; any other size mismatch is an error.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vggt.data.layout import MAX_PIXEL_VALUE
from vggt.errors import InputError
from vggt.utils.cameras import COLMAP_PIXEL_CENTER
from vggt.utils.optional import import_cv2, import_pycolmap

# COLMAP model name -> (model id in cameras.bin, parameter names). The focal lengths and principal point come
# first; the rest are distortion coefficients in OpenCV's order (k1, k2, p1, p2, k3, k4, k5, k6), after mapping
# the one- and two-coefficient radial models onto it.
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
}
MODEL_BY_ID = {model_id: name for name, (model_id, _) in CAMERA_MODELS.items()}
# Length of each model's OpenCV distortion vector (the radial models' coefficients are its first entries).
OPENCV_DISTORTION_LENGTH = {"SIMPLE_PINHOLE": 0, "PINHOLE": 0, "SIMPLE_RADIAL": 4, "RADIAL": 4, "OPENCV": 4}
OPENCV_DISTORTION_LENGTH["FULL_OPENCV"] = 8
# The models an OpenCV distortion vector of each length (a prefix of k1, k2, p1, p2, k3, k4, k5, k6) can be.
MODELS_BY_DISTORTION_LENGTH = {
    0: ("PINHOLE", "SIMPLE_PINHOLE"),
    1: ("SIMPLE_RADIAL",),
    2: ("RADIAL",),
    4: ("OPENCV",),
    5: ("FULL_OPENCV",),
    8: ("FULL_OPENCV",),
}
COLMAP_CAMERA_FILES = ("cameras.bin", "cameras.txt")
# A calibration made for a resized copy of the photos is rescaled when both sides agree to this many pixels.
PROPORTIONAL_SIZE_TOLERANCE_PX = 1.0
# Names listed in "missing" errors.
MAX_NAMES_IN_ERRORS = 5
DOCS = "see docs/dataset_format.md, 'Known intrinsics'"


@dataclass(frozen=True)
class CameraCalibration:
    """One calibrated camera.

    model: COLMAP model name. image_wh: (width, height) in pixels the calibration is for. intrinsic: [3, 3]
    pinhole matrix in this package's convention (pixel centres at integers). distortion: [D] OpenCV distortion
    coefficients (k1, k2, p1, p2[, k3, k4, k5, k6]); empty for the pinhole models.
    """

    model: str
    image_wh: tuple[int, int]
    intrinsic: np.ndarray
    distortion: np.ndarray

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.distortion != 0))

    def scaled(self, image_wh: tuple[int, int]) -> CameraCalibration:
        """The calibration of the same camera for the image resized to `image_wh` (width, height)."""
        scale = np.array([image_wh[0] / self.image_wh[0], image_wh[1] / self.image_wh[1]])
        intrinsic = self.intrinsic.copy()
        # Resizing scales coordinates whose pixel centres are at half-integers (the image's corner is at 0).
        intrinsic[:2, :2] *= scale[:, None]
        intrinsic[:2, 2] = scale * (intrinsic[:2, 2] + COLMAP_PIXEL_CENTER) - COLMAP_PIXEL_CENTER
        return replace(self, image_wh=(int(image_wh[0]), int(image_wh[1])), intrinsic=intrinsic)


@dataclass(frozen=True)
class KnownIntrinsics:
    """The calibration of each of S images: image_names [S], cameras [S] (images may share one object)."""

    image_names: tuple[str, ...]
    cameras: tuple[CameraCalibration, ...]

    def __len__(self) -> int:
        return len(self.cameras)

    def subset(self, indices: Sequence[int]) -> KnownIntrinsics:
        """The calibrations of the images at `indices`, in that order."""
        return KnownIntrinsics(tuple(self.image_names[i] for i in indices), tuple(self.cameras[i] for i in indices))

    @property
    def intrinsics(self) -> np.ndarray:
        """[S, 3, 3] float64, at each photo's original resolution."""
        return np.stack([camera.intrinsic for camera in self.cameras])

    @property
    def is_distorted(self) -> np.ndarray:
        """[S] bool: images that `undistort_image` must undistort before use."""
        return np.array([camera.is_distorted for camera in self.cameras])


def camera_from_colmap(model: str, width: int, height: int, params: Sequence[float]) -> CameraCalibration:
    """A calibration from COLMAP's model name, size and parameter list (principal point in COLMAP's convention)."""
    if model not in CAMERA_MODELS:
        raise InputError(
            "COLMAP camera model {model} is not supported; supported: {supported}. Undistort the images first "
            "(colmap image_undistorter) to get PINHOLE cameras",
            model=model,
            supported=", ".join(CAMERA_MODELS),
        )
    names = CAMERA_MODELS[model][1]
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (len(names),):
        raise InputError(
            "a {model} camera has {count} parameters ({names}), got {got}",
            model=model,
            count=len(names),
            names=", ".join(names),
            got=len(params),
        )
    values = dict(zip(names, params))
    num_pinhole = 3 if "f" in values else 4
    fx, fy = values.get("fx", values.get("f")), values.get("fy", values.get("f"))
    cx, cy = values["cx"] - COLMAP_PIXEL_CENTER, values["cy"] - COLMAP_PIXEL_CENTER
    intrinsic = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    camera = _opencv_camera(model, (width, height), intrinsic, params[num_pinhole:])
    return _checked(camera, f"{model} camera")


def _opencv_camera(
    model: str, image_wh: tuple[int, int], intrinsic: np.ndarray, coefficients: np.ndarray
) -> CameraCalibration:
    """The calibration with `coefficients` (a prefix of OpenCV's distortion vector) padded to the model's length."""
    distortion = np.zeros(OPENCV_DISTORTION_LENGTH[model])
    distortion[: len(coefficients)] = coefficients
    return CameraCalibration(model, (int(image_wh[0]), int(image_wh[1])), intrinsic, distortion)


def _checked(camera: CameraCalibration, label: str) -> CameraCalibration:
    values = np.concatenate((camera.intrinsic.ravel(), camera.distortion))
    if not np.isfinite(values).all() or camera.intrinsic[0, 0] <= 0 or camera.intrinsic[1, 1] <= 0:
        raise InputError("{label}: focal lengths must be positive and all values finite", label=label)
    if np.abs(camera.intrinsic).max() > MAX_PIXEL_VALUE:
        raise InputError(
            "{label}: intrinsic values must be at most {limit:g} pixels", label=label, limit=MAX_PIXEL_VALUE
        )
    if min(camera.image_wh) <= 0:
        raise InputError("{label}: width and height must be positive, got {size}", label=label, size=camera.image_wh)
    return camera


# --- COLMAP cameras.txt / cameras.bin ----------------------------------------------------------------------------


def read_colmap_cameras(path: Path | str) -> dict[int, CameraCalibration]:
    """Camera id -> calibration from a COLMAP `cameras.txt` or `cameras.bin` (binary by its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("COLMAP cameras file {path} does not exist", path=path)
    parse = _parse_cameras_bin if path.suffix == ".bin" else _parse_cameras_txt
    try:
        cameras = parse(path.read_bytes())
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
        raise InputError("{path} is not a COLMAP cameras file ({error})", path=path, error=error) from None
    if not cameras:
        raise InputError("{path} lists no camera", path=path)
    return cameras


def _parse_cameras_txt(data: bytes) -> dict[int, CameraCalibration]:
    """Lines `CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`; `#` starts a comment."""
    cameras = {}
    for line in data.decode("utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            camera_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            cameras[camera_id] = camera_from_colmap(model, width, height, [float(v) for v in fields[4:]])
    return cameras


def _parse_cameras_bin(data: bytes) -> dict[int, CameraCalibration]:
    """uint64 count, then per camera: uint32 id, int32 model id, uint64 width, uint64 height, float64 params
    (as many as the model has), all little endian."""
    (count,), offset, cameras = struct.unpack_from("<Q", data, 0), 8, {}
    for _ in range(count):
        camera_id, model_id, width, height = struct.unpack_from("<IiQQ", data, offset)
        offset += struct.calcsize("<IiQQ")
        if model_id not in MODEL_BY_ID:
            raise ValueError(f"camera {camera_id} has model id {model_id}, not one of {sorted(MODEL_BY_ID)}")
        model = MODEL_BY_ID[model_id]
        num_params = len(CAMERA_MODELS[model][1])
        params = struct.unpack_from(f"<{num_params}d", data, offset)
        offset += 8 * num_params
        cameras[camera_id] = camera_from_colmap(model, width, height, params)
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes left after {count} cameras")
    return cameras


def _colmap_image_cameras(folder: Path) -> dict[str, CameraCalibration]:
    """Image name -> calibration of a COLMAP model folder (read with pycolmap)."""
    pycolmap = import_pycolmap()
    try:
        reconstruction = pycolmap.Reconstruction(str(folder))
    except Exception as error:  # pycolmap raises bare RuntimeErrors (or ValueErrors) for broken models
        raise InputError("cannot read the COLMAP model in {path}: {error}", path=folder, error=error) from None
    cameras = {
        camera_id: camera_from_colmap(camera.model.name, camera.width, camera.height, camera.params)
        for camera_id, camera in reconstruction.cameras.items()
    }
    return {image.name: cameras[image.camera_id] for image in reconstruction.images.values()}


# --- JSON -------------------------------------------------------------------------------------------------------


def camera_from_json(entry: Any, label: str) -> CameraCalibration:
    """A calibration from one JSON camera object (fields in docs/dataset_format.md); `label` names it in errors."""
    if not isinstance(entry, dict):
        raise InputError("{label} must be an object with width, height, fx, fy, cx, cy; {docs}", label=label, docs=DOCS)
    try:
        image_wh = (int(entry["width"]), int(entry["height"]))
        if "K" in entry:
            intrinsic = np.asarray(entry["K"], dtype=np.float64)
            if intrinsic.shape != (3, 3) or not np.allclose(intrinsic[[1, 2, 2], [0, 0, 1]], 0) or intrinsic[2, 2] != 1:
                raise ValueError("K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
            if intrinsic[0, 1] != 0:
                raise ValueError("K has a skew, which lens undistortion does not support")
        else:
            fx, fy = (float(entry["f"]),) * 2 if "f" in entry else (float(entry["fx"]), float(entry["fy"]))
            intrinsic = np.array([[fx, 0.0, float(entry["cx"])], [0.0, fy, float(entry["cy"])], [0.0, 0.0, 1.0]])
        coefficients = np.asarray(entry.get("distortion", []), dtype=np.float64).reshape(-1)
    except KeyError as missing:
        raise InputError("{label} has no {field}; {docs}", label=label, field=missing, docs=DOCS) from None
    except (TypeError, ValueError) as error:
        raise InputError("{label}: {error}; {docs}", label=label, error=error, docs=DOCS) from None
    candidates = MODELS_BY_DISTORTION_LENGTH.get(len(coefficients))
    if candidates is None:
        raise InputError(
            "{label}: distortion has {count} coefficients; give OpenCV's (k1, k2, p1, p2[, k3[, k4, k5, k6]]) "
            "with 0, 1, 2, 4, 5 or 8 of them",
            label=label,
            count=len(coefficients),
        )
    model = str(entry.get("model", candidates[0])).upper()
    if model not in candidates:
        raise InputError(
            "{label}: model {model} does not take {count} distortion coefficients (that is {expected})",
            label=label,
            model=model,
            count=len(coefficients),
            expected=" or ".join(candidates),
        )
    return _checked(_opencv_camera(model, image_wh, intrinsic, coefficients), label)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError("cannot read intrinsics file {path}: {error}", path=path, error=error) from None
    if not isinstance(content, dict) or ("camera" in content) == ("cameras" in content):
        raise InputError(
            "{path} must hold an object with either 'camera' (one for all images) or 'cameras' (image name -> "
            "camera); {docs}",
            path=path,
            docs=DOCS,
        )
    return content


# --- matching cameras to images -------------------------------------------------------------------------------


def _by_name(cameras: dict[str, CameraCalibration], image_names: Sequence[str], source: Path, hint: str) -> list:
    """The camera of each image: by its name, else by its file name if that is unique among the cameras' names;
    `hint` ends the error for images without one."""
    by_basename: dict[str, list[CameraCalibration]] = {}
    for name, camera in cameras.items():
        by_basename.setdefault(Path(name).name, []).append(camera)
    matched, missing = [], []
    for name in image_names:
        candidates = [cameras[name]] if name in cameras else by_basename.get(Path(name).name, [])
        if len(candidates) == 1:
            matched.append(candidates[0])
        else:
            missing.append(name)
    if missing:
        raise InputError(
            "{path} has no camera for {count} of the images (e.g. {names}); {hint}",
            path=source,
            count=len(missing),
            names=", ".join(missing[:MAX_NAMES_IN_ERRORS]),
            hint=hint,
        )
    return matched


def _by_order(cameras: dict[int, CameraCalibration], image_names: Sequence[str], source: Path) -> list:
    """One camera for all images, or camera ids in ascending order for the images in the given order."""
    if len(cameras) == 1:
        return [next(iter(cameras.values()))] * len(image_names)
    if len(cameras) == len(image_names):
        return [cameras[camera_id] for camera_id in sorted(cameras)]
    raise InputError(
        "{path} has {count} cameras for {num_images} images: without the model's images file (images.bin) to say "
        "which image uses which, give one camera for all, one per image, or a JSON file mapping image names to "
        "cameras ({docs})",
        path=source,
        count=len(cameras),
        num_images=len(image_names),
        docs=DOCS,
    )


def _fit_size(camera: CameraCalibration, image_wh: tuple[int, int], name: str, source: Path) -> CameraCalibration:
    """`camera` for a photo of size `image_wh`: itself, rescaled for a proportional size, or an error."""
    if tuple(camera.image_wh) == tuple(image_wh):
        return camera
    width, height = camera.image_wh
    scale_x, scale_y = image_wh[0] / width, image_wh[1] / height
    proportional = abs(scale_y * width - image_wh[0]) <= PROPORTIONAL_SIZE_TOLERANCE_PX
    if proportional and abs(scale_x * height - image_wh[1]) <= PROPORTIONAL_SIZE_TOLERANCE_PX:
        return camera.scaled(image_wh)
    raise InputError(
        "{path}: the camera of {name} is for {size} images but the photo is {photo} (width x height); give the "
        "calibration at the photos' original resolution",
        path=source,
        name=name,
        size=f"{width}x{height}",
        photo=f"{image_wh[0]}x{image_wh[1]}",
    )


def _colmap_sources(path: Path) -> tuple[Path, Path | None]:
    """The cameras file of a COLMAP path, and the model folder when `path` is a folder with images beside them."""
    if not path.is_dir():
        return path, None
    cameras_file = next((path / name for name in COLMAP_CAMERA_FILES if (path / name).is_file()), None)
    if cameras_file is None:
        raise InputError("{path} has no cameras.bin or cameras.txt", path=path)
    return cameras_file, path if (path / f"images{cameras_file.suffix}").is_file() else None


def read_intrinsics(
    path: Path | str, image_names: Sequence[str], image_wh: Sequence[Sequence[int]] | np.ndarray
) -> KnownIntrinsics:
    """The known calibration of each image.

    Args:
        path: a JSON file, a COLMAP cameras.txt / cameras.bin, or a COLMAP sparse model folder (module docstring).
        image_names: S image names (file names relative to the images folder) to find the cameras by.
        image_wh: [S, 2] (width, height) of the photos at their original resolution, upright.

    Returns:
        KnownIntrinsics with one calibration per image, sized to its photo.
    """
    path, image_names = Path(path), [str(name) for name in image_names]
    image_wh = np.asarray(image_wh, dtype=np.int64).reshape(-1, 2) if len(image_names) else np.zeros((0, 2))
    if len(image_wh) != len(image_names):
        raise InputError(
            "{image_wh} has {count} sizes for {num_images} {image_names}",
            count=len(image_wh),
            num_images=len(image_names),
        )
    if not path.exists():
        raise InputError("intrinsics file {path} does not exist", path=path)
    if path.suffix.lower() == ".json":
        content = _read_json(path)
        if "camera" in content:
            cameras = [camera_from_json(content["camera"], f"{path} 'camera'")] * len(image_names)
        elif not isinstance(content["cameras"], dict):
            raise InputError("{path}: 'cameras' must map image names to cameras; {docs}", path=path, docs=DOCS)
        else:
            by_name = {str(k): camera_from_json(v, f"{path} camera of {k!r}") for k, v in content["cameras"].items()}
            cameras = _by_name(by_name, image_names, path, "add every image's name to 'cameras'")
    elif path.is_dir() or path.name in COLMAP_CAMERA_FILES:
        cameras_file, model_folder = _colmap_sources(path)
        if model_folder is not None:
            hint = "the model's images must be named as the photos (or pass its cameras file alone)"
            cameras = _by_name(_colmap_image_cameras(model_folder), image_names, model_folder, hint)
        else:
            cameras = _by_order(read_colmap_cameras(cameras_file), image_names, cameras_file)
    else:
        raise InputError(
            "{path} is neither a .json file nor COLMAP cameras (cameras.bin, cameras.txt or a model folder)", path=path
        )
    fitted = [_fit_size(camera, tuple(size), name, path) for camera, size, name in zip(cameras, image_wh, image_names)]
    return KnownIntrinsics(tuple(image_names), tuple(fitted))


# --- undistortion -----------------------------------------------------------------------------------------------


def undistort_image(image: np.ndarray, camera: CameraCalibration, alpha: float | None = None) -> tuple:
    """The image as a pinhole camera of the same size would see it, and that camera's intrinsic.

    Args:
        image: [H, W] or [H, W, C] array (uint8 or float) of size `camera.image_wh`.
        camera: its calibration.
        alpha: None keeps the intrinsic (pixels near the border may come from outside the photo and are black);
            in [0, 1], OpenCV's getOptimalNewCameraMatrix choice: 0 keeps only valid pixels, 1 all source pixels.

    Returns:
        (undistorted image [H, W(, C)] of the same dtype, intrinsic [3, 3] of the undistorted image).
    """
    image = np.asarray(image)
    width, height = camera.image_wh
    if image.shape[:2] != (height, width):
        raise InputError(
            "{image} is {size} (height, width) but the camera is for {expected}",
            size=image.shape[:2],
            expected=(height, width),
        )
    if not camera.is_distorted:
        return image.copy(), camera.intrinsic.copy()
    cv2 = import_cv2()
    if alpha is None:
        new_intrinsic = camera.intrinsic.copy()
    else:
        new_intrinsic, _ = cv2.getOptimalNewCameraMatrix(camera.intrinsic, camera.distortion, (width, height), alpha)
    map_x, map_y = cv2.initUndistortRectifyMap(
        camera.intrinsic, camera.distortion, None, new_intrinsic, (width, height), cv2.CV_32FC1
    )
    undistorted = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return undistorted.reshape(image.shape), np.asarray(new_intrinsic, dtype=np.float64)
