"""Reading back a folder written by `Reconstruction.save`, and the keys of predictions.npz that make it possible.

Besides the model's outputs, predictions.npz holds what is needed to rebuild the reconstruction exactly:
`image_names`, `image_wh` and `input_from_original` (each photo's preprocessing, from which the
`PreprocessTransform`s are rebuilt), `model_intrinsic` and `model_extrinsic` (the cameras of cameras.json on the
model grid, which the cloud uses: the decoded ones fitted to the camera model, or the refined ones after bundle
adjustment; `intrinsic` and `extrinsic` stay the feed-forward cameras), how the dense cloud was selected
(`points_source`, `conf_percentile`, `max_points` with 0 for no limit, `point_frames` when only some frames were
used, `mask_black_background`, `mask_white_background`), `seconds`, and after bundle adjustment the tracked points
(`sparse_points`, `sparse_colors`, `sparse_point_index`, `sparse_image_index`, `sparse_xy`), and how the folder
was written (EXPORT_KEYS: `camera_model`, `shared_camera`, `colmap_points`, `masks`, `downscaled_images`), so that
saving a loaded reconstruction writes the same folder. The cameras come from cameras.json
(`vggt.data.layout.read_cameras_json`), the photos from images/.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt.data.layout import CAMERAS_FILE, IMAGES_DIR, PREDICTIONS_FILE, read_cameras_json, scene_error
from vggt.errors import InputError
from vggt.export.colmap import Observations
from vggt.pipeline.inference import Predictions
from vggt.pipeline.memory import GIB, available_memory
from vggt.pipeline.options import ExportOptions
from vggt.pipeline.points import PointCloud, PointSelection, dense_cloud
from vggt.utils.load_fn import PreprocessTransform, rescale_intrinsics_to_input

# The preprocessing of each photo: its size [S, 2] (width, height) and input_from_original [S, 3, 3] (model-input
# pixel = matrix @ original pixel); the input size is that of `images`. Windows on disk store the same.
TRANSFORM_KEYS = ("image_wh", "input_from_original")
REQUIRED_KEYS = ("images", "image_names", *TRANSFORM_KEYS)
SPARSE_KEYS = ("sparse_points", "sparse_colors", "sparse_point_index", "sparse_image_index", "sparse_xy")
NO_POINT_LIMIT = 0  # `max_points` as saved when the cloud had no limit
# No array of predictions.npz holds more than this many bytes per byte of `images` (uint8 [S, 3, H, W]): the
# float32 point map is 4, sparse points at most one per pixel; arrays of a few kilobytes are always allowed.
MAX_BYTES_PER_IMAGE_BYTE = 16
SMALL_ARRAY_BYTES = 1 << 20
EXPORT_KEYS = tuple(ExportOptions.__dataclass_fields__)


def export_arrays(export: ExportOptions) -> dict[str, np.ndarray]:
    """The keys of predictions.npz that say how the folder was written (EXPORT_KEYS)."""
    return {name: np.array(getattr(export, name)) for name in EXPORT_KEYS}


def saved_export(arrays: dict[str, np.ndarray]) -> ExportOptions:
    """The ExportOptions a folder was written with (the defaults for the keys it lacks)."""
    default = ExportOptions()
    values = {name: arrays[name].item() if name in arrays else getattr(default, name) for name in EXPORT_KEYS}
    return ExportOptions(**{name: type(getattr(default, name))(value) for name, value in values.items()})


def cloud_arrays(
    selection: PointSelection,
    points_source: str,
    model_intrinsics: np.ndarray,
    sparse: PointCloud | None,
    seconds: float,
    model_extrinsics: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The keys of predictions.npz that, with the model's outputs and cameras.json, reproduce the saved cloud
    (`model_extrinsics` [S, 3, 4]: the extrinsics of cameras.json, stored as `model_extrinsic` when given)."""
    arrays = {
        "model_intrinsic": np.asarray(model_intrinsics, dtype=np.float32),
        "points_source": np.array(points_source),
        "conf_percentile": np.array(selection.conf_percentile, dtype=np.float64),
        "max_points": np.array(NO_POINT_LIMIT if selection.max_points is None else selection.max_points),
        "mask_black_background": np.array(selection.mask_black_background),
        "mask_white_background": np.array(selection.mask_white_background),
        "seconds": np.array(seconds, dtype=np.float64),
    }
    if model_extrinsics is not None:
        arrays["model_extrinsic"] = np.asarray(model_extrinsics, dtype=np.float32)
    if selection.frames is not None:
        arrays["point_frames"] = np.array(selection.frames, dtype=np.int64)
    if sparse is not None:
        points, colors, observations = sparse
        values = (points, colors, observations.point_index, observations.image_index, observations.xy)
        arrays.update(zip(SPARSE_KEYS, values))
    return arrays


def member_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every array of an .npz, read from the headers alone (no array is decompressed)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in readers:
                    raise ValueError(f"{info.filename} has .npy format version {version}")
                shape, _, dtype = readers[version](member)
            headers[info.filename.removesuffix(".npy")] = (tuple(int(n) for n in shape), dtype)
    return headers


