"""Known intrinsics (`intrinsics=` / `--intrinsics FILE`) and camera poses (`poses=` / `--poses FILE`).

Intrinsics: photos undistorted when their cameras have lens distortion, and the given pinhole intrinsics in place
of the predicted ones in every output. The file formats (JSON, COLMAP cameras or model) are
`vggt.data.intrinsics`'. A distorted photo is undistorted (OpenCV, same size and intrinsic) into a temporary folder
before the model sees it, so that `images/` and every camera of the outputs are those of a pinhole camera.

Poses (formats: `vggt.data.poses`): the predicted scene is moved by the similarity (rotation, translation and
scale) that best takes the predicted cameras of the posed photos onto their given poses, so that cameras, depth
and points are in the frame and units of the given poses; the posed photos' cameras are then exactly the given
ones (the unposed photos keep their moved predictions). This needs two posed photos at distinct camera centres.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vggt.data.intrinsics import KnownIntrinsics, read_intrinsics, undistort_image
from vggt.data.poses import KnownPoses, read_poses
from vggt.errors import InputError, PredictionError
from vggt.pipeline.inference import Predictions
from vggt.pipeline.inputs import CollectedInputs
from vggt.utils.geometry import as_homogeneous, closed_form_inverse_se3
from vggt.utils.images import image_size_upright, read_image_rgb
from vggt.utils.load_fn import PreprocessTransform, rescale_intrinsics_to_input
from vggt.utils.pose_enc import extri_intri_to_pose_encoding
from vggt.utils.similarity import Similarity

logger = logging.getLogger(__name__)

MIN_POSED_PHOTOS = 2  # a similarity needs two camera centres (and the cameras' orientations)
# Camera centres whose spread is below this fraction of their distance from the origin (or below this many units
# near the origin) count as one centre: they fix no scale.
COINCIDENT_CENTRES = 1e-6
POSE_ENCODING_CAMERA = 7  # pose_enc[:, :7]: translation and quaternion; the rest is the field of view


def known_intrinsics(path: str | Path, collected: CollectedInputs) -> tuple[KnownIntrinsics, CollectedInputs]:
    """The calibration of every input photo, and the inputs to run on: the photos themselves, or where a camera
    is distorted, undistorted copies in a temporary folder (the calibration then has no distortion)."""
    paths = collected.image_paths
    known = read_intrinsics(path, [p.name for p in paths], [image_size_upright(p) for p in paths])
    if not known.is_distorted.any():
        return known, collected
    folder = tempfile.TemporaryDirectory(prefix="vggt-undistorted-")
    try:
        undistorted, cameras = [], []
        for source, camera in zip(paths, known.cameras):
            target = Path(folder.name) / source.name
            image, intrinsic = undistort_image(np.asarray(read_image_rgb(source)), camera)
            Image.fromarray(image).save(target, format="PNG")  # lossless (a .jpg name then holds PNG data)
            undistorted.append(target)
            cameras.append(dataclasses.replace(camera, intrinsic=intrinsic, distortion=np.zeros(0)))
    except BaseException:
        folder.cleanup()
        raise
    logger.info("undistorted %d of %d photos with the given calibration", int(known.is_distorted.sum()), len(paths))
    collected.cleanup()
    inputs = dataclasses.replace(collected, image_paths=undistorted, frames_dir=folder)
    return KnownIntrinsics(known.image_names, tuple(cameras)), inputs


def apply_known_intrinsics(
    predictions: Predictions, known: KnownIntrinsics, transforms: list[PreprocessTransform]
) -> None:
    """Put the given intrinsics (on the model's input grid) in place of the decoded ones of `predictions`."""
    predictions.intrinsics = rescale_intrinsics_to_input(known.intrinsics, transforms).astype(np.float32)


def known_poses(path: str | Path, collected: CollectedInputs) -> KnownPoses:
    """The given pose of each input photo (NaN for a photo the file does not name), checked to be usable: at least
    two posed photos at distinct camera centres."""
    try:
        known = read_poses(path, [p.name for p in collected.image_paths], [p.name for p in collected.left_out])
    except InputError as error:  # named as the option that gave the file
        raise InputError("{poses}: {error}", error=error) from None
    centres = known.camera_to_world[known.known, :3, 3]
    if len(centres) < MIN_POSED_PHOTOS:
        raise InputError(
            "{poses}: {path} gives a pose for {count} of the {total} photos; placing the reconstruction in the poses' "
            "frame needs at least two posed photos",
            path=path,
            count=len(centres),
            total=len(collected.image_paths),
        )
    if _coincident(centres):
        raise InputError(
            "{poses}: {path}: the {count} posed photos share one camera centre, which fixes no scale; give poses of "
            "at least two photos taken from different places",
            path=path,
            count=len(centres),
        )
    return known


def _coincident(centres: np.ndarray) -> bool:
    """Whether camera centres [K, 3] are (numerically) all one point."""
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(axis=0)) ** 2, axis=1)))
    return bool(spread <= COINCIDENT_CENTRES * max(1.0, float(np.linalg.norm(centres.mean(axis=0)))))


