"""Run a VGGT model on scene folders (the format of `vggt.data.scene`) and score it with `vggt.eval`'s metrics.

Per scene, the model sees the scene's images preprocessed and run exactly as `vggt reconstruct` runs them
(`vggt.pipeline.inputs.load_input_images` and `vggt.pipeline.inference.run_inference`, mode "crop" unless
settings say otherwise, at the model's training resolution unless `resolution` is set). The ground truth is
brought onto the model's pixel grid by nearest-neighbour sampling through the same resize, crop and padding,
and compared with:

- cameras: relative pose errors over all frame pairs, AUC@30/15/5/3, RRA and RTA (needs >= 2 frames);
- depth: AbsRel and delta < 1.25 after per-frame scale alignment (needs depth/);
- points: the point head's world points against the ground-truth depth unprojected with the ground-truth
  cameras, after a Umeyama Sim(3) alignment (accuracy, completeness, Chamfer);
- depth_points: the same for the predicted depth unprojected with the predicted cameras, the combination the
  paper reports as the more accurate;
- tracks: TAP-Vid's position accuracy, occlusion accuracy and average Jaccard on the scene's ground-truth tracks
  (tracks.npz), for models with a track head (`vggt.eval.scene_tracks`).

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

from vggt.data.scene import Scene, load_scene
from vggt.data.tracks import SceneTracks
from vggt.errors import InputError
from vggt.eval.camera import auc_from_errors, relative_pose_errors, rra_rta_from_errors
from vggt.eval.depth import depth_metrics
from vggt.eval.points import DEFAULT_MAX_POINTS, pointmap_metrics
from vggt.eval.scene_tracks import (
    TrackPrediction,
    first_frame_queries,
    predict_tracks,
    queries_on_input_grid,
    track_metrics,
)
from vggt.models.config import VGGTConfig
from vggt.pipeline.inference import InferenceOptions, Predictions, run_inference, streaming_for
from vggt.pipeline.inputs import load_input_images
from vggt.runtime.token_merging import check_merge_ratio
from vggt.utils.files import atomic_file
from vggt.utils.geometry import depth_map_to_world_points, pixel_grid
from vggt.utils.load_fn import PreprocessTransform
from vggt.utils.sampling import evenly_spaced_indices
from vggt.version import __version__

CAMERA_AUC_THRESHOLDS = (30, 15, 5, 3)
CAMERA_ACCURACY_THRESHOLDS = (5, 15, 30)
METRIC_GROUPS = ("camera", "depth", "points", "depth_points", "tracks")
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
    ("tracks", "delta_avg"),
    ("tracks", "average_jaccard"),
    ("tracks", "occlusion_accuracy"),
)


@dataclass
class EvalSettings:
    """How to evaluate: frames per scene, depth alignment, the point budget of the Chamfer metrics, how the
    photos are preprocessed (`mode`, `resolution`: None is the model's training resolution), the fast mode's
    `merge_ratio` (0: exact) and where to run.
    `max_frames` keeps that many evenly spaced frames of each scene (None: all)."""

    max_frames: int | None = None
    depth_alignment: str = "median"
    max_points: int | None = DEFAULT_MAX_POINTS
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    mode: str = "crop"
    resolution: int | None = None
    merge_ratio: float = 0.0
    share_across_ranks: bool = True  # False: under torchrun, this rank runs its own scenes alone

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError("{max_frames} must be at least 1, got {value}", value=self.max_frames)
        if self.resolution is not None and self.resolution < 1:
            raise InputError("{resolution} must be at least 1, got {value}", value=self.resolution)
        check_merge_ratio(self.merge_ratio)

    def inference_options(self, config: VGGTConfig | None = None) -> InferenceOptions:
        """How `predict` runs the model: exact streaming chosen per model, or the fast mode's (`config`: the
        model's, for its frames per chunk; None: VGGT-1B's)."""
        engine = None
        if self.merge_ratio > 0:
            engine = streaming_for(self.device, config or VGGTConfig(), merge_ratio=self.merge_ratio)
        return InferenceOptions(
            self.device, self.dtype, engine=engine, memory_check=False, share_across_ranks=self.share_across_ranks
        )


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


def camera_group(rot_err: np.ndarray, trans_err: np.ndarray) -> dict[str, float]:
    """AUC@t for CAMERA_AUC_THRESHOLDS and RRA/RTA@t for CAMERA_ACCURACY_THRESHOLDS, in percent."""
    metrics = {f"AUC@{t}": auc_from_errors(rot_err, trans_err, t) for t in CAMERA_AUC_THRESHOLDS}
    metrics.update(rra_rta_from_errors(rot_err, trans_err, CAMERA_ACCURACY_THRESHOLDS))
    metrics["num_pairs"] = int(rot_err.size)
    return metrics


@dataclass
class ScenePrediction:
    """The model's outputs on one scene's frames, how each photo was preprocessed for it, and the tracks of the
    ground-truth queries (None without ground-truth tracks or a track head)."""

    predictions: Predictions
    transforms: list[PreprocessTransform]
    tracks: TrackPrediction | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.predictions.input_hw


def predict(
    model: torch.nn.Module, image_paths: Sequence[Path], settings: EvalSettings, tracks: SceneTracks | None = None
) -> ScenePrediction:
    """Preprocess one scene's photos and run the model on them, as `vggt reconstruct` does; with ground-truth
    `tracks` (of these photos) also track their query points."""
    config = model.config
    resolution = settings.resolution or config.default_resolution
    loaded = load_input_images(image_paths, settings.mode, resolution, config.patch_size)
    options = settings.inference_options(config)
    input_hw = tuple(loaded.images.shape[-2:])
    queries = None if tracks is None else queries_on_input_grid(tracks, loaded.transforms, input_hw)
    predictions = run_inference(model, loaded.images, options, query_points=first_frame_queries(queries))
    predicted_tracks = None
    if queries is not None:
        predicted_tracks = predict_tracks(model, loaded.images, loaded.transforms, queries, options, predictions)
    return ScenePrediction(predictions, loaded.transforms, predicted_tracks)


def ground_truth_on_input_grid(
    scene: Scene, frames: np.ndarray, prediction: ScenePrediction
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


def score_scene(scene: Scene, frames: np.ndarray, prediction: ScenePrediction, settings: EvalSettings) -> SceneResult:
    """Every metric group the scene's ground truth allows, for a prediction on frames `frames` of `scene`."""
    result = SceneResult(name=scene.name, num_frames=len(frames), metrics={})
    outputs = prediction.predictions
    if outputs.extrinsics is not None and len(frames) >= 2:
        rot_err, trans_err = relative_pose_errors(outputs.extrinsics.astype(np.float64), scene.extrinsics[frames])
        result.rot_err_deg, result.trans_err_deg = rot_err, trans_err
        result.metrics["camera"] = camera_group(rot_err, trans_err)

    if prediction.tracks is not None:
        scored = track_metrics(prediction.tracks, scene.image_hw[frames])
        if scored is not None:
            result.metrics["tracks"] = scored
    if not scene.has_depth:
        return result
    gt_depth, gt_points, valid = ground_truth_on_input_grid(scene, frames, prediction)
    if not valid.any():
        return result
    if outputs.depth is not None:
        result.metrics["depth"] = depth_metrics(outputs.depth, gt_depth, mask=valid, alignment=settings.depth_alignment)
    if outputs.world_points is not None:
        result.metrics["points"] = pointmap_metrics(
            outputs.world_points, gt_points, mask=valid, max_points=settings.max_points
        )
    if outputs.depth is not None and outputs.extrinsics is not None:
        depth_points = depth_map_to_world_points(
            outputs.depth, outputs.extrinsics.astype(np.float64), outputs.intrinsics.astype(np.float64)
        )
        result.metrics["depth_points"] = pointmap_metrics(
            depth_points, gt_points, mask=valid, max_points=settings.max_points
        )
    return result


