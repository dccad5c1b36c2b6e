"""Windowed reconstruction of long sequences: which frames each window holds, and the link between two windows.

A sequence of S frames is cut into windows of `window` frames, each sharing `overlap` frames with the one before
(the last window starts earlier so it is full, and may share more). Every window is one forward pass in its own
coordinates (its first camera's frame, at its own scale). `link_from_shared_frames` fits the similarity taking a
window's coordinates into the previous window's from the points both predicted for the shared frames;
`vggt.utils.pose_graph.chain_similarities` chains the links into world-from-window transforms, and
`optimize_pose_graph` adds loop closures. `loop_window` picks the frames of one extra pass that sees both sides of
a loop (by default the ends of a sequence that returns to its start), so that it can be linked to a window on
each side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggt.errors import InputError
from vggt.utils.similarity import DEFAULT_ESTIMATOR, Estimator, SimilarityFit, as_array, fit_similarity

# The robust fit runs on at most this many shared pixels, drawn at random with a fixed seed.
DEFAULT_MAX_POINTS = 50_000
DEFAULT_SEED = 0


def window_ranges(num_frames: int, window: int, overlap: int) -> list[range]:
    """Frame ranges of the windows: starts 0, window - overlap, ..., the last one ending at `num_frames`.

    Args:
        num_frames: S frames in the sequence.
        window: frames per window (one forward pass each).
        overlap: frames each window shares with the previous one, 1 <= overlap < window.

    Returns:
        The windows' `range`s; one window `range(S)` when S <= window.
    """
    if num_frames < 1:
        raise InputError("{num_frames} must be at least 1, got {value}", value=num_frames)
    if window < 2:
        raise InputError("{window} must be at least 2 frames, got {value}", value=window)
    if not 1 <= overlap < window:
        raise InputError(
            "{overlap} must be between 1 and {window} - 1 = {most} frames, got {value}", most=window - 1, value=overlap
        )
    if num_frames <= window:
        return [range(num_frames)]
    stride = window - overlap
    starts = list(range(0, num_frames - window, stride)) + [num_frames - window]
    return [range(start, start + window) for start in starts]


def shared_frames(previous: range, current: range) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the frames both windows hold, inside `previous` and inside `current`: two [K] int arrays."""
    frames = sorted(set(previous) & set(current))
    if not frames:
        raise InputError("the windows {previous} and {current} share no frame", previous=previous, current=current)
    return np.array([previous.index(f) for f in frames]), np.array([current.index(f) for f in frames])


def loop_window(num_frames: int, window: int, revisit: tuple[int, int] | None = None) -> list[int]:
    """Frames of an extra window seeing both sides of a loop: the `window - window // 2` frames ending at frame
    `late` and the `window // 2` frames starting at frame `early`, in that order (so it overlaps a window holding
    `late` in its first frames and one holding `early` in its last).

    Args:
        revisit: (early, late), frame `late` sees again what frame `early` saw; None: (0, S - 1), the sequence
            comes back to its start. The two must be at least `window` frames apart.
    """
    early, late = (0, num_frames - 1) if revisit is None else revisit
    if revisit is None and num_frames <= window:
        raise InputError(
            "a loop window needs {num_frames} > {window}, got {frames} <= {size}", frames=num_frames, size=window
        )
    if not 0 <= early < late < num_frames or late - early < window:
        raise InputError(
            "{loop_closure} names frames {early} and {late}: they must be frames of the sequence (0 to {last}) at "
            "least {window} ({size}) apart",
            early=early,
            late=late,
            last=num_frames - 1,
            size=window,
        )
    late_count, early_count = window - window // 2, window // 2
    return list(range(late - late_count + 1, late + 1)) + list(range(early, early + early_count))


def combined_confidence(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Weight of a point pair whose two points have confidences `first` and `second` (read as inverse variances):
    the inverse of the variance of their difference, `c1 c2 / (c1 + c2)`; 0 where either is 0."""
    total = first + second
    return np.where(total > 0, first * second / np.where(total > 0, total, 1.0), 0.0)


def link_from_shared_frames(
    previous_points: Any,
    current_points: Any,
    previous_confidence: Any | None = None,
    current_confidence: Any | None = None,
    estimator: Estimator = DEFAULT_ESTIMATOR,
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = DEFAULT_SEED,
) -> SimilarityFit:
    """The similarity taking the current window's coordinates into the previous window's.

    Args:
        previous_points: [K, H, W, 3] (any [..., 3]) points of the shared frames in the previous window's
            coordinates, e.g. its depth unprojected with its cameras (numpy or torch).
        current_points: the same pixels' points in the current window's coordinates.
        previous_confidence, current_confidence: optional [K, H, W] confidences (e.g. the depth head's); pixels
            with confidence 0 or non-finite points are left out.
        estimator: "umeyama", "huber" or "cauchy" (see `vggt.utils.similarity.fit_similarity`).
        max_points: fit on at most this many pixels, drawn with `seed` (None: all).

    Returns:
        SimilarityFit whose `similarity` maps current-window points onto previous-window points; its weights and
        residuals cover the pixels used, not all.
    """
    previous, current = as_array(previous_points, "previous_points"), as_array(current_points, "current_points")
    if previous.shape != current.shape or previous.shape[-1:] != (3,):
        raise InputError(
            "{previous_points} {first} and {current_points} {second} must both be [K, H, W, 3] for the same pixels",
            first=list(previous.shape),
            second=list(current.shape),
        )
    confidences = []
    for name, confidence in (("previous_confidence", previous_confidence), ("current_confidence", current_confidence)):
        if confidence is not None:
            confidence = as_array(confidence, name)
            if confidence.shape != previous.shape[:-1]:
                raise InputError(
                    "{" + name + "} must have shape {shape}, got {got}",
                    shape=list(previous.shape[:-1]),
                    got=list(confidence.shape),
                )
            confidences.append(np.where(np.isfinite(confidence), np.maximum(confidence, 0.0), 0.0))
    if not confidences:
        weights = np.ones(previous.shape[:-1])
    else:
        weights = confidences[0] if len(confidences) == 1 else combined_confidence(*confidences)
    valid = np.isfinite(previous).all(-1) & np.isfinite(current).all(-1) & (weights > 0)
    previous, current, weights = previous[valid], current[valid], weights[valid]
    if max_points is not None and len(weights) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(weights), size=max_points, replace=False))
        previous, current, weights = previous[keep], current[keep], weights[keep]
    return fit_similarity(current, previous, weights, estimator=estimator)
