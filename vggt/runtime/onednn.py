"""Float32 linear layers through oneDNN on the CPU, for the streaming engine.

PyTorch runs a float32 `F.linear` on the CPU through MKL's sgemm; oneDNN's kernels, which PyTorch
already uses for convolutions and for bfloat16, are markedly faster on some processors (about 1.7x
on the AMD EPYC this project is measured on) and give the same float32 products up to rounding.
The engine passes `linear` and `linear_rows` to the transformer blocks it runs (the layers' `LinearFn` and
`LinearRowsFn` arguments); inside the engine's `onednn_linear()` they take that route when they can: a plain
`nn.Linear` without hooks, float32 CPU tensors, no autograd, no autocast. Anything else calls the layer as
usual (so wrappers such as LoRA keep their extra terms). Outside the context they are the plain calls.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from vggt.layers.mlp import linear_rows as plain_linear_rows

_ENABLED = contextvars.ContextVar("vggt_onednn_linear", default=False)


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _eligible(layer: nn.Module, x: Tensor) -> bool:
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        return False
    weight, bias = layer.weight, layer.bias
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.layout != torch.strided for t in tensors):
        return False
    if torch.is_grad_enabled() or torch.is_autocast_enabled("cpu"):
        return False
    return x.dim() >= 2 and x.numel() > 0


def linear(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)`, through oneDNN inside `onednn_linear()` where eligible."""
    if _ENABLED.get() and _eligible(layer, x):
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def linear_rows(layer: nn.Linear, x: Tensor, rows: slice) -> Tensor:
    """Output features `rows` of a plain `nn.Linear` applied to x, from those rows of its weight only."""
    weight = layer.weight[rows]
    bias = layer.bias[rows] if layer.bias is not None else None
    if _ENABLED.get() and _eligible(layer, x):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return plain_linear_rows(layer, x, rows)


@contextlib.contextmanager
def onednn_linear(enabled: bool = True) -> Iterator[None]:
    """Let `linear` use oneDNN (float32, CPU, no autograd) while the context is open."""
    token = _ENABLED.set(enabled and onednn_linear_available())
    try:
        yield
    finally:
        _ENABLED.reset(token)
