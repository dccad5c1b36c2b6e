"""Run a VGGT model on scene folders (the format of `vggt.data.scene`) and score it with `vggt.eval`'s metrics.

Per scene, the model sees the scene's images preprocessed as for inference (`vggt.utils.load_fn.load_images`,
mode "crop"). The ground truth is brought onto the model's pixel grid by nearest-neighbour sampling through the
same resize, crop and padding, and compared with:

- cameras: relative pose errors over all frame pairs, AUC@30/15/5/3, RRA and RTA (needs >= 2 frames);
- depth: AbsRel and delta < 1.25 after per-frame scale alignment (needs depth/);
- points: the point head's world points against the ground-truth depth unprojected with the ground-truth
  cameras, after a Umeyama Sim(3) alignment (accuracy, completeness, Chamfer);
- depth_points: the same for the predicted depth unprojected with the predicted cameras, the combination the
  paper reports as the more accurate.

Over the dataset, camera metrics pool the frame pairs of all scenes (as the CO3D evaluation pools a category's
sequences); the other metrics are means over the scenes that have them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vggt
from vggt.data.scene import Scene, load_scene
from vggt.device import autocast
from vggt.eval.camera import auc_from_errors, relative_pose_errors, rra_rta_from_errors
from vggt.eval.depth import depth_metrics
from vggt.eval.points import DEFAULT_MAX_POINTS, pointmap_metrics
from vggt.utils.geometry import depth_map_to_world_points, pixel_grid
from vggt.utils.load_fn import PreprocessTransform, load_images
from vggt.utils.pose_enc import pose_encoding_to_extri_intri

CAMERA_AUC_THRESHOLDS = (30, 15, 5, 3)
CAMERA_ACCURACY_THRESHOLDS = (5, 15, 30)
PREPROCESS_MODE = "crop"
METRIC_GROUPS = ("camera", "depth", "points", "depth_points")
METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"
# Columns of the markdown table, in order; other metrics are in metrics.json only.
TABLE_COLUMNS = (
    ("camera", "AUC@30"),
    ("camera", "AUC@15"),
    ("camera", "AUC@5"),
    ("camera", "RRA@15"),
    ("camera", "RTA@15"),
    ("depth", "abs_rel"),
    ("depth", "delta_1.25"),
    ("points", "accuracy"),
    ("points", "completeness"),
    ("points", "chamfer"),
    ("depth_points", "chamfer"),
)


@dataclass
class EvalSettings:
    """How to evaluate: frames per scene, depth alignment, the point budget of the Chamfer metrics, and where to
    run. `max_frames` keeps that many evenly spaced frames of each scene (None: all)."""

    max_frames: int | None = None
    depth_alignment: str = "median"
    max_points: int | None = DEFAULT_MAX_POINTS
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32


@dataclass
class SceneResult:
    """Metrics of one scene by group (see METRIC_GROUPS), and its per-pair camera errors for pooling."""

    name: str
    num_frames: int
    metrics: dict[str, dict[str, float]]
    rot_err_deg: np.ndarray | None = None
    trans_err_deg: np.ndarray | None = None


# --------------------------------------------------------------------------------------------- geometry


def sample_on_input_grid(
    original: np.ndarray, transform: PreprocessTransform, input_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a per-pixel map of an original photo onto the model's input grid, nearest neighbour.

    Args:
        original: [h, w, ...] map at the original photo's resolution (depth, world points, mask).
        transform: how the photo was preprocessed (`load_images(...).transforms[i]`).
        input_hw: (H, W) of the model input.

    Returns:
        the sampled map [H, W, ...], and [H, W] boolean: True where the input pixel lies on the photo (False on
        padding).
    """
    height, width = original.shape[:2]
    input_xy = pixel_grid(*input_hw, dtype=torch.float64).numpy()
    original_xy = np.round(transform.input_to_original(input_xy)).astype(np.int64)
    cols, rows = original_xy[..., 0], original_xy[..., 1]
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    return original[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)], inside


# --------------------------------------------------------------------------------------------- one scene


def select_frames(num_frames: int, max_frames: int | None) -> np.ndarray:
    """Indices of at most `max_frames` evenly spaced frames, first and last included."""
    if max_frames is None or num_frames <= max_frames:
        return np.arange(num_frames)
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    return np.unique(np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64))


