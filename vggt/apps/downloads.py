"""The files the demo offers for download, written by the pipeline's own writers (`Reconstruction.save`).

The zip is the whole output folder of `vggt reconstruct` for the cloud on screen: the COLMAP model beside
images/, points.ply, scene.glb, depth/, cameras.json and predictions.npz. Unzipped, it opens in `vggt view` and
reads back with `Reconstruction.load`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vggt.data.layout import CAMERAS_FILE, PLY_FILE, PREDICTIONS_FILE
from vggt.pipeline.reconstruction import Reconstruction

SCENE_DIR = "scene"
ARCHIVE_STEM = "vggt-scene"


def write_downloads(reconstruction: Reconstruction, folder: Path, scene_glb: Path) -> list[Path]:
    """Write the downloads into `folder`: the scene on screen (`scene_glb`), the PLY, the zip of the whole
    output folder, predictions.npz and cameras.json, in that order."""
    scene = reconstruction.save(folder / SCENE_DIR)
    archive = Path(shutil.make_archive(str(folder / ARCHIVE_STEM), "zip", root_dir=scene))
    return [scene_glb, scene / PLY_FILE, archive, scene / PREDICTIONS_FILE, scene / CAMERAS_FILE]
