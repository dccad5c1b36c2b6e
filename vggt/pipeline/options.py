"""Choices and defaults of `vggt.reconstruct`, importable without torch (the command line's help reads them)."""

from __future__ import annotations

DEFAULT_CHECKPOINT = "facebook/VGGT-1B"
POINT_SOURCES = ("depth", "pointmap")
MODES = ("crop", "pad")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# Drop the least confident half of the pixels by default (as the reference's demo does).
DEFAULT_CONF_PERCENTILE = 50.0
DEFAULT_MAX_POINTS = 500_000
