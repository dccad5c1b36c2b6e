"""Slices of a range in fixed-size steps: how every chunked loop (heads, tracker, streaming engine) walks an axis."""

from __future__ import annotations

from collections.abc import Iterator


def chunk_slices(length: int, size: int | None) -> Iterator[slice]:
    """Slices covering range(length) in steps of `size` (None: one slice)."""
    step = size or max(length, 1)
    for start in range(0, length, step):
        yield slice(start, min(start + step, length))