def check_member_sizes(path: Path) -> None:
    """Refuse, before anything is allocated, a predictions.npz whose arrays declare more bytes than the memory
    left, or an array far larger than its photos could give (MAX_BYTES_PER_IMAGE_BYTE times `images`)."""
    headers = member_headers(path)
    if not headers:
        return
    sizes = {key: math.prod(shape) * dtype.itemsize for key, (shape, dtype) in headers.items()}
    largest = max(sizes, key=sizes.get)
    free = available_memory(torch.device("cpu"))
    too_large = sizes[largest] > MAX_BYTES_PER_IMAGE_BYTE * sizes.get("images", 0) + SMALL_ARRAY_BYTES
    if too_large or (free is not None and sum(sizes.values()) > free):
        raise InputError(
            "{path} declares {total:.2f} GiB of arrays ({key}: {shape} {dtype}), more than the memory free ({free}) "
            "or its photos could give: not a predictions.npz written by vggt reconstruct",
            path=path,
            total=sum(sizes.values()) / GIB,
            key=largest,
            shape=headers[largest][0],
            dtype=headers[largest][1],
            free="unknown" if free is None else f"{free / GIB:.1f} GiB",
        )


def read_predictions(directory: Path) -> dict[str, np.ndarray]:
    """Every array of `directory/predictions.npz` (InputError when absent, SceneFormatError when unreadable)."""
    path = directory / PREDICTIONS_FILE
    if not directory.is_dir():
        raise InputError("{directory} {path} is not a folder", path=directory)
    if not path.is_file():
        raise InputError(
            "{directory} {path} has no {file}: give an output folder of vggt reconstruct (or of the demo's zip)",
            path=directory,
            file=PREDICTIONS_FILE,
        )
    try:
        check_member_sizes(path)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise scene_error(directory.name, path, "cannot be read ({error})", error=error) from None
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise scene_error(directory.name, path, "lacks {keys}: it was not written by Reconstruction.save", keys=missing)
    return arrays


def transform_arrays(transforms: Sequence[PreprocessTransform]) -> dict[str, np.ndarray]:
    """The TRANSFORM_KEYS arrays of `transforms` (what `rebuild_transforms` reads back exactly)."""
    return {
        "image_wh": np.array([t.original_size for t in transforms], dtype=np.int64).reshape(-1, 2),
        "input_from_original": np.stack([t.matrix() for t in transforms]),
    }


def rebuild_transforms(arrays: Mapping[str, np.ndarray]) -> list[PreprocessTransform]:
    """The preprocessing of each photo from `input_from_original` [S, 3, 3], `image_wh` [S, 2] and the input size."""
    input_h, input_w = arrays["images"].shape[-2:]
    return [
        PreprocessTransform(
            original_size=(int(w), int(h)),
            input_size=(int(input_w), int(input_h)),
            scale=(float(m[0, 0]), float(m[1, 1])),
            offset=(float(m[0, 2]), float(m[1, 2])),
        )
        for m, (w, h) in zip(arrays["input_from_original"], arrays["image_wh"])
    ]


def saved_selection(arrays: dict[str, np.ndarray]) -> tuple[str, PointSelection]:
    """The point source and selection a cloud was saved with (the defaults for folders that do not say)."""
    default = PointSelection()
    max_points = int(arrays["max_points"]) if "max_points" in arrays else default.max_points
    selection = PointSelection(
        conf_percentile=float(arrays.get("conf_percentile", default.conf_percentile)),
        max_points=None if max_points == NO_POINT_LIMIT else max_points,
        frames=tuple(int(i) for i in arrays["point_frames"]) if "point_frames" in arrays else None,
        mask_black_background=bool(arrays.get("mask_black_background", False)),
        mask_white_background=bool(arrays.get("mask_white_background", False)),
    )
    return str(arrays.get("points_source", "depth")), selection


def saved_sparse(arrays: dict[str, np.ndarray]) -> PointCloud | None:
    if SPARSE_KEYS[0] not in arrays:
        return None
    points, colors, point_index, image_index, xy = (arrays[key] for key in SPARSE_KEYS)
    return PointCloud(points, colors, Observations(point_index=point_index, image_index=image_index, xy=xy))


def read_reconstruction(directory: str | os.PathLike) -> dict[str, Any]:
    """The keyword arguments of `Reconstruction` read back from a folder written by `Reconstruction.save` (the
    cloud is re-selected exactly as it was saved).

    Raises:
        InputError: not a folder, or no predictions.npz; SceneFormatError: files that are unreadable or disagree.
    """
    directory = Path(directory)
    arrays = read_predictions(directory)
    cameras = read_cameras_json(directory / CAMERAS_FILE, scene=directory.name).cameras
    names = [str(n) for n in arrays["image_names"]]
    if list(cameras.names) != names:
        raise scene_error(
            directory.name, directory / CAMERAS_FILE, "lists other images than {file}", file=PREDICTIONS_FILE
        )
    predictions = Predictions.from_arrays(arrays)
    transforms = rebuild_transforms(arrays)
    if "model_intrinsic" in arrays:
        model_intrinsics = arrays["model_intrinsic"]
    else:
        model_intrinsics = rescale_intrinsics_to_input(cameras.intrinsics, transforms).astype(np.float32)
    points_source, selection = saved_selection(arrays)
    extrinsics = cameras.extrinsics.astype(np.float32)
    return dict(
        cameras=cameras,
        image_paths=[directory / IMAGES_DIR / name for name in names],
        model_intrinsics=model_intrinsics,
        predictions=predictions,
        transforms=transforms,
        cloud=dense_cloud(predictions, extrinsics, model_intrinsics, transforms, points_source, selection),
        points_source=points_source,
        sparse=saved_sparse(arrays),
        selection=selection,
        seconds=float(arrays.get("seconds", 0.0)),
        export=saved_export(arrays),
        given_poses=int(arrays.get("given_poses", 0)),
    )
