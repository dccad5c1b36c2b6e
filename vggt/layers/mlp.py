"""Two-layer perceptron used by every transformer block."""

from __future__ import annotations

from torch import Tensor, nn

from vggt.layers.onednn import linear


class Mlp(nn.Module):
    """`fc2(act(fc1(x)))`: [..., in_features] -> [..., out_features]."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(linear(self.fc2, self.drop(self.act(linear(self.fc1, x)))))
