"""SwiGLU feed-forward layers (DINOv2's `ffn_layer="swiglu"` / `"swiglufused"`)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

# DINOv2's fused SwiGLU sizing: 2/3 of the nominal hidden width, rounded up to a multiple of this.
SWIGLU_HIDDEN_MULTIPLE = 8


class SwiGLUFFN(nn.Module):
    """`w3(silu(a) * b)` with `(a, b) = w12(x)`: [..., in_features] -> [..., out_features].

    `act_layer` and `drop` are accepted for the reference's signature; SwiGLU has neither.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class SwiGLUFFNFused(SwiGLUFFN):
    """`SwiGLUFFN` whose hidden width is 2/3 of the given one, rounded up to a multiple of 8 (DINOv2's sizing)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        hidden = int((hidden_features or in_features) * 2 / 3)
        hidden = -(-hidden // SWIGLU_HIDDEN_MULTIPLE) * SWIGLU_HIDDEN_MULTIPLE
        super().__init__(in_features, hidden, out_features, act_layer, drop, bias)
