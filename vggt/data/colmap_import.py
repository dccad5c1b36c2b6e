"""Turn a COLMAP sparse model (plus optional depth maps) into a scene folder.

    vggt import-colmap SPARSE_DIR IMAGES_DIR OUT_DIR [--depth-dir DIR]
    python -m vggt.data.colmap_import SPARSE_DIR IMAGES_DIR OUT_DIR [--depth-dir DIR]   # the same

Only registered images are imported. Pinhole intrinsics (fx, fy, cx, cy) are taken from PINHOLE,
SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV cameras; lens distortion is dropped with a
warning (undistort first with `colmap image_undistorter` for exact cameras). COLMAP puts pixel centres at
half-integer coordinates, the scene format at integers, so the principal point moves by -0.5.

Depth maps, when given, are read from `<depth_dir>/<image name or stem>.npy` (float32 metres) or COLMAP's
dense output `<depth_dir>/<image name>.geometric.bin` / `.photometric.bin`.

Ground-truth tracks (tracks.npz, vggt.data.tracks) come from the model's 3D points seen in at least two imported
images, the `max_tracks` longest tracks first: each point is queried where the first of its images (in name
order) observes it, is visible where COLMAP observed it and hidden elsewhere (where its position is the
projection of the 3D point). COLMAP only observes what it matched, so some "hidden" points may be in view: an
occlusion accuracy against these tracks is a lower bound.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from vggt.data.layout import check_extrinsic
from vggt.data.scene import Scene, read_depth, write_scene
from vggt.data.tracks import SceneTracks
from vggt.errors import InputError
from vggt.utils.cameras import COLMAP_PIXEL_CENTER
from vggt.utils.commands import run_main
from vggt.utils.images import image_size_upright
from vggt.utils.optional import import_pycolmap
from vggt.utils.paths import check_file_name, confined_path

# COLMAP camera models whose first parameters are pinhole focal lengths and principal point.
SUPPORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
UNDISTORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
COLMAP_DEPTH_SUFFIXES = (".geometric.bin", ".photometric.bin")
DEFAULT_MAX_TRACKS = 1024
MIN_TRACK_LENGTH = 2  # images observing a point
MIN_PROJECTION_DEPTH = 1e-6  # points closer to (or behind) a camera's plane get position (0, 0) there


def _cam_from_world(image) -> np.ndarray:
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose  # a method since pycolmap 3.12, a property before
    return np.asarray(pose.matrix(), dtype=np.float64)


def _image_name(image) -> str:
    """The image's name; pycolmap cannot decode a name that is not UTF-8, which is refused in one line."""
    try:
        return image.name
    except UnicodeDecodeError:
        raise InputError(
            "COLMAP image {id} has a name that is not UTF-8; rename the file and the model's entry (e.g. with "
            "convmv) so that every output can keep the name",
            id=image.image_id,
        ) from None


def _is_registered(image) -> bool:
    registered = getattr(image, "has_pose", None)
    if registered is None:
        registered = getattr(image, "registered", True)
    return bool(registered() if callable(registered) else registered)


