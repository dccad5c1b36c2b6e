"""What Gaussian-splatting and NeRF trainers read beside a COLMAP model, in their own conventions.

- Depth as 16-bit PNG, value x DEPTH_PNG_SCALE = depth (nerfstudio's `depth_unit_scale_factor` default 1e-3),
  0 = no depth, named as the image with `.png` (nerfstudio's COLMAP dataparser opens
  `<depths_path>/<image name>.with_suffix(".png")`). Depths beyond 65.535 do not fit and are written as 0.
- Downscaled copies `images_<f>/` for f in DOWNSCALE_FACTORS, under the images' own names (as `ns-process-data`
  writes them; gsplat's `simple_trainer` reads `images_4` by default), of size (width // f, height // f), the
  size nerfstudio and gsplat give the camera of factor f; depth and masks likewise in `depth_<f>/`, `masks_<f>/`
  (nearest samples, as nerfstudio downscales them).
- `transforms.json` in nerfstudio's convention (`nerfstudio.process_data.colmap_utils.colmap_to_json`):
  camera-to-world matrices in OpenGL axes (x right, y up, z back) with the world's x and y swapped and z negated
  (recorded as `applied_transform`), intrinsics in COLMAP's pixel convention (pixel centres at +0.5).
- Masks: 8-bit PNG, 255 = a pixel to train on, 0 = one to ignore (nerfstudio's and gsplat's reading).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from vggt.utils.cameras import COLMAP_PIXEL_CENTER, Cameras

DEPTH_PNG_SCALE = 1e-3
DEPTH_PNG_MAX = np.iinfo(np.uint16).max
DOWNSCALE_FACTORS = (2, 4, 8)
# nerfstudio's world is the COLMAP world with x and y swapped and z negated (its `applied_transform`).
NERFSTUDIO_APPLIED_TRANSFORM = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])
JPEG_QUALITY = 95


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(width, height) of the copy at 1 / `factor`: floored as nerfstudio and gsplat scale the cameras."""
    return max(1, width // factor), max(1, height // factor)


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """[H, W] float depth -> [H, W] uint16 with value x DEPTH_PNG_SCALE = depth; 0 where absent or out of range."""
    depth = np.asarray(depth, dtype=np.float64)
    units = np.where(np.isfinite(depth) & (depth > 0), np.round(depth / DEPTH_PNG_SCALE), 0)
    return np.where(units <= DEPTH_PNG_MAX, units, 0).astype(np.uint16)


def nearest_downscale(array: np.ndarray, factor: int) -> np.ndarray:
    """[H, W] map at 1 / `factor` (size `downscaled_size`), each output pixel the input pixel under its centre."""
    height, width = array.shape[:2]
    out_w, out_h = downscaled_size(width, height, factor)
    rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64), width - 1)
    return array[rows][:, cols]


def write_png(path: Path, array: np.ndarray) -> Path:
    """An 8-bit gray (uint8) or 16-bit gray (uint16) PNG of [H, W] `array`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    return path


def write_scaled_maps(root: Path, folder: str, file_name: str, array: np.ndarray, factors: Sequence[int]) -> None:
    """`root/folder/file_name` and its nearest-sample copies `root/folder_<f>/file_name` (PNG)."""
    write_png(root / folder / file_name, array)
    for factor in factors:
        write_png(root / f"{folder}_{factor}" / file_name, nearest_downscale(array, factor))


def write_downscaled_images(
    images_dir: Path, names: Sequence[str], factors: Sequence[int] = DOWNSCALE_FACTORS
) -> list[Path]:
    """`images_<f>/<name>` beside `images_dir` for each image `name` in it and each factor (same format as the
    name says, JPEG at quality JPEG_QUALITY; PNG data where Pillow cannot write that format)."""
    written = []
    for name in names:
        with Image.open(images_dir / name) as source:
            image = source.convert("RGB")
        for factor in factors:
            target = images_dir.parent / f"{images_dir.name}_{factor}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            small = image.resize(downscaled_size(*image.size, factor), Image.Resampling.LANCZOS)
            image_format = Image.registered_extensions().get(PurePosixPath(name).suffix.lower(), "PNG")
            options = {"quality": JPEG_QUALITY} if image_format == "JPEG" else {}
            try:
                small.save(target, format=image_format, **options)
            except (OSError, KeyError, ValueError):  # a format Pillow reads but cannot write
                small.save(target, format="PNG")
            written.append(target)
    return written


def nerfstudio_camera_to_world(extrinsic: np.ndarray) -> np.ndarray:
    """[3, 4] OpenCV camera-from-world -> [4, 4] camera-to-world in nerfstudio's axes and world."""
    world_from_camera = np.linalg.inv(np.vstack([extrinsic, [0.0, 0.0, 0.0, 1.0]]))
    world_from_camera[:3, 1:3] *= -1  # OpenCV camera axes (y down, z forward) -> OpenGL (y up, z back)
    return np.vstack([NERFSTUDIO_APPLIED_TRANSFORM @ world_from_camera, [0.0, 0.0, 0.0, 1.0]])


def _intrinsics_entry(intrinsic: np.ndarray, width: int, height: int) -> dict:
    return {
        "fl_x": float(intrinsic[0, 0]),
        "fl_y": float(intrinsic[1, 1]),
        "cx": float(intrinsic[0, 2]) + COLMAP_PIXEL_CENTER,
        "cy": float(intrinsic[1, 2]) + COLMAP_PIXEL_CENTER,
        "w": int(width),
        "h": int(height),
    }


def write_transforms_json(
    path: str | Path,
    cameras: Cameras,
    camera_model: str,
    shared_camera: bool,
    depth_files: Sequence[str] | None = None,
    mask_files: Sequence[str] | None = None,
) -> Path:
    """nerfstudio's transforms.json for `cameras` (see the module docstring); paths relative to its folder.

    Args:
        cameras: S cameras at the images' original resolution, named as in `images/`.
        camera_model: the COLMAP model name (nerfstudio maps PINHOLE and SIMPLE_PINHOLE to a perspective camera).
        shared_camera: intrinsics once at the top level; else in every frame.
        depth_files, mask_files: S paths of each frame's 16-bit depth PNG and mask (None: not written).
    """
    document: dict = {"camera_model": camera_model}
    if shared_camera and len(cameras):
        document.update(_intrinsics_entry(cameras.intrinsics[0], *cameras.image_wh[0]))
    frames = []
    for i, name in enumerate(cameras.names):
        frame = {"file_path": f"images/{name}"}
        if not shared_camera:
            frame.update(_intrinsics_entry(cameras.intrinsics[i], *cameras.image_wh[i]))
        frame["transform_matrix"] = nerfstudio_camera_to_world(cameras.extrinsics[i]).tolist()
        frame["colmap_im_id"] = i + 1
        if depth_files is not None:
            frame["depth_file_path"] = depth_files[i]
        if mask_files is not None:
            frame["mask_path"] = mask_files[i]
        frames.append(frame)
    document["frames"] = frames
    document["applied_transform"] = NERFSTUDIO_APPLIED_TRANSFORM.tolist()
    path = Path(path)
    path.write_text(json.dumps(document, indent=2))
    return path
