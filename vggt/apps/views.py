"""What the apps show of a reconstruction, re-rendered from its cached predictions without running the model:
the 3D scene (points and camera frustums, `Reconstruction.to_glb`), each frame's image, depth and confidence, and
a one-line summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.data.layout import GLB_FILE
from vggt.export.depth import PREVIEW_PERCENTILES, colorize_depth
from vggt.export.glb import write_glb
from vggt.pipeline.options import DEFAULT_CONF_PERCENTILE
from vggt.pipeline.points import PointSelection
from vggt.pipeline.reconstruction import Reconstruction

# A browser draws a few hundred thousand points smoothly; the page's default cap.
VIEW_MAX_POINTS = 200_000


@dataclass(frozen=True)
class ViewOptions:
    """How the 3D scene is drawn: the cloud's selection (`PointSelection` fields), its source ("depth": depth
    maps unprojected with the cameras, "pointmap": the point head) and whether the camera frustums are shown."""

    conf_percentile: float = DEFAULT_CONF_PERCENTILE
    max_points: int | None = VIEW_MAX_POINTS
    frames: tuple[int, ...] | None = None
    mask_black_background: bool = False
    mask_white_background: bool = False
    points: str = "depth"
    show_cameras: bool = True

    def selection(self) -> PointSelection:
        keys = PointSelection.__dataclass_fields__
        return PointSelection(**{k: v for k, v in dataclasses.asdict(self).items() if k in keys})


def apply_view(reconstruction: Reconstruction, view: ViewOptions) -> Reconstruction:
    """`reconstruction` with the cloud `view` asks for (itself when it already has it)."""
    selection = view.selection()
    if reconstruction.selection == selection and reconstruction.points_source == view.points:
        return reconstruction
    return reconstruction.select(points=view.points, **selection.keywords())


def write_scene(reconstruction: Reconstruction, folder: Path, show_cameras: bool = True) -> Path:
    """`folder/scene.glb`: the cloud, and the camera frustums when `show_cameras`."""
    path = folder / GLB_FILE
    if show_cameras:
        return reconstruction.to_glb(path)
    return write_glb(path, reconstruction.points, reconstruction.colors, reconstruction.cameras.select([]))


def colorize_confidence(confidence: np.ndarray) -> np.ndarray:
    """[H, W] confidence (>= 1) -> [H, W, 3] uint8 RGB (viridis on log confidence: bright is confident)."""
    import cv2

    values = np.log(np.clip(np.nan_to_num(np.asarray(confidence, np.float32), nan=1.0), 1.0, None))
    low, high = np.percentile(values, PREVIEW_PERCENTILES)
    scaled = np.clip((values - low) / max(high - low, np.finfo(np.float32).eps), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return np.ascontiguousarray(bgr[..., ::-1])


def frame_views(reconstruction: Reconstruction, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame `index` as the model saw it [H, W, 3], its depth (turbo, near is red) and the confidence of the
    current point source, all uint8 RGB on the model's input grid."""
    predictions = reconstruction.predictions
    pointmap = reconstruction.points_source == "pointmap" and predictions.world_points_conf is not None
    confidence = predictions.world_points_conf if pointmap else predictions.depth_conf
    image = np.ascontiguousarray(predictions.images[index].transpose(1, 2, 0))
    return image, colorize_depth(reconstruction.depth[index]), colorize_confidence(confidence[index])


def frame_caption(reconstruction: Reconstruction, index: int) -> str:
    return f"Frame {index + 1} of {reconstruction.num_frames}: {reconstruction.image_names[index]}"


def summary_line(reconstruction: Reconstruction, device_text: str) -> str:
    """`8 frames, 200000 points (from depth) in 3.1 s on cpu (float32)`."""
    return f"{reconstruction.summary()} on {device_text}"
