"""Reader and writer of the scene folder format (see docs/dataset_format.md).

A scene is a folder::

    scene_name/
        cameras.json          per image: file_name, width, height, intrinsic 3x3, extrinsic 3x4 (camera-from-world)
        images/               the images named in cameras.json
        depth/<stem>.npy      optional: float32 metres, 0 = no depth
        depth/<stem>.png      optional: 16-bit depth, metres = value * cameras.json "depth_scale"
        masks/<stem>.png      optional: non-zero = pixel may be supervised
        tracks.npz            optional: ground-truth point tracks (vggt.data.tracks)

A dataset root is a folder of scene folders. Cameras follow OpenCV: x right, y down, z forward, and pixel
(row i, column j) has its centre at image coordinates (x=j, y=i).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from vggt.data.layout import (
    CAMERAS_FILE,
    DEPTH_DIR,
    DEPTH_NPY_SUFFIX,
    DEPTH_PNG_SUFFIX,
    IMAGES_DIR,
    MASK_SUFFIX,
    MASKS_DIR,
    TRACKS_FILE,
    check_extrinsic,
    listing,
    read_cameras_json,
    scene_error,
    write_cameras_json,
)
from vggt.data.tracks import SceneTracks, read_tracks, write_tracks
from vggt.errors import InputError, SceneFormatError
from vggt.utils.cameras import Cameras
from vggt.utils.files import atomic_directory
from vggt.utils.images import image_size_upright, is_image_file, read_image_rgb

__all__ = ["Frame", "Scene", "SceneFormatError", "check_extrinsic", "list_scenes", "load_scene", "write_scene"]

# Default metres per unit when depth is written as 16-bit PNG: 0.1 mm steps, up to about 6.5 m.
DEFAULT_DEPTH_PNG_SCALE = 1e-4
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


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
    `image_hw` [S, 2] as (height, width). `tracks`: ground-truth point tracks (tracks.npz), or None.
    """

    name: str
    image_names: list[str]
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    image_hw: np.ndarray
    image_paths: list[Path] | None = None
    depth_paths: list[Path] | None = None
    mask_paths: list[Path] | None = None
    depth_scale: float | None = None
    images: np.ndarray | None = None
    depths: np.ndarray | None = None
    masks: np.ndarray | None = None
    tracks: SceneTracks | None = None

    @property
    def num_frames(self) -> int:
        return len(self.image_names)

    @property
    def cameras(self) -> Cameras:
        return Cameras(self.image_names, self.extrinsics, self.intrinsics, np.asarray(self.image_hw)[:, ::-1])

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
            raise SceneFormatError("scene {name!r} holds neither images nor image paths", name=self.name)
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


def read_image(path: Path | str, scene_name: str = "?") -> np.ndarray:
    """An image file as [H, W, 3] uint8 RGB, upright (EXIF rotation applied)."""
    try:
        return np.asarray(read_image_rgb(path))
    except InputError as error:
        raise SceneFormatError("scene {scene!r}: {error}", scene=scene_name, error=error) from None


def read_depth(path: Path, depth_scale: float | None = None, scene_name: str = "?") -> np.ndarray:
    """A depth file as [H, W] float32 metres (0 = invalid). Rejects non-finite and negative values."""
    if path.suffix == DEPTH_NPY_SUFFIX:
        depth = np.load(path, allow_pickle=False)
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        depth = depth.astype(np.float32, copy=False)
    else:
        if depth_scale is None:
            raise scene_error(
                scene_name, path, "16-bit PNG depth needs a 'depth_scale' in {cameras_json}", cameras_json=CAMERAS_FILE
            )
        with Image.open(path) as image:
            depth = np.multiply(np.asarray(image), np.float32(depth_scale), dtype=np.float32)
    if depth.size == 0 or (depth.min() >= 0 and np.isfinite(depth.max())):  # fast path: NaN fails both tests
        return depth
    bad = int((~np.isfinite(depth)).sum())
    if bad:
        raise scene_error(scene_name, path, "{n} non-finite depth values; write 0 where depth is unknown", n=bad)
    negative = int((depth < 0).sum())
    if negative:
        raise scene_error(scene_name, path, "{n} negative depth values; write 0 where depth is unknown", n=negative)
    return depth