def pinhole_intrinsic(camera) -> np.ndarray:
    """[3, 3] intrinsic of a pycolmap camera in the scene format's pixel convention."""
    model = camera.model_name if hasattr(camera, "model_name") else str(camera.model).split(".")[-1]
    if model not in SUPPORTED_CAMERA_MODELS:
        raise InputError(
            "COLMAP camera {id} has model {model}; supported: {supported}. "
            "Undistort the images first (colmap image_undistorter) to get PINHOLE cameras",
            id=camera.camera_id,
            model=model,
            supported=", ".join(SUPPORTED_CAMERA_MODELS),
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
        raise InputError(
            "{path}: header says {width}x{height}x{channels} but holds {count} values",
            path=path,
            width=width,
            height=height,
            channels=channels,
            count=values.size,
        )
    depth = values.reshape((channels, height, width))[0]
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def _find_depth(depth_dir: Path, image_name: str) -> Path | None:
    stem = str(Path(image_name).with_suffix(""))
    names = [stem + ".npy", image_name + ".npy", *(image_name + suffix for suffix in COLMAP_DEPTH_SUFFIXES)]
    candidates = [confined_path(depth_dir, name, "depth map of COLMAP image") for name in names]
    return next((c for c in candidates if c.is_file()), None)


def import_colmap(
    sparse_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str,
    depth_dir: Path | str | None = None,
    overwrite: bool = False,
    max_tracks: int = DEFAULT_MAX_TRACKS,
) -> Path:
    """Write the registered images of a COLMAP model as a scene folder `out_dir`; returns `out_dir`.

    sparse_dir: folder with cameras/images/points3D (.bin or .txt); images_dir: the images the model names;
    depth_dir: optional depth maps (see the module docstring). Images are copied, not re-encoded. Up to
    `max_tracks` of the model's point tracks become the scene's tracks.npz (0: none).
    """
    pycolmap = import_pycolmap()
    sparse_dir, images_dir = Path(sparse_dir), Path(images_dir)
    if not sparse_dir.is_dir():
        raise InputError("COLMAP sparse model folder {path} does not exist", path=sparse_dir)
    if not images_dir.is_dir():
        raise InputError("images folder {path} does not exist", path=images_dir)
    reconstruction = _read_model(pycolmap, sparse_dir)
    images = sorted((image for image in reconstruction.images.values() if _is_registered(image)), key=_image_name)
    if not images:
        raise InputError("COLMAP model {path} has no registered images", path=sparse_dir)
    skipped = len(reconstruction.images) - len(images)
    if skipped:
        warnings.warn(f"{skipped} unregistered images in {sparse_dir} were skipped", stacklevel=2)
    _warn_about_distortion(reconstruction)

    if max_tracks < 0:
        raise InputError("{max_tracks} must be 0 or more, got {value}", value=max_tracks)
    scene = _scene_of(reconstruction, images, sparse_dir, images_dir, Path(out_dir).name)
    if max_tracks:
        scene.tracks = colmap_tracks(reconstruction, images, scene, max_tracks)
    if depth_dir is not None:
        # Every depth map is read before anything is written, so a bad one leaves no half-written scene.
        scene.depths = [
            _read_depth_map(Path(depth_dir), name, size) for name, size in zip(scene.image_names, scene.image_hw)
        ]
    return write_scene(out_dir, scene, overwrite=overwrite)


def _read_model(pycolmap, sparse_dir: Path):
    """The pycolmap Reconstruction in `sparse_dir`; a model pycolmap cannot parse is one InputError."""
    try:
        return pycolmap.Reconstruction(str(sparse_dir))
    except (RuntimeError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(
            "COLMAP model {path} cannot be read ({reason}); pass a folder with cameras, images and points3D "
            "(.bin or .txt) as COLMAP writes them",
            path=sparse_dir,
            reason=reason,
        ) from None


def _warn_about_distortion(reconstruction) -> None:
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
            stacklevel=3,
        )


def _scene_of(reconstruction, images: list, sparse_dir: Path, images_dir: Path, name: str) -> Scene:
    """The scene of the registered `images`, with their files in `images_dir` checked against the model."""
    image_paths, intrinsics, extrinsics, sizes = [], [], [], []
    for image in images:
        camera = reconstruction.cameras[image.camera_id]
        # The name comes from the model's file: it must stay inside images_dir (read) and images/ (written).
        path = confined_path(images_dir, image.name, "COLMAP image name")
        check_file_name(path, "COLMAP image")
        if not path.is_file():
            raise InputError("COLMAP image {name!r} is not in {folder}", name=image.name, folder=images_dir)
        width, height = image_size_upright(path)
        if (height, width) != (camera.height, camera.width):
            raise InputError(
                "{path} is {size} (height, width) but COLMAP camera {id} is {expected}; pass the images the model "
                "was built from",
                path=path,
                size=(height, width),
                id=camera.camera_id,
                expected=(camera.height, camera.width),
            )
        extrinsic = _cam_from_world(image)
        check_extrinsic(sparse_dir.name, f"{sparse_dir} image '{image.name}'", extrinsic)
        image_paths.append(path)
        intrinsics.append(pinhole_intrinsic(camera))
        extrinsics.append(extrinsic)
        sizes.append((height, width))
    return Scene(
        name=name,
        image_names=[image.name for image in images],
        intrinsics=np.stack(intrinsics),
        extrinsics=np.stack(extrinsics),
        image_hw=np.asarray(sizes, dtype=np.int64),
        image_paths=image_paths,
    )


def _observations(reconstruction, images: list) -> list[tuple[int, dict[int, np.ndarray]]]:
    """(point id, {frame: observed (x, y) in COLMAP pixels}) of each 3D point seen in MIN_TRACK_LENGTH or more of
    `images` (frames in their order), the longest tracks first, then by point id."""
    frame_of = {image.image_id: frame for frame, image in enumerate(images)}
    observed = []
    for point_id, point in reconstruction.points3D.items():
        seen: dict[int, np.ndarray] = {}
        for element in point.track.elements:
            frame = frame_of.get(element.image_id)
            if frame is not None and frame not in seen:
                seen[frame] = np.asarray(images[frame].points2D[element.point2D_idx].xy, dtype=np.float64)
        if len(seen) >= MIN_TRACK_LENGTH:
            observed.append((point_id, seen))
    return sorted(observed, key=lambda item: (-len(item[1]), item[0]))


def colmap_tracks(reconstruction, images: list, scene: Scene, max_tracks: int) -> SceneTracks | None:
    """The tracks of up to `max_tracks` 3D points of the model through the frames of `scene` (see the module
    docstring), or None when no point is seen twice."""
    observed = _observations(reconstruction, images)[:max_tracks]
    if not observed:
        return None
    world = np.stack([np.asarray(reconstruction.points3D[point_id].xyz, dtype=np.float64) for point_id, _ in observed])
    camera = np.einsum("sij,nj->sni", scene.extrinsics[:, :, :3], world) + scene.extrinsics[:, None, :, 3]
    z = camera[..., 2]
    in_front = z > MIN_PROJECTION_DEPTH
    pixels = np.einsum("sij,snj->sni", scene.intrinsics, camera)
    tracks = np.where(in_front[..., None], pixels[..., :2] / np.where(in_front, z, 1.0)[..., None], 0.0)
    visible = np.zeros(z.shape, dtype=bool)
    for index, (_, seen) in enumerate(observed):
        for frame, xy in seen.items():
            tracks[frame, index], visible[frame, index] = xy - COLMAP_PIXEL_CENTER, True
    query_frames = np.array([min(seen) for _, seen in observed], dtype=np.int64)
    query_points = tracks[query_frames, np.arange(len(observed))]
    return SceneTracks(query_frames, query_points.astype(np.float32), tracks.astype(np.float32), visible)


def _read_depth_map(depth_dir: Path, image_name: str, size_hw: np.ndarray) -> np.ndarray:
    source = _find_depth(depth_dir, image_name)
    if source is None:
        raise InputError(
            "no depth map for {name!r} in {folder} (.npy, .geometric.bin or .photometric.bin)",
            name=image_name,
            folder=depth_dir,
        )
    depth = read_depth(source, scene_name=image_name) if source.suffix == ".npy" else read_colmap_depth(source)
    if depth.shape != tuple(size_hw):
        raise InputError(
            "{path} is {shape} but image {name!r} is {size} (height, width)",
            path=source,
            shape=depth.shape,
            name=image_name,
            size=tuple(int(v) for v in size_hw),
        )
    return depth


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vggt import-colmap` (and `python -m vggt.data.colmap_import`)."""
    parser.add_argument("sparse_dir", type=Path, help="COLMAP model folder (cameras, images, points3D .bin or .txt)")
    parser.add_argument("images_dir", type=Path, help="the images the model was built from")
    parser.add_argument("out_dir", type=Path, help="the scene folder to write")
    parser.add_argument("--depth-dir", type=Path, default=None, help="depth maps (.npy or COLMAP .geometric.bin)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    parser.add_argument(
        "--max-tracks",
        type=int,
        default=DEFAULT_MAX_TRACKS,
        help=f"point tracks written to tracks.npz, longest first (default {DEFAULT_MAX_TRACKS}; 0: none)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    out = import_colmap(args.sparse_dir, args.images_dir, args.out_dir, args.depth_dir, args.overwrite, args.max_tracks)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m vggt.data.colmap_import`: exits the process with the command's exit code."""
    parser = argparse.ArgumentParser(
        prog="vggt import-colmap", description="Convert a COLMAP sparse model into a VGGT scene folder"
    )
    sys.exit(run_main(add_arguments(parser), run, argv))


if __name__ == "__main__":
    main()
