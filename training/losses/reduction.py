"""How loss terms are weighted over refinement iterations and averaged over samples."""

from __future__ import annotations

from torch import Tensor


def iteration_weights(num_iterations: int, gamma: float) -> list[float]:
    """gamma^(n-1-i) for i = 0..n-1: the last iteration weighs 1."""
    return [gamma ** (num_iterations - 1 - i) for i in range(num_iterations)]


def per_sample_mean(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean over samples of `sums / counts` [B], skipping samples with nothing to count.

    Averaging per sample (rather than over all pixels of the batch) makes the loss of a global batch
    the same however it is split over processes: every scene weighs the same.
    """
    has_any = counts > 0
    return (sums[has_any] / counts[has_any]).mean()
