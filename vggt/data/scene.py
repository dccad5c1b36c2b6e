"""Reader and writer of the scene folder format (see docs/dataset_format.md).

A scene is a folder::

    scene_name/
        cameras.json          per image: file_name, width, height, intrinsic 3x3, extrinsic 3x4 (camera-from-world)
        images/               the images named in cameras.json
        depth/<stem>.npy      optional: float32 metres, 0 = no depth
        depth/<stem>.png      optional: 16-bit depth, metres = value * cameras.json "depth_scale"
        masks/<stem>.png      optional: non-zero = pixel may be supervised

A dataset root is a folder of scene folders. Cameras follow OpenCV: x right, y down, z forward, and pixel
(row i, column j) has its centre at image coordinates (x=j, y=i).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from vggt.utils.images import is_image_file, read_image_rgb

CAMERAS_FILE = "cameras.json"
IMAGES_DIR = "images"
DEPTH_DIR = "depth"
MASKS_DIR = "masks"
DEPTH_NPY_SUFFIX = ".npy"
DEPTH_PNG_SUFFIX = ".png"
MASK_SUFFIX = ".png"

# Rotation matrices must satisfy |R R^T - I| <= this (max abs entry) and det(R) > 0. Loose enough for float32
# round trips through JSON, tight enough to catch scaled or sheared matrices.
ROTATION_TOLERANCE = 1e-3
# Default metres per unit when depth is written as 16-bit PNG: 0.1 mm steps, up to about 6.5 m.
DEFAULT_DEPTH_PNG_SCALE = 1e-4
# EXIF orientations that swap width and height (rotations by 90 or 270 degrees, with or without a flip).
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_MAX_LISTED = 5


class SceneFormatError(ValueError):
    """A scene folder that breaks the format. The message names the scene and the offending file."""


@dataclass
class Frame:
    """One view of a scene, as read from disk or produced by augmentation.

    image: [H, W, 3] uint8; depth: [H, W] float32 metres (0 = invalid) or None; mask: [H, W] bool or None;
    intrinsic: [3, 3]; extrinsic: [3, 4] camera-from-world.
    """

    image: np.ndarray
    intrinsic: np.ndarray
    extrinsic: np.ndarray
    depth: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class Scene:
    """A scene: cameras for S images, and optionally the pixels, depth and masks.

    `image_names` are the names in cameras.json (relative to images/). Files on disk, when the scene was read
    from a folder, are `image_paths`, `depth_paths` and `mask_paths` (one per image, or None). Arrays that
    were loaded (or generated) are `images` [S, H, W, 3] uint8, `depths` [S, H, W] float32 metres with 0 =
    invalid, and `masks` [S, H, W] bool. `intrinsics` is [S, 3, 3], `extrinsics` [S, 3, 4] camera-from-world,
    `image_sizes` [S, 2] as (height, width).
    """

    name: str
    image_names: list[str]
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    image_sizes: np.ndarray
    image_paths: list[Path] | None = None
    depth_paths: list[Path] | None = None
    mask_paths: list[Path] | None = None
    depth_scale: float | None = None
    images: np.ndarray | None = None
    depths: np.ndarray | None = None
    masks: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.image_names)

    @property
    def has_depth(self) -> bool:
        return self.depths is not None or self.depth_paths is not None

    @property
    def has_masks(self) -> bool:
        return self.masks is not None or self.mask_paths is not None

    def read_frame(self, index: int, with_depth: bool = True, with_mask: bool = True) -> Frame:
        """Frame `index`, from the loaded arrays or else from disk (depth values are checked when read)."""
        if self.images is not None:
            image = self.images[index]
        elif self.image_paths is not None:
            image = read_image(self.image_paths[index], scene_name=self.name)
        else:
            raise ValueError(f"scene '{self.name}' holds neither images nor image paths")
        depth = None
        if with_depth and self.depths is not None:
            depth = self.depths[index]
        elif with_depth and self.depth_paths is not None:
            depth = read_depth(self.depth_paths[index], self.depth_scale, scene_name=self.name)
        mask = None
        if with_mask and self.masks is not None:
            mask = self.masks[index]
        elif with_mask and self.mask_paths is not None:
            mask = read_mask(self.mask_paths[index])
        return Frame(
            image=image,
            intrinsic=self.intrinsics[index],
            extrinsic=self.extrinsics[index],
            depth=depth,
            mask=mask,
        )


def _fail(scene: str, file: Path | str, problem: str) -> SceneFormatError:
    return SceneFormatError(f"scene '{scene}': {file}: {problem}")


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_MAX_LISTED])
    return shown + (f" (and {len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def read_image(path: Path | str, scene_name: str = "?") -> np.ndarray:
    """An image file as [H, W, 3] uint8 RGB, upright (EXIF rotation applied)."""
    try:
        return np.asarray(read_image_rgb(path))
    except ValueError as error:
        raise SceneFormatError(f"scene '{scene_name}': {error}") from None


def read_image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image after its EXIF rotation, read from the header only."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION_TAG) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width


def read_depth(path: Path, depth_scale: float | None = None, scene_name: str = "?") -> np.ndarray:
    """A depth file as [H, W] float32 metres (0 = invalid). Rejects non-finite and negative values."""
    if path.suffix == DEPTH_NPY_SUFFIX:
        depth = np.load(path, allow_pickle=False)
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        depth = depth.astype(np.float32)
    else:
        if depth_scale is None:
            raise _fail(scene_name, path, f"16-bit PNG depth needs a 'depth_scale' in {CAMERAS_FILE}")
        with Image.open(path) as image:
            depth = np.asarray(image).astype(np.float32) * np.float32(depth_scale)
    bad = ~np.isfinite(depth)
    if bad.any():
        raise _fail(scene_name, path, f"{int(bad.sum())} non-finite depth values; write 0 where depth is unknown")
    if (depth < 0).any():
        raise _fail(scene_name, path, f"{int((depth < 0).sum())} negative depth values; write 0 where depth is unknown")
    return depth


def read_mask(path: Path) -> np.ndarray:
    """A mask image as [H, W] bool (True where non-zero)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def _camera_entries(scene: str, cameras_path: Path) -> tuple[list[dict], float | None]:
    try:
        content = json.loads(cameras_path.read_text())
    except json.JSONDecodeError as error:
        raise _fail(scene, cameras_path, f"not valid JSON ({error})") from None
    depth_scale = None
    if isinstance(content, dict):
        depth_scale = content.get("depth_scale")
        content = content.get("images")
    if not isinstance(content, list) or not content:
        raise _fail(scene, cameras_path, 'expected a non-empty list of images, or {"images": [...]}')
    if depth_scale is not None:
        if not isinstance(depth_scale, (int, float)) or not np.isfinite(depth_scale) or depth_scale <= 0:
            raise _fail(scene, cameras_path, f"depth_scale must be a positive number, got {depth_scale!r}")
        depth_scale = float(depth_scale)
    return content, depth_scale


