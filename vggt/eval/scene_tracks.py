"""Track metrics of a model on a scene's ground-truth tracks (tracks.npz, vggt.data.tracks), TAP-Vid style.

The query points, given in pixels of the original photos, are mapped onto the model's input grid through each
photo's preprocessing transform; queries that fall outside what the model sees (cropped away) are left out. The
model tracks queries of its first frame, so the queries of frame 0 ride along the scene's main inference pass,
and those of every other query frame q get a pass of their own with frame q moved first (as
`vggt.ba.postprocess.predict_tracks` does) and the frame order restored afterwards. Predicted tracks are mapped
back to the original photos, then both tracks are scaled to TAP-Vid's 256 x 256 frames, where its pixel
thresholds (1 to 16) apply, and scored by `vggt.eval.tracks.tapvid_metrics`: position accuracy over the frames
where the ground truth sees the point, occlusion accuracy and average Jaccard with the track head's visibility
(above 0.5 = visible), every frame counted except each point's own query frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vggt.data.tracks import SceneTracks
from vggt.eval.tracks import tapvid_metrics
from vggt.pipeline.inference import InferenceOptions, Predictions, run_inference
from vggt.utils.load_fn import PreprocessTransform

TAPVID_FRAME_SIZE = 256  # TAP-Vid evaluates on 256 x 256 frames


@dataclass
class TrackQueries:
    """The ground-truth tracks the model is asked for (those whose query lies on its input) and their query
    points on the input grid, `input_points` [N, 2]."""

    ground_truth: SceneTracks
    input_points: np.ndarray

    def of_frame(self, frame: int) -> np.ndarray:
        """Indices of the queries that live in frame `frame`."""
        return np.flatnonzero(self.ground_truth.query_frames == frame)


@dataclass
class TrackPrediction:
    """Predicted tracks [S, N, 2] in pixels of each original photo and visibility [S, N] in [0, 1], for `queries`."""

    queries: TrackQueries
    tracks: np.ndarray
    visibility: np.ndarray


def queries_on_input_grid(
    tracks: SceneTracks, transforms: Sequence[PreprocessTransform], input_hw: tuple[int, int]
) -> TrackQueries | None:
    """The queries of `tracks` that land on the model input of size `input_hw` (None when none does)."""
    input_points = np.zeros_like(tracks.query_points, dtype=np.float64)
    for frame in np.unique(tracks.query_frames):
        which = np.flatnonzero(tracks.query_frames == frame)
        input_points[which] = transforms[frame].original_to_input(tracks.query_points[which].astype(np.float64))
    height, width = input_hw
    x, y = input_points.T
    inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    if not inside.any():
        return None
    kept = np.flatnonzero(inside)
    ground_truth = SceneTracks(
        tracks.query_frames[kept], tracks.query_points[kept], tracks.tracks[:, kept], tracks.visible[:, kept]
    )
    return TrackQueries(ground_truth, input_points[kept])


def first_frame_queries(queries: TrackQueries | None) -> np.ndarray | None:
    """[N0, 2] input-grid query points of frame 0, to ride along the main inference pass (None if there are none)."""
    if queries is None or not queries.of_frame(0).size:
        return None
    return queries.input_points[queries.of_frame(0)].astype(np.float32)


def predict_tracks(
    model: torch.nn.Module,
    images: torch.Tensor,
    transforms: Sequence[PreprocessTransform],
    queries: TrackQueries,
    options: InferenceOptions,
    main_pass: Predictions,
) -> TrackPrediction:
    """Tracks of every query through `images` [S, 3, H, W] (see the module docstring). `main_pass` is the scene's
    inference on `images` in their order, run with `first_frame_queries(queries)`."""
    num_frames = len(images)
    tracks = np.zeros((num_frames, queries.ground_truth.num_points, 2))
    visibility = np.zeros((num_frames, queries.ground_truth.num_points))
    for frame in np.unique(queries.ground_truth.query_frames):
        which = queries.of_frame(int(frame))
        if frame == 0:
            outputs, order = main_pass, np.arange(num_frames)
        else:
            order = np.array([frame] + [i for i in range(num_frames) if i != frame])
            points = queries.input_points[which].astype(np.float32)
            outputs = run_inference(model, images[torch.from_numpy(order)], options, query_points=points)
        # Output frame k is input frame order[k].
        tracks[order[:, None], which[None]] = outputs.tracks
        visibility[order[:, None], which[None]] = outputs.track_vis
    return on_original_photos(queries, tracks, visibility, transforms)


def on_original_photos(
    queries: TrackQueries, input_tracks: np.ndarray, visibility: np.ndarray, transforms: Sequence[PreprocessTransform]
) -> TrackPrediction:
    """A prediction from tracks [S, N, 2] on the model's input grid: mapped to each frame's original photo."""
    tracks = np.stack([transform.input_to_original(input_tracks[frame]) for frame, transform in enumerate(transforms)])
    return TrackPrediction(queries, tracks, visibility)


def to_tapvid_frame(points_xy: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """[S, N, 2] pixels of frames of sizes `image_hw` [S, 2] (height, width) -> pixels of 256 x 256 frames."""
    scale = TAPVID_FRAME_SIZE / np.asarray(image_hw, dtype=np.float64)[:, ::-1]  # (x, y) factors per frame
    return (points_xy + 0.5) * scale[:, None, :] - 0.5


def track_metrics(prediction: TrackPrediction, image_hw: np.ndarray) -> dict[str, float] | None:
    """TAP-Vid metrics of `prediction` on frames of original sizes `image_hw` [S, 2] (None when no point is seen
    outside its query frame)."""
    truth = prediction.queries.ground_truth
    evaluated = truth.visible.copy()
    evaluated[truth.query_frames, np.arange(truth.num_points)] = False
    if not evaluated.any():
        return None
    metrics = tapvid_metrics(
        to_tapvid_frame(prediction.tracks, image_hw),
        to_tapvid_frame(truth.tracks.astype(np.float64), image_hw),
        truth.visible,
        pred_visible=prediction.visibility,
        query_frames=truth.query_frames,
    )
    metrics["num_tracks"] = truth.num_points
    return metrics
