"""Turn a COLMAP sparse model (plus optional depth maps) into a scene folder.

    python -m vggt.data.colmap_import SPARSE_DIR IMAGES_DIR OUT_DIR [--depth-dir DIR]

Only registered images are imported. Pinhole intrinsics (fx, fy, cx, cy) are taken from PINHOLE,
SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV cameras; lens distortion is dropped with a
warning (undistort first with `colmap image_undistorter` for exact cameras). COLMAP puts pixel centres at
half-integer coordinates, the scene format at integers, so the principal point moves by -0.5.

Depth maps, when given, are read from `<depth_dir>/<image name or stem>.npy` (float32 metres) or COLMAP's
dense output `<depth_dir>/<image name>.geometric.bin` / `.photometric.bin`.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from vggt.data.scene import DEPTH_DIR, Scene, check_extrinsic, read_depth, read_image_size, write_scene
from vggt.utils.geometry import COLMAP_PIXEL_CENTER

# COLMAP camera models whose first parameters are pinhole focal lengths and principal point.
SUPPORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
UNDISTORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
COLMAP_DEPTH_SUFFIXES = (".geometric.bin", ".photometric.bin")


def _import_pycolmap():
    try:
        import pycolmap
    except ImportError:
        raise ImportError("import_colmap needs pycolmap: pip install 'vggt[export]'") from None
    return pycolmap


def _cam_from_world(image) -> np.ndarray:
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose  # a method since pycolmap 3.12, a property before
    return np.asarray(pose.matrix(), dtype=np.float64)


def _is_registered(image) -> bool:
    registered = getattr(image, "has_pose", None)
    if registered is None:
        registered = getattr(image, "registered", True)
    return bool(registered() if callable(registered) else registered)


def pinhole_intrinsic(camera) -> np.ndarray:
    """[3, 3] intrinsic of a pycolmap camera in the scene format's pixel convention."""
    model = camera.model_name if hasattr(camera, "model_name") else str(camera.model).split(".")[-1]
    if model not in SUPPORTED_CAMERA_MODELS:
        raise ValueError(
            f"COLMAP camera {camera.camera_id} has model {model}; supported: {', '.join(SUPPORTED_CAMERA_MODELS)}. "
            f"Undistort the images first (colmap image_undistorter) to get PINHOLE cameras"
        )
    return np.array(
        [
            [camera.focal_length_x, 0.0, camera.principal_point_x - COLMAP_PIXEL_CENTER],
            [0.0, camera.focal_length_y, camera.principal_point_y - COLMAP_PIXEL_CENTER],
            [0.0, 0.0, 1.0],
        ]
    )


