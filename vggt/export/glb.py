"""GLB scenes for 3D viewers: the coloured point cloud plus one camera frustum per image (trimesh).

glTF is Y-up with cameras looking down -Z, while VGGT's world follows OpenCV (Y down, Z forward, the
first camera at the origin). The scene is therefore written with Y and Z negated
(`GLTF_FROM_OPENCV`), so that it opens upright, seen from the first camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggt.utils.cameras import Cameras
from vggt.utils.optional import import_trimesh

GLTF_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])
# Frustum depth as a fraction of the scene's extent (the diagonal of the 5th-95th percentile box of the points).
FRUSTUM_RELATIVE_DEPTH = 0.05
SCENE_EXTENT_PERCENTILES = (5.0, 95.0)
# Apex and the four image corners, as triangles (apex, corner i, corner i+1) seen from both sides.
_FRUSTUM_FACES = np.array(
    [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [0, 2, 1], [0, 3, 2], [0, 4, 3], [0, 1, 4]], dtype=np.int64
)
POINTS_NODE_NAME = "points"
CAMERA_NODE_FORMAT = "camera_{:04d}"


def scene_extent(points: np.ndarray) -> float:
    """The diagonal of the box holding the central 90 % of `points` [N, 3] (1.0 without points)."""
    if len(points) == 0:
        return 1.0
    low, high = np.percentile(points, SCENE_EXTENT_PERCENTILES, axis=0)
    extent = float(np.linalg.norm(high - low))
    return extent if np.isfinite(extent) and extent > 0 else 1.0


def camera_frustum(extrinsic: np.ndarray, intrinsic: np.ndarray, width: int, height: int, depth: float) -> np.ndarray:
    """World coordinates [5, 3] of a camera's centre and its image corners at distance `depth`."""
    rotation, translation = extrinsic[:3, :3], extrinsic[:3, 3]
    corners_px = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64)
    rays = corners_px @ np.linalg.inv(intrinsic).T  # z == 1
    corners_cam = np.concatenate([np.zeros((1, 3)), rays * depth], axis=0)
    return (corners_cam - translation) @ rotation  # R^T (x - t), row-wise


def frustum_color(index: int, count: int) -> np.ndarray:
    """RGBA uint8 running from blue (first camera) to red (last)."""
    t = index / max(count - 1, 1)
    return np.array([255 * t, 64, 255 * (1 - t), 255], dtype=np.uint8)


def build_scene(points: np.ndarray, colors: np.ndarray, cameras: Cameras):  # -> trimesh.Scene
    """A trimesh.Scene with a `points` point cloud and one `camera_<i>` frustum mesh per camera.

    Args:
        points: [N, 3] world (OpenCV) coordinates; colors: [N, 3] uint8.
        cameras: S cameras (their image sizes give the frustums' shapes).
    """
    trimesh = import_trimesh()
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.uint8)
    scene = trimesh.Scene()
    if len(points):
        alpha = np.full((len(colors), 1), 255, dtype=np.uint8)
        cloud = trimesh.PointCloud(points @ GLTF_FROM_OPENCV.T, colors=np.concatenate([colors, alpha], axis=1))
        scene.add_geometry(cloud, node_name=POINTS_NODE_NAME, geom_name=POINTS_NODE_NAME)

    depth = FRUSTUM_RELATIVE_DEPTH * scene_extent(points)
    count = len(cameras)
    for i in range(count):
        width, height = (int(v) for v in cameras.image_wh[i])
        vertices = camera_frustum(cameras.extrinsics[i], cameras.intrinsics[i], width, height, depth)
        mesh = trimesh.Trimesh(vertices @ GLTF_FROM_OPENCV.T, _FRUSTUM_FACES, process=False)
        mesh.visual.face_colors = np.tile(frustum_color(i, count), (len(_FRUSTUM_FACES), 1))
        name = CAMERA_NODE_FORMAT.format(i)
        mesh.metadata["image_name"] = cameras.names[i]
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    return scene


def write_glb(path: str | Path, points: np.ndarray, colors: np.ndarray, cameras: Cameras) -> Path:
    """Write `build_scene(points, colors, cameras)` as a binary glTF to `path`."""
    scene = build_scene(points, colors, cameras)
    path = Path(path)
    path.write_bytes(scene.export(file_type="glb"))
    return path
