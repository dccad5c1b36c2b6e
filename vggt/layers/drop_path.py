"""Stochastic depth (DropPath): whole samples of a residual branch dropped during training."""

from __future__ import annotations

from torch import Tensor, nn


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Zero whole samples of a residual branch x [B, ...] with probability `drop_prob` (training only), scaling the
    kept ones by 1 / (1 - drop_prob)."""
    if not drop_prob or not training:
        return x
    keep = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """`drop_path` as a module; `drop_prob` None or 0 keeps every sample."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob or 0.0, self.training)
