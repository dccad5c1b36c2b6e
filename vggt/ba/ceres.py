"""The Ceres backend: the problem `vggt.ba.bundle_adjust` takes, solved by COLMAP's bundle adjuster (pycolmap).

Not differentiable (Theseus is, `vggt.ba.solver`), but fast on the CPU and installed with the export extra. The
problem becomes a pycolmap.Reconstruction (one camera per frame, or one shared), COLMAP refines poses, focal
lengths and points with a robust loss, and the result comes back as a `BundleAdjustmentResult` in the caller's
array kind. Pixel coordinates pass through unchanged (the offset between conventions cancels out). Cameras of
known poses (`fixed_frames`) are held constant there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vggt.ba.inputs import check_options, prepare_inputs
from vggt.ba.solver import DEFAULT_INLIER_THRESHOLD, BundleAdjustmentResult, fixed_camera_set
from vggt.utils.geometry import project_points
from vggt.utils.optional import import_pycolmap

# Relative tolerance under which fx and fy count as equal (SIMPLE_PINHOLE: one focal length).
SQUARE_PIXEL_TOLERANCE = 1e-9
_CERES_LOSSES = {None: "TRIVIAL", "huber": "HUBER", "cauchy": "CAUCHY"}


def build_pycolmap_reconstruction(extrinsics, intrinsics, points3d, tracks, mask, image_size, shared_camera: bool):
    """A pycolmap.Reconstruction of [S, 3, 4] cameras, [S, 3, 3] intrinsics, [N, 3] points and [S, N, 2] tracks
    observed where [S, N] mask, and the map from point3D id to point index j (points seen fewer than twice are
    left out). Image i has id i + 1. Pixel coordinates are passed through unchanged."""
    pycolmap = import_pycolmap()

    height, width = image_size
    extrinsics, intrinsics, points3d, tracks = (
        np.asarray(a, dtype=np.float64) for a in (extrinsics, intrinsics, points3d, tracks)
    )
    mask = np.asarray(mask, dtype=bool)
    frames = extrinsics.shape[0]
    reconstruction = pycolmap.Reconstruction()
    for i in range(frames if not shared_camera else 1):
        fx, fy, cx, cy = intrinsics[i, 0, 0], intrinsics[i, 1, 1], intrinsics[i, 0, 2], intrinsics[i, 1, 2]
        if shared_camera:
            fx = fy = float(np.mean(intrinsics[:, 0, 0]))
        if abs(fx - fy) <= SQUARE_PIXEL_TOLERANCE * fx:
            model, params = "SIMPLE_PINHOLE", [fx, cx, cy]
        else:
            model, params = "PINHOLE", [fx, fy, cx, cy]
        camera = pycolmap.Camera(model=model, width=width, height=height, params=params, camera_id=i + 1)
        reconstruction.add_camera_with_trivial_rig(camera)

    point_index_in_image = np.full(mask.shape, -1)
    for i in range(frames):
        observed = np.nonzero(mask[i])[0]
        point_index_in_image[i, observed] = np.arange(len(observed))
        image = pycolmap.Image(
            name=f"frame_{i:05d}",
            keypoints=tracks[i, observed],
            camera_id=1 if shared_camera else i + 1,
            image_id=i + 1,
        )
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(extrinsics[i]))

    point_ids = {}
    for j in np.nonzero(mask.sum(axis=0) >= 2)[0]:
        track = pycolmap.Track()
        for i in np.nonzero(mask[:, j])[0]:
            track.add_element(int(i) + 1, int(point_index_in_image[i, j]))
        point_ids[reconstruction.add_point3D(points3d[j], track)] = int(j)
    return reconstruction, point_ids


def pycolmap_bundle_adjust(
    extrinsics,
    intrinsics,
    points3d,
    tracks,
    mask,
    image_size,
    loss: str | None = "cauchy",
    loss_scale: float = 1.0,
    shared_focal: bool = True,
    max_iterations: int = 100,
    num_threads: int | None = None,
    refine_focal: bool = True,
    fixed_frames: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COLMAP bundle adjustment (Ceres) of the problem `vggt.ba.bundle_adjust` takes (numpy, unbatched).

    num_threads: Ceres threads (None: COLMAP's default, all cores). refine_focal: False keeps the focal lengths.
    fixed_frames: frames whose cameras stay as given (at least two; they fix the gauge), None: COLMAP's gauge.

    Returns refined extrinsics [S, 3, 4], intrinsics [S, 3, 3] and points3d [N, 3] (points seen fewer than twice
    unchanged).
    """
    pycolmap = import_pycolmap()

    reconstruction, point_ids = build_pycolmap_reconstruction(
        extrinsics, intrinsics, points3d, tracks, mask, image_size, shared_camera=shared_focal
    )
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, _CERES_LOSSES[loss])
    options.ceres.loss_function_scale = loss_scale
    options.ceres.solver_options.max_num_iterations = max_iterations
    options.refine_focal_length = refine_focal
    if num_threads is not None:
        options.ceres.solver_options.num_threads = num_threads
    if fixed_frames is None:
        pycolmap.bundle_adjustment(reconstruction, options)
    else:
        config = pycolmap.BundleAdjustmentConfig()
        for image_id in reconstruction.images:
            config.add_image(image_id)
        for i in fixed_camera_set(fixed_frames, len(extrinsics)):
            config.set_constant_rig_from_world_pose(reconstruction.image(i + 1).frame_id)
        pycolmap.create_default_bundle_adjuster(options, config, reconstruction).solve()

    frames = len(extrinsics)
    refined_extrinsics = np.stack([reconstruction.image(i + 1).cam_from_world().matrix() for i in range(frames)])
    refined_intrinsics = np.stack(
        [reconstruction.camera(1 if shared_focal else i + 1).calibration_matrix() for i in range(frames)]
    )
    refined_points = np.array(points3d, dtype=np.float64, copy=True)
    for point_id, point in reconstruction.points3D.items():
        refined_points[point_ids[point_id]] = point.xyz
    return refined_extrinsics, refined_intrinsics, refined_points


