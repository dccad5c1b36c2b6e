"""Two-layer perceptron used by every transformer block."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

# How a block applies one of its linear layers: `linear(layer, x)`. The plain call is the default; an engine
# may pass a faster kernel with the same numbers (`vggt.runtime.onednn.linear`).
LinearFn = Callable[[nn.Module, Tensor], Tensor]
# How `Attention.project_heads` applies some output rows of a linear layer: `linear_rows(layer, x, rows)`.
LinearRowsFn = Callable[[nn.Linear, Tensor, slice], Tensor]


def call_linear(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)`: the plain way to apply a linear layer (see LinearFn)."""
    return layer(x)


def linear_rows(layer: nn.Linear, x: Tensor, rows: slice) -> Tensor:
    """Output features `rows` of a plain `nn.Linear` applied to x [..., in], from those rows of its weight only."""
    return F.linear(x, layer.weight[rows], None if layer.bias is None else layer.bias[rows])


class Mlp(nn.Module):
    """`fc2(act(fc1(x)))`: [..., in_features] -> [..., out_features]."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, linear: LinearFn = call_linear) -> Tensor:
        """[..., in_features] -> [..., out_features]; `linear` applies fc1 and fc2 (LinearFn)."""
        return self.drop(linear(self.fc2, self.drop(self.act(linear(self.fc1, x)))))