def evaluate_scene(model: torch.nn.Module, scene_dir: Path | str, settings: EvalSettings) -> SceneResult:
    """Load one scene folder, predict its (selected) frames and score them."""
    scene = load_scene(scene_dir, load_data=False)
    frames = evenly_spaced_indices(scene.num_frames, settings.max_frames)
    tracks = None
    if scene.tracks is not None and getattr(model, "track_head", None) is not None:
        tracks = scene.tracks.select_frames(frames)
    prediction = predict(model, [scene.image_paths[i] for i in frames], settings, tracks)
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
        "vggt_version": __version__,
        "settings": {
            "max_frames": settings.max_frames,
            "depth_alignment": settings.depth_alignment,
            "max_points": settings.max_points,
            "preprocess_mode": settings.mode,
            "resolution": settings.resolution or model.config.default_resolution,
            "merge_ratio": settings.merge_ratio,
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
        "ground truth's units after a Sim(3) alignment. Track metrics (TAP-Vid: position accuracy delta_avg, "
        "average Jaccard, occlusion accuracy) are percentages on frames scaled to 256 x 256. The **all** row pools "
        "the camera pairs of every scene and averages the other metrics over scenes.",
    ]
    return "\n".join(lines + notes) + "\n"


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities (a metric without data) replaced by None, so that the JSON is strict."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """Write metrics.json (strict JSON: a metric without data is null) and metrics.md into `out_dir` (created if
    needed); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / METRICS_JSON, out_dir / METRICS_MARKDOWN
    with atomic_file(json_path) as staging:
        staging.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    with atomic_file(md_path) as staging:
        staging.write_text(markdown_table(report))
    return json_path, md_path