def ceres_bundle_adjust(
    extrinsics,
    intrinsics,
    points3d,
    tracks,
    mask,
    image_size: tuple[int, int] | None = None,
    loss: str | None = "cauchy",
    loss_scale: float = 1.0,
    shared_focal: bool = True,
    refine_focal: bool = True,
    max_iterations: int = 100,
    inlier_threshold: float = DEFAULT_INLIER_THRESHOLD,
    fixed_frames: Sequence[int] | None = None,
) -> BundleAdjustmentResult:
    """`vggt.ba.bundle_adjust` with COLMAP's Ceres solver: same arguments (unbatched), same result.

    Args:
        extrinsics: [S, 3, 4]; intrinsics: [S, 3, 3]; points3d: [N, 3]; tracks: [S, N, 2]; mask: [S, N].
        image_size: (height, width) of the images; observations outside are ignored.
        shared_focal: one camera for all frames (its intrinsics those of frame 0, focal the mean); else one each.
        refine_focal: optimise focal lengths (principal points always stay).
        fixed_frames: frames whose cameras stay exactly as given (known poses; at least two).

    Returns:
        BundleAdjustmentResult (numpy or torch as the inputs); cost_history holds the initial and final mean
        squared reprojection errors of the observations; num_iterations is 0 (pycolmap does not report them).
    """
    check_options(loss, "implicit", "auto", loss_scale, max_iterations)
    inputs = prepare_inputs(extrinsics, intrinsics, points3d, tracks, mask, image_size)
    if inputs.extrinsics.shape[0] != 1:
        raise ValueError("the ceres backend takes one problem, not a batch")
    extr, intr, points, obs, obs_mask = (
        t[0].cpu().numpy() for t in (inputs.extrinsics, inputs.intrinsics, inputs.points3d, inputs.tracks, inputs.mask)
    )
    if not (obs_mask.sum(axis=0) >= 2).any():
        raise ValueError("no point is observed in two or more frames; nothing to adjust")
    height, width = image_size if image_size is not None else _size_from(intr)
    before = _squared_errors(extr, intr, points, obs, obs_mask)
    refined = pycolmap_bundle_adjust(
        extr, intr, points, obs, obs_mask, (height, width), loss, loss_scale, shared_focal, max_iterations,
        refine_focal=refine_focal, fixed_frames=fixed_frames,
    )  # fmt: skip
    refined_extr, refined_intr, refined_points = refined
    if fixed_frames is not None:  # exactly as given, not through pycolmap's quaternion round trip
        fixed = sorted(fixed_camera_set(fixed_frames, len(extr)))
        refined_extr[fixed] = extr[fixed]
    if not refine_focal:
        refined_intr = intr.copy()
    pixels, depth = project_points(refined_points, refined_extr, refined_intr)
    error = np.where(obs_mask & (depth > 0), np.linalg.norm(pixels - obs, axis=-1), np.inf)
    history = np.array([[before, float(np.mean(np.square(error[obs_mask])))]])
    arrays = [refined_extr, refined_intr, refined_points, obs_mask & (error < inlier_threshold), error, history]
    tensors = [torch.from_numpy(np.asarray(a))[None] for a in arrays]
    return BundleAdjustmentResult(*inputs.restore(tensors), num_iterations=0)  # pycolmap does not report them


def _size_from(intrinsics: np.ndarray) -> tuple[int, int]:
    """(height, width) twice the principal point: what COLMAP's cameras need when no image size is given."""
    return int(np.ceil(2 * intrinsics[:, 1, 2].max() + 1)), int(np.ceil(2 * intrinsics[:, 0, 2].max() + 1))


def _squared_errors(extrinsics, intrinsics, points3d, tracks, mask) -> float:
    pixels, _ = project_points(points3d, extrinsics, intrinsics)
    return float(np.mean(np.sum(np.square(pixels - tracks), axis=-1)[mask]))
