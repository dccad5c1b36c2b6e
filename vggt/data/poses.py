"""Known camera poses (`poses=` / `--poses FILE`): read them from a JSON file or COLMAP images.

`read_poses(path, image_names)` gives one OpenCV camera-to-world pose per image (x right, y down, z forward), NaN
for an image without one. `path` is one of (formats in docs/dataset_format.md, "Known poses"):

- a JSON file: `{"poses": {"<image name>": {"camera_to_world": M} or {"world_to_camera": M}, ...}}`, M a 4 x 4 or
  3 x 4 rigid transform (rows);
- a COLMAP `images.txt` / `images.bin`, or a sparse model folder holding one: each image's `QW QX QY QZ TX TY TZ`,
  COLMAP's world-to-camera rotation (quaternion, scalar first) and translation, by image name.

A name matches an image's name or, when unique, its file name without folders. Images not in the file have no
pose; poses for names that match no image are an error naming them (so a typo is not silently dropped).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt.errors import InputError
from vggt.utils.geometry import closed_form_inverse_se3
from vggt.utils.rotation import quat_to_mat

# A rotation block R is accepted when |R^T R - I| and |det R - 1| stay below this (poses written with few digits).
ROTATION_TOLERANCE = 1e-3
COLMAP_IMAGE_FILES = ("images.bin", "images.txt")
COLMAP_IMAGE_FIELDS = 10  # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME
COLMAP_POINT2D_BYTES = 24  # float64 x, float64 y, int64 point3D_id
MAX_NAMES_IN_ERRORS = 5
DOCS = "see docs/dataset_format.md, 'Known poses'"


@dataclass(frozen=True)
class KnownPoses:
    """The known pose of each of S images: image_names [S], camera_to_world [S, 4, 4] float64 (OpenCV axes; NaN
    for an image without a pose)."""

    image_names: tuple[str, ...]
    camera_to_world: np.ndarray

    @property
    def known(self) -> np.ndarray:
        """[S] bool: the images with a pose."""
        return np.isfinite(self.camera_to_world).all(axis=(1, 2))

    @property
    def world_to_camera(self) -> np.ndarray:
        """[S, 3, 4] camera-from-world extrinsics (NaN where unknown)."""
        return closed_form_inverse_se3(self.camera_to_world)[:, :3]

    def subset(self, indices: Sequence[int]) -> KnownPoses:
        return KnownPoses(tuple(self.image_names[i] for i in indices), self.camera_to_world[list(indices)])


def rigid_matrix(values: Any, label: str) -> np.ndarray:
    """A [4, 4] rigid transform from a 4 x 4 or 3 x 4 nested list; `label` names it in errors."""
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("{label} must be a 4 x 4 or 3 x 4 matrix of numbers; {docs}", label=label, docs=DOCS) from None
    if matrix.shape not in ((3, 4), (4, 4)) or not np.isfinite(matrix).all():
        raise InputError(
            "{label} must be a 4 x 4 or 3 x 4 matrix of finite numbers, got shape {shape}; {docs}",
            label=label,
            shape=list(matrix.shape),
            docs=DOCS,
        )
    if matrix.shape == (4, 4) and not np.allclose(matrix[3], [0, 0, 0, 1], atol=ROTATION_TOLERANCE):
        raise InputError("{label}: the last row of a 4 x 4 pose must be [0, 0, 0, 1]", label=label)
    rotation = matrix[:3, :3]
    orthogonality = np.abs(rotation.T @ rotation - np.eye(3)).max()
    if orthogonality > ROTATION_TOLERANCE or abs(np.linalg.det(rotation) - 1) > ROTATION_TOLERANCE:
        raise InputError(
            "{label}: the 3 x 3 block is not a rotation (orthonormal, determinant +1); give rigid camera poses",
            label=label,
        )
    rigid = np.eye(4)
    rigid[:3] = matrix[:3]
    return rigid


def colmap_world_to_camera(qvec: Sequence[float], tvec: Sequence[float], label: str) -> np.ndarray:
    """[4, 4] world-to-camera transform of COLMAP's quaternion (w, x, y, z) and translation."""
    qvec = np.asarray(qvec, dtype=np.float64)
    if not np.isfinite(qvec).all() or not np.isfinite(tvec).all() or np.linalg.norm(qvec) == 0:
        raise InputError("{label}: the quaternion must be non-zero and all values finite", label=label)
    matrix = np.eye(4)
    matrix[:3, :3] = quat_to_mat(torch.from_numpy(np.roll(qvec, -1))).numpy()  # scalar-last there
    matrix[:3, 3] = tvec
    return matrix


# --- COLMAP images.txt / images.bin ------------------------------------------------------------------------------


def _parse_images_txt(data: bytes) -> dict[str, np.ndarray]:
    """Two lines per image: `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`, then its 2D points (possibly empty)."""
    lines = [line for line in data.decode("utf-8").splitlines() if not line.lstrip().startswith("#")]
    poses, index = {}, 0
    while index < len(lines):
        fields = lines[index].split()
        index += 1
        if not fields:
            continue
        if len(fields) < COLMAP_IMAGE_FIELDS:
            raise ValueError(f"an image line has {len(fields)} fields, not {COLMAP_IMAGE_FIELDS}: {' '.join(fields)}")
        values = [float(v) for v in fields[1:8]]
        poses[fields[9]] = colmap_world_to_camera(values[:4], values[4:], f"COLMAP image {fields[9]!r}")
        index += 1  # its points line
    return poses