def _matrix(scene: str, where: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(scene, where, f"expected a {shape[0]}x{shape[1]} matrix of numbers") from None
    if matrix.shape != shape:
        raise _fail(scene, where, f"expected a {shape[0]}x{shape[1]} matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise _fail(scene, where, "matrix has non-finite entries")
    return matrix


def check_intrinsic(scene: str, where: str, intrinsic: np.ndarray) -> None:
    """Raise SceneFormatError unless `intrinsic` is a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]."""
    if intrinsic[0, 0] <= 0 or intrinsic[1, 1] <= 0:
        raise _fail(scene, where, f"focal lengths must be positive, got fx={intrinsic[0, 0]}, fy={intrinsic[1, 1]}")
    if intrinsic[1, 0] != 0 or not np.allclose(intrinsic[2], [0.0, 0.0, 1.0]):
        raise _fail(scene, where, "intrinsic must have the form [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")


def check_extrinsic(scene: str, where: str, extrinsic: np.ndarray) -> None:
    """Raise SceneFormatError unless `extrinsic` is [R | t] with R a rotation (orthonormal, det +1)."""
    rotation = extrinsic[:, :3]
    error = np.abs(rotation @ rotation.T - np.eye(3)).max()
    if error > ROTATION_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise _fail(
            scene,
            where,
            f"extrinsic rotation is not a rotation matrix (|R R^T - I| = {error:.2g}, det = "
            f"{np.linalg.det(rotation):.3g}); expected camera-from-world [R | t] with R orthonormal",
        )


def _image_files(directory: Path) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if not file.startswith(".") and is_image_file(file):
                found.add((Path(root) / file).relative_to(directory).as_posix())
    return found


def _sidecar_files(scene: str, directory: Path, image_names: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    """One file per image, named `<stem><suffix>` or `<file_name><suffix>` (the first suffix found wins).

    Images without a file, and files that match no image, are errors.
    """
    paths, missing, known = [], [], set()
    for file_name in image_names:
        bases = (str(PurePosixPath(file_name).with_suffix("")), file_name)
        known.update(bases)
        candidates = [directory / (base + suffix) for suffix in suffixes for base in bases]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(file_name)
        paths.append(found)
    if missing:
        raise _fail(
            scene,
            directory,
            f"{len(missing)} of {len(image_names)} images have no {'/'.join(suffixes)} file here: "
            f"{_listing(missing)}; give every image one, or remove the folder",
        )
    extra = [
        p.relative_to(directory).as_posix()
        for suffix in suffixes
        for p in directory.rglob("*" + suffix)
        if p.relative_to(directory).as_posix()[: -len(suffix)] not in known
    ]
    if extra:
        raise _fail(scene, directory, f"files without an image in {CAMERAS_FILE}: {_listing(extra)}")
    return paths


def _check_depth_file(scene: str, path: Path, size: tuple[int, int]) -> None:
    if path.suffix == DEPTH_NPY_SUFFIX:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise _fail(scene, path, f"unreadable .npy ({error})") from None
        shape = array.shape[:2] if array.ndim == 3 and array.shape[-1] == 1 else array.shape
        if not np.issubdtype(array.dtype, np.floating):
            raise _fail(scene, path, f"depth must be floating point metres, got dtype {array.dtype}")
    else:
        with Image.open(path) as image:
            if image.mode not in _SIXTEEN_BIT_MODES:
                raise _fail(scene, path, f"PNG depth must be 16-bit grayscale, got mode {image.mode}")
            shape = (image.size[1], image.size[0])
    if tuple(shape) != size:
        raise _fail(scene, path, f"depth is {tuple(shape)} but the image is {size} (height, width)")


def load_scene(path: Path | str, load_data: bool = True, use_depth: bool = True, use_masks: bool = True) -> Scene:
    """Read and validate a scene folder.

    With `load_data` the images, depth and masks are read into arrays (all images must then share one
    size); without it only cameras.json and file headers are read, and `Scene.read_frame` reads pixels
    later. `use_depth=False` / `use_masks=False` ignore the depth/ and masks/ folders.
    Raises SceneFormatError (a ValueError) naming the scene and file for any malformed part.
    """
    root = Path(path)
    name = root.name
    if not root.is_dir():
        raise SceneFormatError(f"scene '{name}': {root} is not a folder")
    cameras_path = root / CAMERAS_FILE
    if not cameras_path.is_file():
        raise _fail(name, cameras_path, "missing; every scene folder needs a cameras.json (see docs/dataset_format.md)")
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise _fail(name, images_dir, "missing images folder")

    entries, depth_scale = _camera_entries(name, cameras_path)
    image_names, intrinsics, extrinsics, sizes = [], [], [], []
    for index, entry in enumerate(entries):
        where = f"{cameras_path} image #{index}"
        if not isinstance(entry, dict):
            raise _fail(name, where, "each image must be an object")
        missing_keys = [k for k in ("file_name", "width", "height", "intrinsic", "extrinsic") if k not in entry]
        if missing_keys:
            raise _fail(name, where, f"missing keys {missing_keys}")
        file_name = entry["file_name"]
        if not isinstance(file_name, str) or PurePosixPath(file_name).is_absolute() or ".." in file_name.split("/"):
            raise _fail(name, where, f"file_name must be a path inside images/, got {file_name!r}")
        where = f"{cameras_path} ({file_name})"
        width, height = entry["width"], entry["height"]
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise _fail(name, where, f"width and height must be positive integers, got {width!r} x {height!r}")
        intrinsic = _matrix(name, where + " intrinsic", entry["intrinsic"], (3, 3))
        extrinsic = _matrix(name, where + " extrinsic", entry["extrinsic"], (3, 4))
        check_intrinsic(name, where + " intrinsic", intrinsic)
        check_extrinsic(name, where + " extrinsic", extrinsic)
        image_names.append(file_name)
        intrinsics.append(intrinsic)
        extrinsics.append(extrinsic)
        sizes.append((height, width))

    duplicates = {n for n in image_names if image_names.count(n) > 1}
    if duplicates:
        raise _fail(name, cameras_path, f"images listed more than once: {_listing(list(duplicates))}")
    on_disk = _image_files(images_dir)
    missing = [n for n in image_names if n not in on_disk]
    if missing:
        raise _fail(name, images_dir, f"{len(missing)} images in {CAMERAS_FILE} are missing: {_listing(missing)}")
    extra = on_disk - set(image_names)
    if extra:
        raise _fail(
            name,
            images_dir,
            f"{len(on_disk)} images on disk but {len(image_names)} in {CAMERAS_FILE}; "
            f"not listed: {_listing(list(extra))}",
        )
    image_paths = [images_dir / n for n in image_names]
    for image_path, size in zip(image_paths, sizes):
        try:
            actual = read_image_size(image_path)
        except OSError as error:
            raise _fail(name, image_path, f"unreadable image ({error})") from None
        if actual != size:
            raise _fail(name, image_path, f"image is {actual} (height, width) but {CAMERAS_FILE} says {size}")

    depth_paths = None
    if use_depth and (root / DEPTH_DIR).is_dir():
        depth_paths = _sidecar_files(name, root / DEPTH_DIR, image_names, (DEPTH_NPY_SUFFIX, DEPTH_PNG_SUFFIX))
        if depth_scale is None and any(p.suffix == DEPTH_PNG_SUFFIX for p in depth_paths):
            raise _fail(name, cameras_path, "depth/ holds PNG depth but there is no 'depth_scale' (metres per unit)")
        for depth_path, size in zip(depth_paths, sizes):
            _check_depth_file(name, depth_path, size)
    mask_paths = None
    if use_masks and (root / MASKS_DIR).is_dir():
        mask_paths = _sidecar_files(name, root / MASKS_DIR, image_names, (MASK_SUFFIX,))
        for mask_path, size in zip(mask_paths, sizes):
            with Image.open(mask_path) as mask:
                if (mask.size[1], mask.size[0]) != size:
                    raise _fail(name, mask_path, f"mask is {(mask.size[1], mask.size[0])} but the image is {size}")

    scene = Scene(
        name=name,
        image_names=image_names,
        intrinsics=np.stack(intrinsics),
        extrinsics=np.stack(extrinsics),
        image_sizes=np.asarray(sizes, dtype=np.int64),
        image_paths=image_paths,
        depth_paths=depth_paths,
        mask_paths=mask_paths,
        depth_scale=depth_scale,
    )
    if load_data:
        if len(set(sizes)) > 1:
            raise _fail(name, images_dir, "images differ in size; use load_scene(..., load_data=False) and read_frame")
        frames = [scene.read_frame(i) for i in range(scene.num_frames)]
        scene.images = np.stack([f.image for f in frames])
        scene.depths = np.stack([f.depth for f in frames]) if depth_paths is not None else None
        scene.masks = np.stack([f.mask for f in frames]) if mask_paths is not None else None
    return scene


def list_scenes(root: Path | str) -> list[Path]:
    """The scene folders (those holding a cameras.json) directly inside a dataset root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root {root} is not a folder")
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and (p / CAMERAS_FILE).is_file())
    if not scenes:
        raise ValueError(f"dataset root {root} holds no scene folders (sub-folders with a {CAMERAS_FILE})")
    return scenes


def camera_entries(scene: Scene) -> list[dict]:
    """The per-image cameras.json objects of a scene."""
    return [
        {
            "file_name": file_name,
            "width": int(size[1]),
            "height": int(size[0]),
            "intrinsic": np.asarray(intrinsic, dtype=np.float64).tolist(),
            "extrinsic": np.asarray(extrinsic, dtype=np.float64).tolist(),
        }
        for file_name, size, intrinsic, extrinsic in zip(
            scene.image_names, scene.image_sizes, scene.intrinsics, scene.extrinsics
        )
    ]


def write_scene(
    out_dir: Path | str,
    scene: Scene,
    depth_format: str = "npy",
    depth_scale: float = DEFAULT_DEPTH_PNG_SCALE,
    overwrite: bool = False,
) -> Path:
    """Write `scene` as a scene folder at `out_dir` and return its path.

    Images come from `scene.images` (encoded by each file name's extension) or are copied from
    `scene.image_paths`; depth from `scene.depths` or `scene.depth_paths`, written as float32 .npy
    (`depth_format="npy"`) or 16-bit PNG with `depth_scale` metres per unit (`"png"`). The folder is
    assembled beside `out_dir` and moved into place at the end, so a failure leaves nothing half-written.
    """
    if depth_format not in ("npy", "png"):
        raise ValueError(f"depth_format must be 'npy' or 'png', got {depth_format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} is not empty; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        document: dict = {"images": camera_entries(scene)}
        if scene.has_depth and depth_format == "png":
            document = {"depth_scale": depth_scale, **document}
        (staging / CAMERAS_FILE).write_text(json.dumps(document, indent=1))
        for index, file_name in enumerate(scene.image_names):
            stem = str(PurePosixPath(file_name).with_suffix(""))
            image_path = staging / IMAGES_DIR / file_name
            image_path.parent.mkdir(parents=True, exist_ok=True)
            if scene.images is None and scene.image_paths is not None:
                shutil.copyfile(scene.image_paths[index], image_path)
                frame = scene.read_frame(index) if scene.has_depth or scene.has_masks else None
            else:
                frame = scene.read_frame(index)
                Image.fromarray(frame.image).save(image_path)
            if frame is not None and frame.depth is not None:
                _write_depth(staging / DEPTH_DIR / stem, frame.depth, depth_format, depth_scale)
            if frame is not None and frame.mask is not None:
                mask_path = staging / MASKS_DIR / (stem + MASK_SUFFIX)
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame.mask.astype(np.uint8) * 255).save(mask_path)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _write_depth(stem_path: Path, depth: np.ndarray, depth_format: str, depth_scale: float) -> None:
    stem_path.parent.mkdir(parents=True, exist_ok=True)
    depth = np.asarray(depth, dtype=np.float32)
    if depth_format == "npy":
        np.save(stem_path.with_name(stem_path.name + DEPTH_NPY_SUFFIX), depth)
        return
    units = np.round(depth / depth_scale)
    if units.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(
            f"depth up to {depth.max():.3g} m does not fit 16 bits at depth_scale={depth_scale}; "
            f"use a larger depth_scale or depth_format='npy'"
        )
    Image.fromarray(units.astype(np.uint16)).save(stem_path.with_name(stem_path.name + DEPTH_PNG_SUFFIX))
