"""The folder layout `vggt` reads and writes, and its one cameras.json reader and writer.

A scene folder (docs/dataset_format.md) holds `cameras.json`, `images/`, and optionally `depth/`, `masks/` and
`tracks.npz`.
The output folder of `vggt reconstruct` is a scene folder plus `sparse/0/` (COLMAP), `points.ply`, `scene.glb`
and `predictions.npz`. cameras.json is a list of images, or `{"images": [...]}` with optional `depth_scale`
(metres per unit of 16-bit PNG depth) and `convention`; each image has `file_name`, `width`, `height`,
`intrinsic` 3x3 and `extrinsic` 3x4 (camera-from-world), and may name its `depth_file`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vggt.errors import InputError, SceneFormatError
from vggt.utils.cameras import Cameras
from vggt.utils.paths import confined_path

CAMERAS_FILE = "cameras.json"
IMAGES_DIR = "images"
DEPTH_DIR = "depth"
MASKS_DIR = "masks"
TRACKS_FILE = "tracks.npz"  # optional ground-truth point tracks (vggt.data.tracks)
DEPTH_NPY_SUFFIX = ".npy"
DEPTH_PNG_SUFFIX = ".png"
MASK_SUFFIX = ".png"
# Outputs of a reconstruction besides the scene folder.
SPARSE_DIR = Path("sparse") / "0"
PLY_FILE = "points.ply"
GLB_FILE = "scene.glb"
PREDICTIONS_FILE = "predictions.npz"
DEPTH_PREVIEW_DIR = "depth_preview"  # colour previews of depth/, apart so that no reader takes them for depth
TRANSFORMS_FILE = "transforms.json"  # nerfstudio's cameras (vggt.export.trainer)

CAMERA_CONVENTION = (
    "OpenCV: x right, y down, z forward; extrinsic [R | t] maps world to camera (x_cam = R x_world + t); "
    "intrinsic in pixels of the image of size width x height, the centre of the top-left pixel at (0, 0)"
)
# Rotation matrices must satisfy |R R^T - I| <= this (max abs entry) and det(R) > 0. Loose enough for float32
# round trips through JSON, tight enough to catch scaled or sheared matrices.
ROTATION_TOLERANCE = 1e-3
REQUIRED_KEYS = ("file_name", "width", "height", "intrinsic", "extrinsic")
# The largest focal length or principal point (pixels) taken: beyond it, products overflow float32 to infinity.
MAX_PIXEL_VALUE = 1e9
MAX_LISTED = 5


def scene_error(scene: str, file: Path | str, problem: str, **values: Any) -> SceneFormatError:
    """`scene '<scene>': <file>: <problem>`, with `problem` a message template (see vggt.errors)."""
    return SceneFormatError(
        "scene {scene_name!r}: {scene_file}: " + problem, scene_name=scene, scene_file=file, **values
    )


def listing(names: Sequence[str]) -> str:
    """At most MAX_LISTED of `names`, sorted, and how many more."""
    shown = ", ".join(sorted(names)[:MAX_LISTED])
    return shown + (f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def safe_file_name(name: str) -> str:
    """The last path component of `name` ("/" and "\\" both count as separators), without control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())
    return base if base not in ("", ".", "..") else "image"


def unique_file_names(names: Sequence[str]) -> list[str]:
    """Safe file names for `names`, unique even on case-insensitive file systems: a later name that collides
    (ignoring case) with an earlier one gets `-2`, `-3`, ... before its extension."""
    safe = [safe_file_name(n) for n in names]
    taken: set[str] = set()
    unique = []
    for name in safe:
        candidate, count = name, 1
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
        while candidate.lower() in taken:
            count += 1
            candidate = f"{stem}-{count}{suffix}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


def depth_file_stems(names: Sequence[str]) -> list[str]:
    """File stems for the depth maps of image files `names` (unique, as `unique_file_names` gives them): the
    image's stem (`a.jpg` -> `a`), or its whole name where the stem equals, ignoring case, another image's stem
    or whole name (`a.jpg`, `a.png`, `a.jpg.png` -> `a.jpg`, `a.png`, `a.jpg.png`). Unique by construction: a
    stem kept collides with no other stem and no whole name, and whole names are unique. The scene reader looks
    for `<name>.npy` before `<stem>.npy`, so it finds each map again."""
    stems = [PurePosixPath(n).stem for n in names]
    counts: dict[str, int] = {}
    for key in [s.lower() for s in stems] + [n.lower() for n in names]:
        counts[key] = counts.get(key, 0) + 1
    return [s if counts[s.lower()] == 1 else n for s, n in zip(stems, names)]


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class CamerasFile:
    """What a cameras.json holds: the cameras, the 16-bit PNG depth scale (or None) and each entry as read."""

    cameras: Cameras
    depth_scale: float | None
    entries: list[dict[str, Any]]


