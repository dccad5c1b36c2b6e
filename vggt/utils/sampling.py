"""Choosing a few items out of many: frames of a video or a folder, reference frames, evaluation frames."""

from __future__ import annotations

import numpy as np


def evenly_spaced_indices(count: int, max_count: int | None) -> np.ndarray:
    """[min(count, max_count)] int64 indices spread evenly over range(count), first and last included.

    All indices when `max_count` is None or at least `count`; distinct and increasing otherwise.
    """
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    if max_count is None or count <= max_count:
        return np.arange(count, dtype=np.int64)
    return np.round(np.linspace(0, count - 1, max_count)).astype(np.int64)