def fit_to_poses(predicted: np.ndarray, given: np.ndarray) -> Similarity:
    """The similarity taking predicted cameras onto given ones, both camera-to-world [K, 4, 4] (K >= 2 at distinct
    centres): the rotation best mapping each predicted orientation onto its given one (the SO(3) projection of
    their sum, chordal mean), the scale as the ratio of the spreads of the camera centres about their means (Horn's
    symmetric scale: positive, and exact for an exact prediction), and the translation mapping the mean predicted
    centre onto the mean given one."""
    correlation = np.einsum("kij,klj->il", given[:, :3, :3], predicted[:, :3, :3])  # sum of R_given R_pred^T
    u, _, vt = np.linalg.svd(correlation)
    rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    source, target = predicted[:, :3, 3], given[:, :3, 3]
    if _coincident(source):
        raise PredictionError(
            "the model put the posed photos' cameras at one place, so the reconstruction cannot be scaled to the "
            "given poses; give poses of photos taken further apart"
        )
    spread_source = np.sum((source - source.mean(axis=0)) ** 2)
    scale = float(np.sqrt(np.sum((target - target.mean(axis=0)) ** 2) / spread_source))
    return Similarity(scale, rotation, target.mean(axis=0) - scale * rotation @ source.mean(axis=0))


def apply_known_poses(predictions: Predictions, known: KnownPoses) -> Similarity:
    """Move `predictions` into the frame and units of the given poses (module docstring): extrinsics, depth,
    world points and the pose encoding's cameras; the posed photos' extrinsics become the given ones exactly. The
    outputs are then in the poses' units, not the model's metres (`metric_scale` is cleared). Returns the move."""
    posed = known.known
    predicted = closed_form_inverse_se3(as_homogeneous(predictions.extrinsics.astype(np.float64)))
    move = fit_to_poses(predicted[posed], known.camera_to_world[posed])
    extrinsics = move.apply_to_extrinsics(predictions.extrinsics)
    extrinsics[posed] = known.world_to_camera[posed]
    predictions.extrinsics = extrinsics.astype(np.float32)
    if predictions.depth is not None:
        predictions.depth = (predictions.depth * move.scale).astype(np.float32)
    if predictions.world_points is not None:
        predictions.world_points = move.apply(predictions.world_points).astype(np.float32)
    if predictions.pose_enc is not None and predictions.intrinsics is not None:
        encoded = extri_intri_to_pose_encoding(
            torch.from_numpy(predictions.extrinsics), torch.from_numpy(predictions.intrinsics), predictions.input_hw
        )
        predictions.pose_enc = predictions.pose_enc.copy()
        predictions.pose_enc[:, :POSE_ENCODING_CAMERA] = encoded[:, :POSE_ENCODING_CAMERA].numpy()
    predictions.metric_scale = None
    logger.info(
        "placed the reconstruction in the frame of %d given poses (scale %.4g); their cameras are the given ones",
        int(posed.sum()),
        move.scale,
    )
    return move