def _matrix(scene: str, where: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise scene_error(
            scene, where, "expected a {rows}x{cols} matrix of numbers", rows=shape[0], cols=shape[1]
        ) from None
    if matrix.shape != shape:
        raise scene_error(
            scene,
            where,
            "expected a {rows}x{cols} matrix, got shape {shape}",
            rows=shape[0],
            cols=shape[1],
            shape=matrix.shape,
        )
    if not np.isfinite(matrix).all():
        raise scene_error(scene, where, "matrix has non-finite entries")
    return matrix


def check_intrinsic(scene: str, where: str, intrinsic: np.ndarray) -> None:
    """Raise SceneFormatError unless `intrinsic` is a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]."""
    if intrinsic[0, 0] <= 0 or intrinsic[1, 1] <= 0:
        raise scene_error(
            scene, where, "focal lengths must be positive, got fx={fx}, fy={fy}", fx=intrinsic[0, 0], fy=intrinsic[1, 1]
        )
    if intrinsic[1, 0] != 0 or not np.allclose(intrinsic[2], [0.0, 0.0, 1.0]):
        raise scene_error(scene, where, "intrinsic must have the form [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    if np.abs(intrinsic).max() > MAX_PIXEL_VALUE:
        raise scene_error(
            scene, where, "intrinsic values must be at most {limit:g} pixels, got {value:g}", limit=MAX_PIXEL_VALUE,
            value=np.abs(intrinsic).max(),
        )  # fmt: skip


def check_extrinsic(scene: str, where: str, extrinsic: np.ndarray) -> None:
    """Raise SceneFormatError unless `extrinsic` is [R | t] with R a rotation (orthonormal, det +1)."""
    rotation = extrinsic[:, :3]
    error = np.abs(rotation @ rotation.T - np.eye(3)).max()
    if error > ROTATION_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise scene_error(
            scene,
            where,
            "extrinsic rotation is not a rotation matrix (|R R^T - I| = {error:.2g}, det = {det:.3g}); "
            "expected camera-from-world [R | t] with R orthonormal",
            error=error,
            det=np.linalg.det(rotation),
        )


def _document(scene: str, path: Path) -> tuple[list, float | None]:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise scene_error(scene, path, "not valid JSON ({error})", error=error) from None
    depth_scale = None
    if isinstance(content, dict):
        depth_scale = content.get("depth_scale")
        content = content.get("images")
    if not isinstance(content, list) or not content:
        raise scene_error(scene, path, 'expected a non-empty list of images, or {{"images": [...]}}')
    if depth_scale is not None:
        if not isinstance(depth_scale, (int, float)) or not np.isfinite(depth_scale) or depth_scale <= 0:
            raise scene_error(scene, path, "depth_scale must be a positive number, got {value!r}", value=depth_scale)
        depth_scale = float(depth_scale)
    return content, depth_scale


def _entry(scene: str, path: Path, index: int, entry: object) -> tuple[str, np.ndarray, np.ndarray, tuple[int, int]]:
    """(file name, intrinsic, extrinsic, (width, height)) of image #index, checked."""
    where = f"{path} image #{index}"
    if not isinstance(entry, dict):
        raise scene_error(scene, where, "each image must be an object")
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise scene_error(scene, where, "missing keys {missing}", missing=missing)
    file_name = entry["file_name"]
    try:
        confined_path(path.parent / IMAGES_DIR, file_name)
    except InputError:
        problem = "file_name must be a path inside images/, got {name!r}"
        raise scene_error(scene, where, problem, name=file_name) from None
    where = f"{path} ({file_name})"
    width, height = entry["width"], entry["height"]
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise scene_error(
            scene, where, "width and height must be positive integers, got {w!r} x {h!r}", w=width, h=height
        )
    intrinsic = _matrix(scene, where + " intrinsic", entry["intrinsic"], (3, 3))
    extrinsic = _matrix(scene, where + " extrinsic", entry["extrinsic"], (3, 4))
    check_intrinsic(scene, where + " intrinsic", intrinsic)
    check_extrinsic(scene, where + " extrinsic", extrinsic)
    return file_name, intrinsic, extrinsic, (width, height)


def read_cameras_json(path: str | Path, scene: str | None = None) -> CamerasFile:
    """Read and check a cameras.json. Raises SceneFormatError naming the scene (default: the folder) and entry."""
    path = Path(path)
    scene = path.parent.name if scene is None else scene
    document, depth_scale = _document(scene, path)
    parsed = [_entry(scene, path, i, entry) for i, entry in enumerate(document)]
    names = [p[0] for p in parsed]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise scene_error(scene, path, "images listed more than once: {names}", names=listing(list(duplicates)))
    cameras = Cameras(
        names, np.stack([p[2] for p in parsed]), np.stack([p[1] for p in parsed]), np.array([p[3] for p in parsed])
    )
    return CamerasFile(cameras=cameras, depth_scale=depth_scale, entries=document)


# ------------------------------------------------------------------------------------------------ writing


def write_cameras_json(
    path: str | Path,
    cameras: Cameras,
    extra: Sequence[dict[str, Any]] | None = None,
    depth_scale: float | None = None,
    metric: bool | None = None,
) -> Path:
    """Write `cameras` as cameras.json; `extra` adds per-image fields (e.g. `depth_file`); `metric` (when known)
    says whether translations and depth are in metres (True) or up to an unknown scale (False)."""
    images = []
    for i, name in enumerate(cameras.names):
        entry: dict[str, Any] = {
            "file_name": name,
            "width": int(cameras.image_wh[i, 0]),
            "height": int(cameras.image_wh[i, 1]),
            "extrinsic": cameras.extrinsics[i].tolist(),
            "intrinsic": cameras.intrinsics[i].tolist(),
        }
        if extra is not None:
            entry.update(extra[i])
        images.append(entry)
    document: dict[str, Any] = {"convention": CAMERA_CONVENTION}
    if depth_scale is not None:
        document["depth_scale"] = depth_scale
    if metric is not None:
        document["metric"] = metric
    document["images"] = images
    path = Path(path)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path
