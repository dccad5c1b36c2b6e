"""Checks that what a reconstruction wrote reads back, before the folder is moved into place.

Some writers fail silently: pycolmap's C++ writer reports nothing when the disk is full or a file-size limit is
hit (it leaves a truncated or empty file). So every output is read back (the COLMAP model with pycolmap, the
others by their headers and sizes) and compared with what was meant; any difference is an `OutputError`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from vggt.data.layout import (
    CAMERAS_FILE,
    DEPTH_DIR,
    GLB_FILE,
    IMAGES_DIR,
    PLY_FILE,
    PREDICTIONS_FILE,
    SPARSE_DIR,
    TRANSFORMS_FILE,
)
from vggt.errors import OutputError
from vggt.export.colmap import CAMERA_MODEL_PARAMS
from vggt.export.ply import PLY_VERTEX_DTYPE, ply_header
from vggt.utils.optional import import_pycolmap

GLB_MAGIC = b"glTF"


def _fail(path: Path, problem: str, **values) -> OutputError:
    return OutputError(
        "{path} was not written completely ({problem}); nothing was kept", path=path, problem=problem.format(**values)
    )


def colmap_file_sizes(
    image_names: list[str],
    observations_per_image: list[int],
    track_lengths: list[int],
    num_cameras: int | None = None,
    params_per_camera: int = 4,
) -> dict:
    """Bytes of cameras.bin, images.bin and points3D.bin in COLMAP's binary format (stable since COLMAP 3.0):
    counts are uint64, ids uint32, coordinates float64; `num_cameras` (default: one per image) cameras of
    `params_per_camera` parameters (PINHOLE 4, SIMPLE_PINHOLE 3)."""
    num_cameras = len(image_names) if num_cameras is None else num_cameras
    cameras = 8 + num_cameras * (4 + 4 + 8 + 8 + params_per_camera * 8)
    images = 8 + sum(
        4 + 7 * 8 + 4 + len(name.encode()) + 1 + 8 + 24 * n for name, n in zip(image_names, observations_per_image)
    )
    points = 8 + sum(8 + 3 * 8 + 3 + 8 + 8 + 8 * length for length in track_lengths)
    return {"cameras.bin": cameras, "images.bin": images, "points3D.bin": points}


def verify_colmap(
    sparse_dir: Path,
    image_names: list[str],
    num_points: int,
    observations,
    num_cameras: int | None = None,
    params_per_camera: int = 4,
) -> None:
    """The COLMAP model in `sparse_dir` has the sizes its contents mean, then reads back with its counts.

    Sizes come first: pycolmap reading a truncated file can allocate without bound.
    """
    per_image = np.bincount(observations.image_index, minlength=len(image_names)).tolist()
    track_lengths = np.bincount(observations.point_index, minlength=num_points).tolist()
    sizes = colmap_file_sizes(image_names, per_image, track_lengths, num_cameras, params_per_camera)
    for name, size in sizes.items():
        path = sparse_dir / name
        actual = path.stat().st_size if path.is_file() else 0
        if actual != size:
            raise _fail(path, "{actual} bytes instead of {size}", actual=actual, size=size)
    pycolmap = import_pycolmap()
    try:
        model = pycolmap.Reconstruction(str(sparse_dir))
    except Exception as err:  # a damaged rig or frame file
        raise _fail(sparse_dir, "pycolmap cannot read it back: {error}", error=err) from None
    read = (model.num_reg_images(), model.num_points3D(), sum(p.track.length() for p in model.points3D.values()))
    meant = (len(image_names), num_points, len(observations))
    if read != meant:
        raise _fail(
            sparse_dir, "it reads back with {read} images, points and observations, not {meant}", read=read, meant=meant
        )


def verify_ply(path: Path, num_points: int) -> None:
    expected = len(ply_header(num_points)) + num_points * PLY_VERTEX_DTYPE.itemsize
    if not path.is_file() or path.stat().st_size != expected:
        size = path.stat().st_size if path.is_file() else 0
        raise _fail(path, "{size} bytes instead of {expected}", size=size, expected=expected)


def verify_glb(path: Path) -> None:
    data = path.read_bytes()[:12] if path.is_file() else b""
    if len(data) < 12 or data[:4] != GLB_MAGIC or int.from_bytes(data[8:12], "little") != path.stat().st_size:
        raise _fail(path, "not a complete binary glTF file")


def verify_npy(path: Path, shape: tuple[int, ...]) -> None:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _fail(path, "{error}", error=err) from None
    if array.shape != shape:
        raise _fail(path, "shape {shape} instead of {expected}", shape=array.shape, expected=shape)


def verify_npz(path: Path, keys: list[str]) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise _fail(path, "{error}", error=err) from None
    if bad is not None or not set(keys) <= names:
        raise _fail(path, "damaged or missing arrays")


def verify_json(path: Path) -> None:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _fail(path, "{error}", error=err) from None


def verify_files(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise _fail(path, "missing or empty")


def verify_reconstruction(staging: Path, reconstruction, directory: Path) -> None:
    """Every output `Reconstruction.save` wrote into `staging` but the COLMAP model (`verify_colmap_output`, run
    as soon as it is written) reads back as meant (see the module docstring); errors name the files by where they
    were meant to go, in `directory`."""
    _named_in(staging, directory, _verify_outputs, staging, reconstruction)


def verify_colmap_output(staging: Path, reconstruction, directory: Path) -> None:
    """The COLMAP model of `reconstruction` in `staging` reads back as meant: checked right after it is written,
    so that a file-size limit that pycolmap's writer hits silently is reported before larger files hit it loudly."""
    _named_in(staging, directory, _verify_colmap, staging, reconstruction)


def _named_in(staging: Path, directory: Path, check, *args) -> None:
    """Run `check(*args)`; an OutputError it raises names its file in `directory` instead of `staging`."""
    try:
        check(*args)
    except OutputError as err:
        values = dict(err.message.values)
        path = Path(values["path"])
        if staging in path.parents or path == staging:
            values["path"] = directory / path.relative_to(staging)
        raise OutputError(err.message.template, **values) from None


def _verify_colmap(staging: Path, reconstruction) -> None:
    points, _, observations = reconstruction.colmap_cloud
    export = reconstruction.export
    verify_colmap(
        staging / SPARSE_DIR,
        reconstruction.image_names,
        len(points),
        observations,
        1 if export.shared_camera else None,
        CAMERA_MODEL_PARAMS[export.camera_model],
    )


def _verify_outputs(staging: Path, reconstruction) -> None:
    verify_files(staging / IMAGES_DIR, reconstruction.image_names)
    verify_ply(staging / PLY_FILE, reconstruction.num_points)
    verify_glb(staging / GLB_FILE)
    for stem, (width, height) in zip(reconstruction.depth_file_stems(), reconstruction.image_wh):
        verify_npy(staging / DEPTH_DIR / f"{stem}.npy", (int(height), int(width)))
    verify_files(staging / DEPTH_DIR, [f"{stem}.png" for stem in reconstruction.depth_file_stems()])
    verify_json(staging / CAMERAS_FILE)
    verify_json(staging / TRANSFORMS_FILE)
    verify_npz(staging / PREDICTIONS_FILE, list(reconstruction.predictions.arrays()))
