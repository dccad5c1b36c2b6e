"""How `VGGT.forward` finds the engine that runs it when its caller names none.

The models never import the runtime that runs them (the `seam` contract in `.importlinter`). The runtime
offers its default instead as the `default` entry point of the `vggt.engines` group in the package metadata
(setup.cfg): a function `(model, images) -> ForwardEngine | None`. `vggt.runtime.engine.default_engine`
streams inference (no autograd, eval mode) and leaves everything else to the reference forward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from vggt.models.vggt import VGGT

ENGINE_ENTRY_POINTS = "vggt.engines"
DEFAULT_ENGINE = "auto"  # the value of `VGGT.forward(engine=...)` that asks for the registered default


class ForwardEngine(Protocol):
    """Something that computes `VGGT.forward`'s outputs its own way, e.g. `vggt.runtime.StreamingEngine`."""

    def run(self, model: VGGT, images: Tensor, query_points: Tensor | None, heads: tuple[str, ...]) -> dict[str, Any]:
        """The outputs of `model.forward(images, query_points, heads=heads)` (inputs already checked)."""
        ...


EngineChooser = Callable[["VGGT", Tensor], "ForwardEngine | None"]


@functools.cache
def registered_default_engine() -> EngineChooser | None:
    """The installed `vggt.engines` `default` entry point, loaded once; None without one (a source tree
    that was never installed), in which case `model(images)` is the reference forward pass."""
    for entry in entry_points(group=ENGINE_ENTRY_POINTS, name="default"):
        return entry.load()
    return None


def resolve_engine(engine: ForwardEngine | str | None, model: VGGT, images: Tensor) -> ForwardEngine | None:
    """The engine to run `model` on images [B, S, 3, H, W] with: `engine` itself, or for "auto" the registered
    default's choice; None means the reference forward pass."""
    if isinstance(engine, str):
        if engine != DEFAULT_ENGINE:
            raise ValueError(f"engine must be an engine object, None (the reference pass) or 'auto', got {engine!r}")
        choose = registered_default_engine()
        return None if choose is None else choose(model, images)
    return engine