def read_colmap_depth(path: Path) -> np.ndarray:
    """[H, W] float32 metres from a COLMAP dense depth map (.bin), 0 where COLMAP has no depth.

    The file is a text header "width&height&channels&", then float32 (width, height, channels) in Fortran
    order, i.e. [channels, height, width] in C order.
    """
    data = path.read_bytes()
    fields, offset = [], 0
    for _ in range(3):
        end = data.index(b"&", offset)
        fields.append(int(data[offset:end]))
        offset = end + 1
    width, height, channels = fields
    values = np.frombuffer(data, dtype=np.float32, offset=offset)
    if values.size != width * height * channels:
        raise ValueError(f"{path}: header says {width}x{height}x{channels} but holds {values.size} values")
    depth = values.reshape((channels, height, width))[0]
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def _find_depth(depth_dir: Path, image_name: str) -> Path | None:
    stem = str(Path(image_name).with_suffix(""))
    candidates = [depth_dir / (stem + ".npy"), depth_dir / (image_name + ".npy")]
    candidates += [depth_dir / (image_name + suffix) for suffix in COLMAP_DEPTH_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def import_colmap(
    sparse_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str,
    depth_dir: Path | str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the registered images of a COLMAP model as a scene folder `out_dir`; returns `out_dir`.

    sparse_dir: folder with cameras/images/points3D (.bin or .txt); images_dir: the images the model names;
    depth_dir: optional depth maps (see the module docstring). Images are copied, not re-encoded.
    """
    pycolmap = _import_pycolmap()
    sparse_dir, images_dir = Path(sparse_dir), Path(images_dir)
    if not sparse_dir.is_dir():
        raise ValueError(f"COLMAP sparse model folder {sparse_dir} does not exist")
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist")
    reconstruction = pycolmap.Reconstruction(str(sparse_dir))
    images = sorted((image for image in reconstruction.images.values() if _is_registered(image)), key=lambda i: i.name)
    if not images:
        raise ValueError(f"COLMAP model {sparse_dir} has no registered images")
    skipped = len(reconstruction.images) - len(images)
    if skipped:
        warnings.warn(f"{skipped} unregistered images in {sparse_dir} were skipped", stacklevel=2)

    distorted = sorted(
        {
            f"{camera.camera_id} ({camera.model_name})"
            for camera in reconstruction.cameras.values()
            if camera.model_name not in UNDISTORTED_CAMERA_MODELS and any(camera.params[3:] != 0)
        }
    )
    if distorted:
        warnings.warn(
            f"COLMAP cameras {', '.join(distorted)} have lens distortion, which the scene format drops; "
            f"undistort with `colmap image_undistorter` for exact cameras",
            stacklevel=2,
        )

    image_paths, intrinsics, extrinsics, sizes, depth_paths = [], [], [], [], []
    for image in images:
        camera = reconstruction.cameras[image.camera_id]
        path = images_dir / image.name
        if not path.is_file():
            raise ValueError(f"COLMAP image '{image.name}' is not in {images_dir}")
        size = read_image_size(path)
        if size != (camera.height, camera.width):
            raise ValueError(
                f"{path} is {size} (height, width) but COLMAP camera {camera.camera_id} is "
                f"{(camera.height, camera.width)}; pass the images the model was built from"
            )
        extrinsic = _cam_from_world(image)
        check_extrinsic(sparse_dir.name, f"{sparse_dir} image '{image.name}'", extrinsic)
        image_paths.append(path)
        intrinsics.append(pinhole_intrinsic(camera))
        extrinsics.append(extrinsic)
        sizes.append(size)
        if depth_dir is not None:
            depth_path = _find_depth(Path(depth_dir), image.name)
            if depth_path is None:
                raise ValueError(
                    f"no depth map for '{image.name}' in {depth_dir} (.npy, .geometric.bin or .photometric.bin)"
                )
            depth_paths.append(depth_path)

    scene = Scene(
        name=Path(out_dir).name,
        image_names=[image.name for image in images],
        intrinsics=np.stack(intrinsics),
        extrinsics=np.stack(extrinsics),
        image_sizes=np.asarray(sizes, dtype=np.int64),
        image_paths=image_paths,
    )
    # Read every depth map once before writing anything, so a bad one leaves no half-written scene.
    for name, size, source in zip(scene.image_names, sizes, depth_paths):
        _read_depth_map(source, name, size)
    out_dir = write_scene(out_dir, scene, overwrite=overwrite)
    for name, size, source in zip(scene.image_names, sizes, depth_paths):
        target = out_dir / DEPTH_DIR / (str(Path(name).with_suffix("")) + ".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, _read_depth_map(source, name, size))
    return out_dir


def _read_depth_map(source: Path, image_name: str, size: tuple[int, int]) -> np.ndarray:
    if source.suffix == ".npy":
        depth = read_depth(source, scene_name=image_name)
    else:
        depth = read_colmap_depth(source)
    if depth.shape != tuple(size):
        raise ValueError(f"{source} is {depth.shape} but image '{image_name}' is {tuple(size)} (height, width)")
    return depth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a COLMAP sparse model into a VGGT scene folder")
    parser.add_argument("sparse_dir", type=Path)
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--depth-dir", type=Path, default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = import_colmap(args.sparse_dir, args.images_dir, args.out_dir, args.depth_dir, args.overwrite)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
