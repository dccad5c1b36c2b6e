"""Array plumbing shared by the metric modules: every metric accepts numpy arrays or torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is a dependency of the package, but the metrics themselves only need numpy
    import torch
except ImportError:  # pragma: no cover
    torch = None


def to_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """`x` (numpy array, torch tensor or nested list) as a numpy array of `dtype`."""
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        x = x.numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array or tensor, got {type(x).__name__}: {err}") from None


def to_percent(fraction: float) -> float:
    """A fraction in [0, 1] as a percentage, the unit of the paper tables."""
    return 100.0 * float(fraction)
