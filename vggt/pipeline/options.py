"""`ReconstructOptions`: every choice of `vggt.reconstruct`, validated once; importable without torch.

The command line builds the same object from its flags (each flag's destination is a field name), so the
library and `vggt reconstruct` accept and refuse exactly the same things, each in its own vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from vggt.errors import InputError
from vggt.models.config import DEFAULT_CHECKPOINT
from vggt.utils.device import DEVICE_CHOICES, DTYPE_CHOICES

__all__ = ["DEFAULT_CHECKPOINT", "DEVICE_CHOICES", "DTYPE_CHOICES", "ReconstructOptions"]

POINT_SOURCES = ("depth", "pointmap")
MODES = ("crop", "pad")
# Drop the least confident half of the pixels by default (as the reference's demo does).
DEFAULT_CONF_PERCENTILE = 50.0
DEFAULT_MAX_POINTS = 500_000


@dataclass(frozen=True)
class ReconstructOptions:
    """How to reconstruct. See `vggt.reconstruct` for what each field does.

    Attributes:
        checkpoint: Hub id, folder or weights file; None: facebook/VGGT-1B, or random weights if only `preset`.
        preset: architecture preset (`tiny`, `vggt-1b`).
        device, dtype: "auto" or explicit (`cpu`, `cuda`, `cuda:N`, `mps`; `float32`, `bfloat16`, `float16`).
        mode: "crop" or "pad". resolution: model input width (crop) or longer side (pad); None: the model's
            training resolution (`VGGTConfig.default_resolution`).
        points: "depth" or "pointmap". conf_percentile: drop the least confident X % of pixels.
        max_points: at most this many points (seeded random subset); None: no limit.
        chunk_size: frames per dense-head chunk; None: the model's default.
        fps, max_frames: frame sampling of a video; max_frames also thins out images.
        bundle_adjust: refine by bundle adjustment; ba_options: keywords of `vggt.ba.refine_with_ba`.
        memory_check: stop with advice when the estimate exceeds free memory. progress: tqdm bars.
    """

    checkpoint: str | None = None
    preset: str | None = None
    device: Any = "auto"
    dtype: Any = "auto"
    mode: str = "crop"
    resolution: int | None = None
    points: str = "depth"
    conf_percentile: float = DEFAULT_CONF_PERCENTILE
    max_points: int | None = DEFAULT_MAX_POINTS
    chunk_size: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    bundle_adjust: bool = False
    ba_options: Mapping[str, Any] = field(default_factory=dict)
    memory_check: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if self.points not in POINT_SOURCES:
            raise InputError(
                "unknown {points} source {value!r}; choose one of {choices}",
                value=self.points,
                choices=", ".join(POINT_SOURCES),
            )
        if self.mode not in MODES:
            raise InputError(
                "unknown {mode} {value!r}; choose one of {choices}", value=self.mode, choices=", ".join(MODES)
            )
        if not 0 <= self.conf_percentile < 100:
            raise InputError("{conf_percentile} must be in [0, 100), got {value}", value=self.conf_percentile)
        for name in ("max_points", "chunk_size", "max_frames", "resolution"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError("{" + name + "} must be at least 1, got {value}", value=value)
        if self.fps is not None and not self.fps > 0:
            raise InputError("{fps} must be positive, got {value}", value=self.fps)
        if self.ba_options is None:
            object.__setattr__(self, "ba_options", {})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
