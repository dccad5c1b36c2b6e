"""COLMAP sparse models (cameras.bin, images.bin, points3D.bin) written with pycolmap.

Every image gets its own PINHOLE camera at its original resolution. Each 3D point carries the 2D
observations that produced it: one (the pixel its depth came from) for feed-forward points, or a
whole track after bundle adjustment. Inputs use this package's pixel convention (pixel centres at
integer coordinates); COLMAP's puts them at +0.5, so principal points and keypoints shift by 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.utils.cameras import COLMAP_PIXEL_CENTER, Cameras
from vggt.utils.optional import import_pycolmap

COLMAP_CAMERA_MODEL = "PINHOLE"


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
):  # -> pycolmap.Reconstruction
    """A pycolmap.Reconstruction of S registered images and N points.

    Args:
        cameras: S cameras at each image's ORIGINAL resolution; names are the COLMAP image names (relative to
            the `images/` folder).
        points: [N, 3] world coordinates; colors: [N, 3] uint8.
        observations: which image sees which point where (original pixels); None leaves tracks empty.
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

    reconstruction = pycolmap.Reconstruction()
    for i in range(num_images):
        fx, fy = intrinsics[i, 0, 0], intrinsics[i, 1, 1]
        cx, cy = intrinsics[i, 0, 2] + COLMAP_PIXEL_CENTER, intrinsics[i, 1, 2] + COLMAP_PIXEL_CENTER
        camera = pycolmap.Camera(
            model=COLMAP_CAMERA_MODEL,
            width=int(image_wh[i, 0]),
            height=int(image_wh[i, 1]),
            params=[fx, fy, cx, cy],
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
            camera_id=i + 1,
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
    return reconstruction


def write_colmap(
    sparse_dir: str | Path,
    cameras: Cameras,
    points: np.ndarray,
    colors: np.ndarray,
    observations: Observations | None = None,
) -> Path:
    """Build the model (see `build_colmap_reconstruction`) and write it in binary to `sparse_dir`."""
    reconstruction = build_colmap_reconstruction(cameras, points, colors, observations)
    sparse_dir = Path(sparse_dir)
    sparse_dir.mkdir(parents=True, exist_ok=True)
    reconstruction.write(str(sparse_dir))
    return sparse_dir