def _parse_images_bin(data: bytes) -> dict[str, np.ndarray]:
    """uint64 count, then per image: uint32 id, float64 qvec[4], float64 tvec[3], uint32 camera id, the name
    (NUL-terminated), uint64 point count and 24 bytes per point, all little endian."""
    (count,), offset, poses = struct.unpack_from("<Q", data, 0), 8, {}
    head = struct.Struct("<I7dI")
    for _ in range(count):
        values = head.unpack_from(data, offset)
        offset += head.size
        end = data.index(b"\x00", offset)
        name = data[offset:end].decode("utf-8")
        (num_points,) = struct.unpack_from("<Q", data, end + 1)
        offset = end + 1 + 8 + COLMAP_POINT2D_BYTES * num_points
        poses[name] = colmap_world_to_camera(values[1:5], values[5:8], f"COLMAP image {name!r}")
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes left after {count} images")
    return poses


def read_colmap_images(path: Path) -> dict[str, np.ndarray]:
    """Image name -> [4, 4] world-to-camera of a COLMAP images.txt / images.bin, or of a model folder's."""
    if path.is_dir():
        found = next((path / name for name in COLMAP_IMAGE_FILES if (path / name).is_file()), None)
        if found is None:
            raise InputError("{path} has no images.bin or images.txt (COLMAP's camera poses)", path=path)
        path = found
    parse = _parse_images_bin if path.suffix == ".bin" else _parse_images_txt
    try:
        return parse(path.read_bytes())
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
        raise InputError("{path} is not a COLMAP images file ({error})", path=path, error=error) from None


# --- JSON ---------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, np.ndarray]:
    """Image name -> [4, 4] camera-to-world of a JSON poses file."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError("cannot read poses file {path}: {error}", path=path, error=error) from None
    if not isinstance(content, dict) or not isinstance(content.get("poses"), dict):
        raise InputError("{path} must hold an object with 'poses' (image name -> pose); {docs}", path=path, docs=DOCS)
    poses = {}
    for name, entry in content["poses"].items():
        label = f"{path} pose of {name!r}"
        keys = set(entry) & {"camera_to_world", "world_to_camera"} if isinstance(entry, dict) else set()
        if len(keys) != 1:
            raise InputError(
                "{label} must be an object with exactly one of 'camera_to_world', 'world_to_camera'; {docs}",
                label=label,
                docs=DOCS,
            )
        key = keys.pop()
        matrix = rigid_matrix(entry[key], f"{label} ({key})")
        poses[str(name)] = matrix if key == "camera_to_world" else closed_form_inverse_se3(matrix)
    return poses


# --- matching poses to images ---------------------------------------------------------------------------------


def _match(
    poses: dict[str, np.ndarray], image_names: Sequence[str], source: Path, ignored: Collection[str] = ()
) -> np.ndarray:
    """[S, 4, 4] camera-to-world of the images (NaN without one); names matching no image are an error, unless
    they match an `ignored` name (or its file name)."""
    by_basename: dict[str, list[str]] = {}
    for name in poses:
        by_basename.setdefault(Path(name).name, []).append(name)
    matched = np.full((len(image_names), 4, 4), np.nan)
    used = set()
    for i, image in enumerate(image_names):
        candidates = [image] if image in poses else by_basename.get(Path(image).name, [])
        if len(candidates) == 1:
            matched[i] = poses[candidates[0]]
            used.add(candidates[0])
    ignored_names = {str(n) for n in ignored} | {Path(n).name for n in ignored}
    unused = [name for name in poses if name not in used and Path(name).name not in ignored_names]
    if unused:
        raise InputError(
            "{path} has poses for {count} names that are not among the input photos (e.g. {names}); remove them or "
            "add those photos",
            path=source,
            count=len(unused),
            names=", ".join(unused[:MAX_NAMES_IN_ERRORS]),
        )
    return matched


def read_poses(path: Path | str, image_names: Sequence[str], ignored_names: Collection[str] = ()) -> KnownPoses:
    """The known pose of each image (module docstring).

    Args:
        path: a JSON file, a COLMAP images.txt / images.bin, or a COLMAP sparse model folder.
        image_names: S image names (file names relative to the images folder) to find the poses by.
        ignored_names: names of input images left out of the reconstruction (`--max-frames`): their poses in
            the file are skipped instead of refused as unknown names.

    Returns:
        KnownPoses: camera-to-world [S, 4, 4], NaN for the images the file does not name.
    """
    path, image_names = Path(path), [str(name) for name in image_names]
    if not path.exists():
        raise InputError("poses file {path} does not exist", path=path)
    if path.suffix.lower() == ".json":
        camera_to_world = _read_json(path)
    elif path.is_dir() or path.name in COLMAP_IMAGE_FILES:
        camera_to_world = {name: closed_form_inverse_se3(m) for name, m in read_colmap_images(path).items()}
    else:
        raise InputError(
            "{path} is neither a .json file nor COLMAP images (images.bin, images.txt or a model folder); {docs}",
            path=path,
            docs=DOCS,
        )
    return KnownPoses(tuple(image_names), _match(camera_to_world, image_names, path, ignored_names))
