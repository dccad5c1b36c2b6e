"""Progress of a streaming forward pass, for progress bars: steps counted where the work happens.

The pass announces how many steps it will take (`begin`) and counts them (`advance`): one per frame chunk of the
patch encoder, one per frame-wise and per global block, one for the camera head, one per frame chunk of the
per-frame heads and one for the tracker. Whoever wants to show it sets a sink, an object with a writable `total`
and an `update(n)` method (a tqdm bar is one), for the duration of a `with reporting_to(sink):` block; without
one, nothing is counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_sink: ContextVar[Any | None] = ContextVar("vggt_progress_sink", default=None)


@contextlib.contextmanager
def reporting_to(sink: Any) -> Iterator[None]:
    """While inside, streaming passes report their steps to `sink` (`sink.total = n`, `sink.update(k)`)."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def begin(total: int) -> None:
    """The pass about to run takes `total` more steps."""
    sink = _sink.get()
    if sink is not None:
        sink.total = (sink.total or 0) + total
        if hasattr(sink, "refresh"):
            sink.refresh()


def advance(steps: int = 1) -> None:
    sink = _sink.get()
    if sink is not None:
        sink.update(steps)