def camera_group(rot_err: np.ndarray, trans_err: np.ndarray) -> dict[str, float]:
    """AUC@t for CAMERA_AUC_THRESHOLDS and RRA/RTA@t for CAMERA_ACCURACY_THRESHOLDS, in percent."""
    metrics = {f"AUC@{t}": auc_from_errors(rot_err, trans_err, t) for t in CAMERA_AUC_THRESHOLDS}
    metrics.update(rra_rta_from_errors(rot_err, trans_err, CAMERA_ACCURACY_THRESHOLDS))
    metrics["num_pairs"] = int(rot_err.size)
    return metrics


@dataclass
class Prediction:
    """The model's outputs for one scene as numpy, on the model's input grid [H, W]: `extrinsics` [S, 3, 4]
    camera-from-world and `intrinsics` [S, 3, 3] (None without a camera head), `depth` [S, H, W] and
    `world_points` [S, H, W, 3] (None without their heads), and the preprocessing of each photo."""

    transforms: list[PreprocessTransform]
    input_hw: tuple[int, int]
    extrinsics: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    depth: np.ndarray | None = None
    world_points: np.ndarray | None = None


@torch.inference_mode()
def predict(model: torch.nn.Module, image_paths: Sequence[Path], settings: EvalSettings) -> Prediction:
    """Preprocess one scene's photos as for inference and run the model on them."""
    loaded = load_images(image_paths, mode=PREPROCESS_MODE)
    images = loaded.images.to(settings.device)
    with autocast(settings.device, settings.dtype):
        outputs = model(images)
    input_hw = (int(images.shape[-2]), int(images.shape[-1]))
    prediction = Prediction(transforms=loaded.transforms, input_hw=input_hw)
    if "pose_enc" in outputs:
        extrinsics, intrinsics = pose_encoding_to_extri_intri(outputs["pose_enc"].float(), input_hw)
        prediction.extrinsics = extrinsics[0].cpu().double().numpy()
        prediction.intrinsics = intrinsics[0].cpu().double().numpy()
    if "depth" in outputs:
        prediction.depth = outputs["depth"][0, ..., 0].float().cpu().numpy()
    if "world_points" in outputs:
        prediction.world_points = outputs["world_points"][0].float().cpu().numpy()
    return prediction


