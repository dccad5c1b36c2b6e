"""COLMAP sparse models (cameras.bin, images.bin, points3D.bin) written with pycolmap.

Each image has its own camera at its original resolution, or all images share one (`shared_camera`), of model
PINHOLE (fx, fy, cx, cy) or SIMPLE_PINHOLE (f, cx, cy): the two models this package's bundle adjustment
refines (`conform_intrinsics` makes the intrinsics fit the choice). Each 3D point carries its 2D observations
(a multi-view track, `vggt.pipeline.multiview`, or the tracks of bundle adjustment) and its mean reprojection
error. Inputs use this package's pixel convention (pixel centres at integer coordinates); COLMAP's puts them at
+0.5, so principal points and keypoints shift by 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.errors import InputError
from vggt.utils.cameras import COLMAP_PIXEL_CENTER, Cameras
from vggt.utils.optional import import_pycolmap

# The camera models a reconstruction writes (and bundle adjustment refines): their parameters from a 3x3 matrix.
CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")
DEFAULT_CAMERA_MODEL = "PINHOLE"
CAMERA_MODEL_PARAMS = {"PINHOLE": 4, "SIMPLE_PINHOLE": 3}


def check_camera_model(camera_model: str) -> None:
    """InputError naming the option when `camera_model` is not one of CAMERA_MODELS."""
    if camera_model not in CAMERA_MODELS:
        raise InputError(
            "unknown {camera_model} {value!r}; choose one of {choices}",
            value=camera_model,
            choices=", ".join(CAMERA_MODELS),
        )


def conform_intrinsics(
    intrinsics: np.ndarray, image_wh: np.ndarray, camera_model: str, shared_camera: bool
) -> np.ndarray:
    """Intrinsics [S, 3, 3] made to fit `camera_model` and `shared_camera` (same dtype).

    SIMPLE_PINHOLE has one focal length: fx and fy become their mean. A shared camera has one set of intrinsics
    for all frames: the mean of each entry, which needs images of one size `image_wh` [S, 2].
    """
    check_camera_model(camera_model)
    conformed = np.array(intrinsics, copy=True)
    if shared_camera and len(conformed):
        sizes = {tuple(int(v) for v in wh) for wh in np.asarray(image_wh).reshape(-1, 2)}
        if len(sizes) > 1:
            raise InputError(
                "{shared_camera} needs photos of one size, got {count} sizes ({sizes}); drop it for mixed photos",
                count=len(sizes),
                sizes=", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3]),
            )
        conformed[:] = conformed.astype(np.float64).mean(axis=0).astype(conformed.dtype)
    if camera_model == "SIMPLE_PINHOLE":
        focal = (conformed[:, 0, 0].astype(np.float64) + conformed[:, 1, 1]) / 2
        conformed[:, 0, 0] = conformed[:, 1, 1] = focal
    return conformed


def camera_params(intrinsic: np.ndarray, camera_model: str) -> list[float]:
    """COLMAP parameters of a 3x3 `intrinsic` (our pixel centres) for `camera_model` (COLMAP's centres)."""
    fx, fy = float(intrinsic[0, 0]), float(intrinsic[1, 1])
    cx, cy = float(intrinsic[0, 2]) + COLMAP_PIXEL_CENTER, float(intrinsic[1, 2]) + COLMAP_PIXEL_CENTER
    if camera_model == "SIMPLE_PINHOLE":
        return [(fx + fy) / 2, cx, cy]
    return [fx, fy, cx, cy]


@dataclass
class Observations:
    """2D observations of 3D points: row m says that image `image_index[m]` sees point `point_index[m]` at `xy[m]`.

    Attributes:
        point_index: [M] int, index into the points array.
        image_index: [M] int, index into the images (0-based).
        xy: [M, 2] float pixel coordinates in the ORIGINAL image.
    """

    point_index: np.ndarray
    image_index: np.ndarray
    xy: np.ndarray

    def __post_init__(self) -> None:
        self.point_index = np.asarray(self.point_index, dtype=np.int64).reshape(-1)
        self.image_index = np.asarray(self.image_index, dtype=np.int64).reshape(-1)
        self.xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)
        if not len(self.point_index) == len(self.image_index) == len(self.xy):
            raise ValueError(
                f"observations need as many point indices ({len(self.point_index)}), image indices "
                f"({len(self.image_index)}) and xy rows ({len(self.xy)})"
            )

    def __len__(self) -> int:
        return len(self.point_index)


