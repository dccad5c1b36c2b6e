"""Known intrinsics (`intrinsics=` / `--intrinsics FILE`): photos undistorted when their cameras have lens
distortion, and the given pinhole intrinsics in place of the predicted ones in every output.

The file formats (JSON, COLMAP cameras or model) are `vggt.data.intrinsics`'. A distorted photo is undistorted
(OpenCV, same size and intrinsic) into a temporary folder before the model sees it, so that `images/` and every
camera of the outputs are those of a pinhole camera.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vggt.data.intrinsics import KnownIntrinsics, read_intrinsics, undistort_image
from vggt.pipeline.inference import Predictions
from vggt.pipeline.inputs import CollectedInputs
from vggt.utils.images import image_size_upright, read_image_rgb
from vggt.utils.load_fn import PreprocessTransform, rescale_intrinsics_to_input

logger = logging.getLogger(__name__)


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
