"""The reference's `vggt.dependency.np_to_pycolmap`: batched numpy cameras, points and tracks to a
`pycolmap.Reconstruction` and back, for pycolmap 3.10 and 4.x alike.

Conventions are the reference's, not `vggt.export.colmap`'s: pixel coordinates go to COLMAP unchanged (no half-pixel
shift), images are named `image_<i>` (1-based, like every COLMAP id here) until a caller renames them, and every
frame gets its own camera unless `shared_camera`. pycolmap 4 attaches each image to a trivial rig and frame;
pycolmap 3.10 registers the images directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggt.dependency.projection import project_3D_points_np
from vggt.errors import InputError
from vggt.utils.optional import import_pycolmap

# Camera models these functions can fill from a pinhole intrinsic matrix.
CAMERA_TYPES = ("PINHOLE", "SIMPLE_PINHOLE")


def _camera_params(intrinsic: np.ndarray, camera_type: str) -> np.ndarray:
    """COLMAP parameters of one [3, 3] intrinsic matrix in `camera_type`."""
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    if camera_type == "PINHOLE":
        return np.array([fx, fy, cx, cy])
    if camera_type == "SIMPLE_PINHOLE":
        return np.array([(fx + fy) / 2, cx, cy])
    raise InputError(
        "camera_type={camera_type} is not supported here; use one of {choices}",
        camera_type=camera_type,
        choices=", ".join(CAMERA_TYPES),
    )


def _add_camera(reconstruction: Any, pycolmap: Any, camera: Any) -> None:
    if hasattr(reconstruction, "add_camera_with_trivial_rig"):  # pycolmap >= 3.12: cameras belong to rigs
        reconstruction.add_camera_with_trivial_rig(camera)
    else:
        reconstruction.add_camera(camera)


def _add_image(
    reconstruction: Any, pycolmap: Any, image_id: int, camera_id: int, extrinsic: np.ndarray, keypoints: np.ndarray
) -> None:
    """Add registered image `image_id` with its [K, 2] keypoints (point2D indices in row order)."""
    cam_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(extrinsic[:3, :3]), extrinsic[:3, 3])
    name = f"image_{image_id}"
    if hasattr(reconstruction, "add_image_with_trivial_frame"):  # pycolmap >= 3.12: poses live on frames
        image = pycolmap.Image(name=name, keypoints=keypoints, camera_id=camera_id, image_id=image_id)
        reconstruction.add_image_with_trivial_frame(image, cam_from_world)
        return
    image = pycolmap.Image(id=image_id, name=name, camera_id=camera_id, cam_from_world=cam_from_world)
    image.points2D = pycolmap.ListPoint2D([pycolmap.Point2D(xy) for xy in keypoints])
    image.registered = True
    reconstruction.add_image(image)


def _build(
    points3d: np.ndarray,
    colors: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    image_size: np.ndarray,
    observations: list[tuple[np.ndarray, np.ndarray]],
    shared_camera: bool,
    camera_type: str,
) -> Any:
    """A reconstruction whose frame i sees point `observations[i][0][k]` at `observations[i][1][k]`.

    Point p gets COLMAP id p + 1; frame i image id and (unless shared) camera id i + 1.
    """
    pycolmap = import_pycolmap()
    reconstruction = pycolmap.Reconstruction()
    tracks = [pycolmap.Track() for _ in range(len(points3d))]
    camera_id = 0
    for frame, (point_indices, keypoints) in enumerate(observations):
        if camera_id == 0 or not shared_camera:
            camera_id = frame + 1
            camera = pycolmap.Camera(
                model=camera_type,
                width=int(image_size[0]),
                height=int(image_size[1]),
                params=_camera_params(intrinsics[frame], camera_type),
                camera_id=camera_id,
            )
            _add_camera(reconstruction, pycolmap, camera)
        _add_image(reconstruction, pycolmap, frame + 1, camera_id, extrinsics[frame], keypoints.astype(np.float64))
        for point2d_index, point in enumerate(point_indices):
            tracks[point].add_element(frame + 1, point2d_index)
    for point, track in enumerate(tracks):
        reconstruction.add_point3D(np.asarray(points3d[point], dtype=np.float64), track, colors[point])
    return reconstruction


def batch_np_matrix_to_pycolmap(
    points3d: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    tracks: np.ndarray,
    image_size: np.ndarray,
    masks: np.ndarray | None = None,
    max_reproj_error: float | None = None,
    max_points3D_val: float = 3000,
    shared_camera: bool = False,
    camera_type: str = "SIMPLE_PINHOLE",
    extra_params: np.ndarray | None = None,
    min_inlier_per_frame: int = 64,
    points_rgb: np.ndarray | None = None,
) -> tuple[Any, np.ndarray | None]:
    """A reconstruction of tracked points for bundle adjustment, and which tracks made it in.

    Args:
        points3d: [P, 3] one world point per track.
        extrinsics: [N, 3, 4] camera-from-world; intrinsics: [N, 3, 3].
        tracks: [N, P, 2] pixel positions of every track in every frame.
        image_size: (width, height) of the (equally sized) frames.
        masks: optional [N, P] bool, which observations to trust.
        max_reproj_error: also drop observations reprojecting farther than this (pixels).
        max_points3D_val: points with a coordinate at or above this keep no observations.
        shared_camera: one camera for all frames.
        camera_type: "SIMPLE_PINHOLE" or "PINHOLE".
        extra_params: unsupported distortion (the reference raises for SIMPLE_RADIAL too); must be None.
        min_inlier_per_frame: (None, None) when a frame keeps fewer observations than this.
        points_rgb: optional [P, 3] uint8 colours.

    Returns:
        (reconstruction, valid_mask [P] of tracks with at least two observations), or (None, None).
    """
    num_frames, num_tracks, _ = tracks.shape
    if len(extrinsics) != num_frames or len(intrinsics) != num_frames or len(points3d) != num_tracks:
        raise InputError(
            "expected extrinsics [N, 3, 4], intrinsics [N, 3, 3], tracks [N, P, 2] and points3d [P, 3]; got {shapes}",
            shapes=", ".join(str(np.shape(a)) for a in (extrinsics, intrinsics, tracks, points3d)),
        )
    if extra_params is not None:
        raise InputError("extra_params (lens distortion) is not supported; pass camera_type=SIMPLE_PINHOLE or PINHOLE")
    if max_reproj_error is not None:
        projected, points_cam = project_3D_points_np(points3d, extrinsics, intrinsics)
        projected[points_cam[:, -1] <= 0] = 1e6
        reprojection_ok = np.linalg.norm(projected - tracks, axis=-1) < max_reproj_error
        masks = reprojection_ok if masks is None else np.logical_and(masks, reprojection_ok)
    if masks is None:
        raise InputError("pass masks or max_reproj_error: one of them decides which observations to keep")
    if masks.sum(1).min() < min_inlier_per_frame:
        print("Not enough inliers per frame, skip BA.")
        return None, None

    valid_mask = masks.sum(0) >= 2  # a track needs two observations
    valid_idx = np.nonzero(valid_mask)[0]
    points = np.asarray(points3d)[valid_idx]
    colors = np.zeros((len(valid_idx), 3), np.uint8) if points_rgb is None else np.asarray(points_rgb)[valid_idx]
    observable = (points < max_points3D_val).all(axis=1)
    observations = []
    for frame in range(num_frames):
        kept = np.nonzero(observable & masks[frame][valid_idx])[0]
        observations.append((kept, tracks[frame][valid_idx[kept]]))
    reconstruction = _build(
        points, colors, extrinsics, intrinsics, image_size, observations, shared_camera, camera_type
    )
    return reconstruction, valid_mask


def batch_np_matrix_to_pycolmap_wo_track(
    points3d: np.ndarray,
    points_xyf: np.ndarray,
    points_rgb: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    image_size: np.ndarray,
    shared_camera: bool = False,
    camera_type: str = "SIMPLE_PINHOLE",
) -> Any:
    """A reconstruction of feed-forward points, each seen once (for initialising other methods, not for BA).

    Args:
        points3d: [P, 3] world points; points_xyf: [P, 3] pixel x, y and frame index of each;
        points_rgb: [P, 3] uint8 colours.
        extrinsics: [N, 3, 4] camera-from-world; intrinsics: [N, 3, 3].
        image_size: (width, height); shared_camera, camera_type: as `batch_np_matrix_to_pycolmap`.
    """
    frames_of_points = np.asarray(points_xyf)[:, 2].astype(np.int32)
    observations = []
    for frame in range(len(extrinsics)):
        kept = np.nonzero(frames_of_points == frame)[0]
        observations.append((kept, np.asarray(points_xyf)[kept, :2]))
    return _build(points3d, points_rgb, extrinsics, intrinsics, image_size, observations, shared_camera, camera_type)


def pycolmap_to_batch_np_matrix(
    reconstruction: Any, device: str = "cpu", camera_type: str = "SIMPLE_PINHOLE"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Batched arrays of a reconstruction whose images have ids 1..N.

    Returns:
        points3d [max point id, 3] (row id - 1), extrinsics [N, 3, 4] camera-from-world, intrinsics [N, 3, 3] and,
        for SIMPLE_RADIAL, the distortion coefficient [N, 1] (else None).

    `device` is accepted for the reference's signature and ignored (numpy).
    """
    points3d = np.zeros((max(reconstruction.point3D_ids()), 3))
    for point_id, point in reconstruction.points3D.items():
        points3d[point_id - 1] = point.xyz
    extrinsics, intrinsics, distortion = [], [], []
    for image_id in range(1, len(reconstruction.images) + 1):
        image = reconstruction.images[image_id]
        camera = reconstruction.cameras[image.camera_id]
        extrinsics.append(
            image.cam_from_world().matrix() if callable(image.cam_from_world) else image.cam_from_world.matrix()
        )
        intrinsics.append(camera.calibration_matrix())
        distortion.append(camera.params[-1])
    extra = np.stack(distortion)[:, None] if camera_type == "SIMPLE_RADIAL" else None
    return points3d, np.stack(extrinsics), np.stack(intrinsics), extra