def build_colmap_reconstruction(
    cameras: Cameras,
    points: np.ndarray,
    colors: np.ndarray,
    observations: Observations | None = None,
    camera_model: str = DEFAULT_CAMERA_MODEL,
    shared_camera: bool = False,
):  # -> pycolmap.Reconstruction
    """A pycolmap.Reconstruction of S registered images and N points.

    Args:
        cameras: S cameras at each image's ORIGINAL resolution; names are the COLMAP image names (relative to
            the `images/` folder).
        points: [N, 3] world coordinates; colors: [N, 3] uint8.
        observations: which image sees which point where (original pixels); None leaves tracks empty (and the
            images without keypoints). Points seen at least twice get their mean reprojection error.
        camera_model: one of CAMERA_MODELS. shared_camera: one camera (that of image 0) for all images.
    """
    pycolmap = import_pycolmap()
    num_images = len(cameras)
    image_names, image_wh = cameras.names, cameras.image_wh
    extrinsics, intrinsics = cameras.extrinsics, cameras.intrinsics
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.uint8)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(f"points and colors must both be [N, 3], got {points.shape} and {colors.shape}")
    if observations is None:
        observations = Observations(np.zeros(0), np.zeros(0), np.zeros((0, 2)))
    if len(observations) and (
        observations.point_index.max() >= len(points) or observations.image_index.max() >= num_images
    ):
        raise ValueError("observations refer to points or images that do not exist")

    check_camera_model(camera_model)
    reconstruction = pycolmap.Reconstruction()
    for i in range(1 if shared_camera and num_images else num_images):
        camera = pycolmap.Camera(
            model=camera_model,
            width=int(image_wh[i, 0]),
            height=int(image_wh[i, 1]),
            params=camera_params(intrinsics[i], camera_model),
            camera_id=i + 1,
        )
        reconstruction.add_camera_with_trivial_rig(camera)

    # Rank of each observation within its image: its point2D index there.
    order = np.argsort(observations.image_index, kind="stable")
    sorted_images = observations.image_index[order]
    first_of_image = np.searchsorted(sorted_images, np.arange(num_images))
    point2d_index = np.empty(len(observations), dtype=np.int64)
    point2d_index[order] = np.arange(len(observations)) - first_of_image[sorted_images]

    for i in range(num_images):
        rows = order[sorted_images == i]
        image = pycolmap.Image(
            name=str(image_names[i]),
            keypoints=observations.xy[rows] + COLMAP_PIXEL_CENTER,
            camera_id=1 if shared_camera else i + 1,
            image_id=i + 1,
        )
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(extrinsics[i]))

    by_point = np.argsort(observations.point_index, kind="stable")
    bounds = np.searchsorted(observations.point_index[by_point], np.arange(len(points) + 1))
    for p in range(len(points)):
        track = pycolmap.Track()
        for row in by_point[bounds[p] : bounds[p + 1]]:
            track.add_element(int(observations.image_index[row]) + 1, int(point2d_index[row]))
        reconstruction.add_point3D(points[p], track, colors[p])
    reconstruction.update_point_3d_errors()
    return reconstruction


def write_colmap(
    sparse_dir: str | Path,
    cameras: Cameras,
    points: np.ndarray,
    colors: np.ndarray,
    observations: Observations | None = None,
    camera_model: str = DEFAULT_CAMERA_MODEL,
    shared_camera: bool = False,
) -> Path:
    """Build the model (see `build_colmap_reconstruction`) and write it in binary to `sparse_dir`."""
    reconstruction = build_colmap_reconstruction(cameras, points, colors, observations, camera_model, shared_camera)
    sparse_dir = Path(sparse_dir)
    sparse_dir.mkdir(parents=True, exist_ok=True)
    reconstruction.write(str(sparse_dir))
    return sparse_dir
