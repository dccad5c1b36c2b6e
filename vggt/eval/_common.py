"""Array plumbing shared by the metric modules: every metric accepts numpy arrays or torch tensors."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def to_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """`x` (numpy array, torch tensor or nested list) as a numpy array of `dtype`."""
    # Only a process that imported torch can hold a tensor; the metrics themselves never import it.
    torch = sys.modules.get("torch")
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