def read_mask(path: Path) -> np.ndarray:
    """A mask image as [H, W] bool (True where non-zero)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def _image_files(directory: Path) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if not file.startswith(".") and is_image_file(file):
                found.add((Path(root) / file).relative_to(directory).as_posix())
    return found


def _sidecar_files(scene: str, directory: Path, image_names: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    """One file per image, named `<file_name><suffix>` or `<stem><suffix>`, in that order, the first suffix found
    winning (whole names first, so that `a.jpg.png`'s depth is not taken for `a.jpg`'s).

    Images without a file, and files that match no image, are errors.
    """
    paths, missing, known = [], [], set()
    for file_name in image_names:
        bases = (file_name, str(PurePosixPath(file_name).with_suffix("")))
        known.update(bases)
        candidates = [directory / (base + suffix) for suffix in suffixes for base in bases]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(file_name)
        paths.append(found)
    if missing:
        raise scene_error(
            scene,
            directory,
            "{n} of {total} images have no {suffixes} file here: {names}; give every image one, or remove the folder",
            n=len(missing),
            total=len(image_names),
            suffixes="/".join(suffixes),
            names=listing(missing),
        )
    extra = [
        p.relative_to(directory).as_posix()
        for suffix in suffixes
        for p in directory.rglob("*" + suffix)
        if p.relative_to(directory).as_posix()[: -len(suffix)] not in known
    ]
    if extra:
        raise scene_error(
            scene,
            directory,
            "files without an image in {cameras_json}: {names}",
            cameras_json=CAMERAS_FILE,
            names=listing(extra),
        )
    return paths


def _check_depth_file(scene: str, path: Path, size_hw: tuple[int, int]) -> None:
    if path.suffix == DEPTH_NPY_SUFFIX:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise scene_error(scene, path, "unreadable .npy ({error})", error=error) from None
        shape = array.shape[:2] if array.ndim == 3 and array.shape[-1] == 1 else array.shape
        if not np.issubdtype(array.dtype, np.floating):
            raise scene_error(scene, path, "depth must be floating point metres, got dtype {dtype}", dtype=array.dtype)
    else:
        with Image.open(path) as image:
            if image.mode not in _SIXTEEN_BIT_MODES:
                raise scene_error(scene, path, "PNG depth must be 16-bit grayscale, got mode {mode}", mode=image.mode)
            shape = (image.size[1], image.size[0])
    if tuple(shape) != size_hw:
        raise scene_error(
            scene, path, "depth is {shape} but the image is {size} (height, width)", shape=tuple(shape), size=size_hw
        )


def _check_images(name: str, images_dir: Path, cameras: Cameras) -> list[Path]:
    """The image files of `cameras`, each present and of the size cameras.json gives; no unlisted images."""
    on_disk = _image_files(images_dir)
    missing = [n for n in cameras.names if n not in on_disk]
    if missing:
        raise scene_error(
            name,
            images_dir,
            "{n} images in {cameras_json} are missing: {names}",
            n=len(missing),
            cameras_json=CAMERAS_FILE,
            names=listing(missing),
        )
    extra = on_disk - set(cameras.names)
    if extra:
        raise scene_error(
            name,
            images_dir,
            "{on_disk} images on disk but {listed} in {cameras_json}; not listed: {names}",
            on_disk=len(on_disk),
            listed=len(cameras),
            cameras_json=CAMERAS_FILE,
            names=listing(list(extra)),
        )
    image_paths = [images_dir / n for n in cameras.names]
    for image_path, size_hw in zip(image_paths, cameras.image_hw):
        size_hw = tuple(int(v) for v in size_hw)
        try:
            width, height = image_size_upright(image_path)
        except OSError as error:
            raise scene_error(name, image_path, "unreadable image ({error})", error=error) from None
        if (height, width) != size_hw:
            raise scene_error(
                name,
                image_path,
                "image is {actual} (height, width) but {cameras_json} says {size}",
                actual=(height, width),
                cameras_json=CAMERAS_FILE,
                size=size_hw,
            )
    return image_paths


def _depth_files(name: str, root: Path, cameras: Cameras, depth_scale: float | None) -> list[Path]:
    depth_paths = _sidecar_files(name, root / DEPTH_DIR, list(cameras.names), (DEPTH_NPY_SUFFIX, DEPTH_PNG_SUFFIX))
    if depth_scale is None and any(p.suffix == DEPTH_PNG_SUFFIX for p in depth_paths):
        raise scene_error(
            name, root / CAMERAS_FILE, "depth/ holds PNG depth but there is no 'depth_scale' (metres per unit)"
        )
    for depth_path, size_hw in zip(depth_paths, cameras.image_hw):
        _check_depth_file(name, depth_path, tuple(int(v) for v in size_hw))
    return depth_paths


def _mask_files(name: str, root: Path, cameras: Cameras) -> list[Path]:
    mask_paths = _sidecar_files(name, root / MASKS_DIR, list(cameras.names), (MASK_SUFFIX,))
    for mask_path, size_hw in zip(mask_paths, cameras.image_hw):
        size_hw = tuple(int(v) for v in size_hw)
        with Image.open(mask_path) as mask:
            if (mask.size[1], mask.size[0]) != size_hw:
                raise scene_error(
                    name,
                    mask_path,
                    "mask is {shape} but the image is {size}",
                    shape=(mask.size[1], mask.size[0]),
                    size=size_hw,
                )
    return mask_paths


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
        raise SceneFormatError("scene {scene!r}: {path} is not a folder", scene=name, path=root)
    cameras_path = root / CAMERAS_FILE
    if not cameras_path.is_file():
        raise scene_error(
            name, cameras_path, "missing; every scene folder needs a cameras.json (see docs/dataset_format.md)"
        )
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise scene_error(name, images_dir, "missing images folder")

    document = read_cameras_json(cameras_path, scene=name)
    cameras = document.cameras
    scene = Scene(
        name=name,
        image_names=list(cameras.names),
        intrinsics=cameras.intrinsics,
        extrinsics=cameras.extrinsics,
        image_hw=cameras.image_hw,
        image_paths=_check_images(name, images_dir, cameras),
        depth_paths=_depth_files(name, root, cameras, document.depth_scale)
        if use_depth and (root / DEPTH_DIR).is_dir()
        else None,
        mask_paths=_mask_files(name, root, cameras) if use_masks and (root / MASKS_DIR).is_dir() else None,
        depth_scale=document.depth_scale,
    )
    if (root / TRACKS_FILE).is_file():
        scene.tracks = read_tracks(root / TRACKS_FILE, cameras.image_hw, scene=name)
    if load_data:
        if len({tuple(s) for s in cameras.image_hw.tolist()}) > 1:
            raise scene_error(
                name, images_dir, "images differ in size; use load_scene(..., load_data=False) and read_frame"
            )
        frames = [scene.read_frame(i) for i in range(scene.num_frames)]
        scene.images = np.stack([f.image for f in frames])
        scene.depths = np.stack([f.depth for f in frames]) if scene.depth_paths is not None else None
        scene.masks = np.stack([f.mask for f in frames]) if scene.mask_paths is not None else None
    return scene


def list_scenes(root: Path | str) -> list[Path]:
    """The scene folders (those holding a cameras.json) directly inside a dataset root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset root {root} is not a folder", root=root)
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and (p / CAMERAS_FILE).is_file())
    if not scenes:
        raise InputError(
            "dataset root {root} holds no scene folders (sub-folders with a {cameras_json})",
            root=root,
            cameras_json=CAMERAS_FILE,
        )
    return scenes


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
    (`depth_format="npy"`) or 16-bit PNG with `depth_scale` metres per unit (`"png"`); `scene.tracks` as
    tracks.npz. The folder is
    assembled beside `out_dir` and moved into place at the end, so a failure leaves nothing half-written.
    """
    if depth_format not in ("npy", "png"):
        raise InputError("{depth_format} must be 'npy' or 'png', got {value!r}", value=depth_format)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as staging:
        png_scale = depth_scale if scene.has_depth and depth_format == "png" else None
        write_cameras_json(staging / CAMERAS_FILE, scene.cameras, depth_scale=png_scale)
        for index, file_name in enumerate(scene.image_names):
            _write_frame(staging, scene, index, file_name, depth_format, depth_scale)
        if scene.tracks is not None:
            write_tracks(staging / TRACKS_FILE, scene.tracks)
    return out_dir


def _write_frame(
    staging: Path, scene: Scene, index: int, file_name: str, depth_format: str, depth_scale: float
) -> None:
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


def _write_depth(stem_path: Path, depth: np.ndarray, depth_format: str, depth_scale: float) -> None:
    stem_path.parent.mkdir(parents=True, exist_ok=True)
    depth = np.asarray(depth, dtype=np.float32)
    if depth_format == "npy":
        np.save(stem_path.with_name(stem_path.name + DEPTH_NPY_SUFFIX), depth)
        return
    units = np.round(depth / depth_scale)
    if units.max(initial=0) > np.iinfo(np.uint16).max:
        raise InputError(
            "depth up to {max:.3g} m does not fit 16 bits at {depth_scale}={scale}; "
            "use a larger {depth_scale} or {depth_format=npy}",
            max=depth.max(),
            scale=depth_scale,
        )
    Image.fromarray(units.astype(np.uint16)).save(stem_path.with_name(stem_path.name + DEPTH_PNG_SUFFIX))
