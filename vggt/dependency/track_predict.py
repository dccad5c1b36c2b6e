"""The reference's `predict_tracks`: VGGSfM tracks of keypoints from several query frames, for bundle adjustment.

Query frames are frame 0 and the most distinct frames by DINOv2 features; each contributes keypoints that the
VGGSfM tracker follows through all frames. Frames that end up with few visible tracks are queried in turn
(`complete_non_vis`), with every extractor on a last attempt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vggt.dependency.vggsfm_utils import (
    build_vggsfm_tracker,
    calculate_index_mappings,
    extract_keypoints,
    generate_rank_by_dino,
    initialize_feature_extractors,
    predict_tracks_in_chunks,
    switch_tensor_order,
)

# Keep only query points whose confidence exceeds this, when more than MIN_CONFIDENT_QUERIES of them do.
QUERY_CONF_THRESHOLD = 1.2
MIN_CONFIDENT_QUERIES = 512
# `complete_non_vis`: a frame needs this many tracks visible above NON_VIS_THRESHOLD.
MIN_VISIBLE_TRACKS = 500
NON_VIS_THRESHOLD = 0.1
FINAL_ATTEMPT_EXTRACTORS = "sp+sift+aliked"
FINAL_ATTEMPT_KEYPOINTS = 2048


@torch.no_grad()
def predict_tracks(
    images: Tensor,
    conf: np.ndarray | None = None,
    points_3d: np.ndarray | None = None,
    masks: Tensor | None = None,
    max_query_pts: int = 2048,
    query_frame_num: int = 5,
    keypoint_extractor: str = "aliked+sp",
    max_points_num: int = 163840,
    fine_tracking: bool = True,
    complete_non_vis: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Tracks of keypoints through all frames.

    Args:
        images: [S, 3, H, W] in [0, 1], square (H == W).
        conf: optional [S, h, w] depth confidence of a square grid; points_3d: [S, h, w, 3] world points on it.
        masks: unsupported (as in the reference); must be None.
        max_query_pts: keypoints per extractor and query frame.
        query_frame_num: query frames (frame 0 included).
        keypoint_extractor: extractors joined by "+": "aliked", "sp", "sift".
        max_points_num: frames x points tracked at once.
        fine_tracking: refine the tracks on patches.
        complete_non_vis: query frames that see too few tracks, too.

    Returns:
        tracks [S, N, 2] in pixels, visibility [S, N], confidence [N], world points [N, 3] (both None without
        conf / points_3d) and colours [N, 3] uint8 of every track.
    """
    if masks is not None:
        raise NotImplementedError("predict_tracks does not support masks yet (nor does the reference); pass None")
    device = images.device
    tracker = build_vggsfm_tracker().to(device, images.dtype)
    query_frames = generate_rank_by_dino(images, query_frame_num=query_frame_num, device=device)
    query_frames = [0, *[i for i in query_frames if i != 0]]
    extractors = initialize_feature_extractors(max_query_pts, extractor_method=keypoint_extractor, device=device)
    fmaps = tracker.process_images_to_fmaps(images)
    if fine_tracking:
        print("For faster inference, consider disabling fine_tracking")
    context = dict(images=images, conf=conf, points_3d=points_3d, fmaps=fmaps, tracker=tracker)
    context |= dict(max_points_num=max_points_num, fine_tracking=fine_tracking)
    results = []
    for query_index in query_frames:
        print(f"Predicting tracks for query frame {query_index}")
        results.append(_forward_on_query(query_index, extractors, **context))
    if complete_non_vis:
        _augment_non_visible_frames(results, extractors, context)

    tracks, visibility, confidence, points, colors = (list(part) for part in zip(*results))
    return (
        np.concatenate(tracks, axis=1),
        np.concatenate(visibility, axis=1),
        None if confidence[0] is None else np.concatenate(confidence, axis=0),
        None if points[0] is None else np.concatenate(points, axis=0),
        np.concatenate(colors, axis=0),
    )


def _forward_on_query(
    query_index: int,
    extractors: dict[str, Any],
    images: Tensor,
    conf: np.ndarray | None,
    points_3d: np.ndarray | None,
    fmaps: Tensor,
    tracker: Any,
    max_points_num: int,
    fine_tracking: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Tracks [S, N, 2], visibility [S, N], confidence [N], points [N, 3] and colours [N, 3] of one query frame."""
    frames, _, height, width = images.shape
    query_points = extract_keypoints(images[query_index], extractors, round_keypoints=False)
    query_points = query_points[:, torch.randperm(query_points.shape[1], device=images.device)]
    pixels = query_points[0].round().long()
    colors = images[query_index][:, pixels[:, 1], pixels[:, 0]]
    colors = (colors.permute(1, 0).float().cpu().numpy() * 255).astype(np.uint8)

    confidence = points = None
    if conf is not None and points_3d is not None:
        if height != width or conf.shape[-2] != conf.shape[-1] or conf.shape[:3] != points_3d.shape[:3]:
            raise ValueError("predict_tracks needs square images and a square conf grid matching points_3d")
        on_grid = (query_points[0] * (conf.shape[-1] / width)).round().long().cpu().numpy()
        confidence = conf[query_index][on_grid[:, 1], on_grid[:, 0]]
        points = points_3d[query_index][on_grid[:, 1], on_grid[:, 0]]
        confident = confidence > QUERY_CONF_THRESHOLD
        if confident.sum() > MIN_CONFIDENT_QUERIES:
            keep = torch.from_numpy(confident).to(images.device)
            query_points, confidence, points, colors = (
                query_points[:, keep], confidence[confident], points[confident], colors[confident]
            )  # fmt: skip

    order = calculate_index_mappings(query_index, frames, device=images.device)
    images_feed, fmaps_feed = switch_tensor_order([images, fmaps], order, dim=0)
    total = frames * query_points.shape[1]
    chunks = [query_points]
    if total > max_points_num:
        chunks = list(torch.chunk(query_points, -(-total // max_points_num), dim=1))
    tracks, visibility, _ = predict_tracks_in_chunks(
        tracker, images_feed[None], chunks, fmaps_feed[None], fine_tracking=fine_tracking
    )
    tracks, visibility = switch_tensor_order([tracks, visibility], order, dim=1)
    return (
        tracks[0].float().cpu().numpy(),
        visibility[0].float().cpu().numpy(),
        confidence,
        points,
        colors,
    )


def _augment_non_visible_frames(results: list[tuple], extractors: dict[str, Any], context: dict[str, Any]) -> None:
    """Append query results for frames seeing fewer than MIN_VISIBLE_TRACKS tracks, one frame per round; when
    the same frame fails twice, query all remaining ones once more with every extractor and stop."""
    last_query = -1
    while True:
        visibility = np.concatenate([r[1] for r in results], axis=1)
        weak = np.nonzero((visibility > NON_VIS_THRESHOLD).sum(axis=-1) < MIN_VISIBLE_TRACKS)[0].tolist()
        if not weak:
            return
        print("Processing non visible frames:", weak)
        final = weak[0] == last_query
        if final:
            extractors = initialize_feature_extractors(
                FINAL_ATTEMPT_KEYPOINTS, extractor_method=FINAL_ATTEMPT_EXTRACTORS, device=context["images"].device
            )
        last_query = weak[0]
        for query_index in weak if final else weak[:1]:
            results.append(_forward_on_query(query_index, extractors, **context))
        if final:
            return
