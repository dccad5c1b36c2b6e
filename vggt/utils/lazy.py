"""Package attributes imported on first use, so that `import vggt` and `vggt --help` do not import torch.

Each lazy package also imports the same names under `if TYPE_CHECKING:`, so that IDEs, type checkers and
"go to definition" see where every name lives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, origins: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: attribute `name` comes from module `origins[name]`."""

    def __getattr__(name: str) -> Any:
        if name in origins:
            return getattr(importlib.import_module(origins[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(origins)

    return __getattr__, __dir__