def ground_truth_on_input_grid(
    scene: Scene, frames: np.ndarray, prediction: Prediction
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth depth [S, H, W], world points [S, H, W, 3] and validity [S, H, W] on the model's grid.

    Valid: depth > 0, inside the mask if the scene has masks, and on the photo (not on padding).
    """
    depths, points, valids = [], [], []
    for frame_index, transform in zip(frames, prediction.transforms):
        frame = scene.read_frame(int(frame_index))
        depth = frame.depth.astype(np.float64)
        valid = depth > 0
        if frame.mask is not None:
            valid &= frame.mask
        world = depth_map_to_world_points(depth, scene.extrinsics[frame_index], scene.intrinsics[frame_index])
        depth, inside = sample_on_input_grid(depth, transform, prediction.input_hw)
        world, _ = sample_on_input_grid(world, transform, prediction.input_hw)
        valid, _ = sample_on_input_grid(valid, transform, prediction.input_hw)
        depths.append(depth)
        points.append(world)
        valids.append(valid & inside)
    return np.stack(depths), np.stack(points), np.stack(valids)


def score_scene(scene: Scene, frames: np.ndarray, prediction: Prediction, settings: EvalSettings) -> SceneResult:
    """Every metric group the scene's ground truth allows, for a prediction on frames `frames` of `scene`."""
    result = SceneResult(name=scene.name, num_frames=len(frames), metrics={})
    if prediction.extrinsics is not None and len(frames) >= 2:
        rot_err, trans_err = relative_pose_errors(prediction.extrinsics, scene.extrinsics[frames])
        result.rot_err_deg, result.trans_err_deg = rot_err, trans_err
        result.metrics["camera"] = camera_group(rot_err, trans_err)

    if not scene.has_depth:
        return result
    gt_depth, gt_points, valid = ground_truth_on_input_grid(scene, frames, prediction)
    if not valid.any():
        return result
    if prediction.depth is not None:
        result.metrics["depth"] = depth_metrics(
            prediction.depth, gt_depth, mask=valid, alignment=settings.depth_alignment
        )
    if prediction.world_points is not None:
        result.metrics["points"] = pointmap_metrics(
            prediction.world_points, gt_points, mask=valid, max_points=settings.max_points
        )
    if prediction.depth is not None and prediction.extrinsics is not None:
        depth_points = depth_map_to_world_points(prediction.depth, prediction.extrinsics, prediction.intrinsics)
        result.metrics["depth_points"] = pointmap_metrics(
            depth_points, gt_points, mask=valid, max_points=settings.max_points
        )
    return result


def evaluate_scene(model: torch.nn.Module, scene_dir: Path | str, settings: EvalSettings) -> SceneResult:
    """Load one scene folder, predict its (selected) frames and score them."""
    scene = load_scene(scene_dir, load_data=False)
    frames = select_frames(scene.num_frames, settings.max_frames)
    prediction = predict(model, [scene.image_paths[i] for i in frames], settings)
    return score_scene(scene, frames, prediction, settings)


# --------------------------------------------------------------------------------------------- dataset


def _combine(key: str, values: list[float]) -> float | int:
    """Counts (num_frames, num_points) add up over scenes; metrics average."""
    return int(sum(values)) if key.startswith("num_") else float(np.mean(values))


def summarize(results: Sequence[SceneResult]) -> dict[str, dict[str, float]]:
    """Dataset-level metrics: camera metrics over the pooled pairs of all scenes, others averaged over scenes."""
    overall: dict[str, dict[str, float]] = {}
    with_cameras = [r for r in results if r.rot_err_deg is not None]
    if with_cameras:
        overall["camera"] = camera_group(
            np.concatenate([r.rot_err_deg for r in with_cameras]),
            np.concatenate([r.trans_err_deg for r in with_cameras]),
        )
    for group in METRIC_GROUPS[1:]:
        scored = [r.metrics[group] for r in results if group in r.metrics]
        if scored:
            overall[group] = {key: _combine(key, [m[key] for m in scored]) for key in scored[0]}
            overall[group]["num_scenes"] = len(scored)
    return overall


def evaluate_scenes(
    model: torch.nn.Module,
    scene_dirs: Iterable[Path | str],
    settings: EvalSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every scene folder; returns the report written by `write_report`."""
    from tqdm.auto import tqdm

    scene_dirs = list(scene_dirs)
    model.eval()
    results = []
    bar = tqdm(scene_dirs, desc="evaluate", unit="scene", disable=not progress)
    for scene_dir in bar:
        bar.set_postfix_str(Path(scene_dir).name)
        results.append(evaluate_scene(model, scene_dir, settings))
    return {
        "vggt_version": vggt.__version__,
        "settings": {
            "max_frames": settings.max_frames,
            "depth_alignment": settings.depth_alignment,
            "max_points": settings.max_points,
            "preprocess_mode": PREPROCESS_MODE,
            "device": str(settings.device),
            "dtype": str(settings.dtype).removeprefix("torch."),
        },
        "overall": summarize(results),
        "scenes": {r.name: {"num_frames": r.num_frames, **r.metrics} for r in results},
    }


# --------------------------------------------------------------------------------------------- report


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one row per scene and one for the whole dataset."""
    header = ["scene", "frames"] + [f"{group} {name}" for group, name in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(name, scene) for name, scene in report["scenes"].items()]
    total_frames = sum(scene["num_frames"] for _, scene in rows)
    rows.append(("**all**", {"num_frames": total_frames, **report["overall"]}))
    for name, metrics in rows:
        cells = [name, str(metrics["num_frames"])]
        cells += [_cell(metrics.get(group, {}).get(key)) for group, key in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Camera AUC, RRA, RTA and delta < 1.25 are percentages; AbsRel is a ratio; point distances are in the "
        "ground truth's units after a Sim(3) alignment. The **all** row pools the camera pairs of every scene "
        "and averages the other metrics over scenes.",
    ]
    return "\n".join(lines + notes) + "\n"


def write_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """Write metrics.json and metrics.md into `out_dir` (created if needed); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / METRICS_JSON, out_dir / METRICS_MARKDOWN
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown_table(report))
    return json_path, md_path
