"""Optional dependencies, imported when first needed, each with one line on how to install it.

pycolmap installs glog's failure signal handler when it is imported, which replaces Python's SIGTERM handler
(and prints a native stack dump on SIGTERM); `import_pycolmap` puts the Python handler back, so that SIGTERM
still ends a command cleanly (see `vggt.utils.commands`).
"""

from __future__ import annotations

import os
import signal
import threading
from types import ModuleType

from vggt.errors import DependencyError

EXPORT_EXTRA = "pip install 'vggt[export]'"
# glog severity below which pycolmap's C++ log lines are dropped (0 info, 1 warning, 2 error); the commands set
# it from -q / -v before pycolmap is imported.
GLOG_LEVEL_VARIABLE = "GLOG_minloglevel"


def import_pycolmap() -> ModuleType:
    """pycolmap, with this process's Python SIGTERM handler kept (see the module docstring)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        import pycolmap
    except ImportError as err:
        raise DependencyError("this needs pycolmap: {hint} ({error})", hint=EXPORT_EXTRA, error=err) from None
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)
    level = os.environ.get(GLOG_LEVEL_VARIABLE)
    if level is not None and level.isdigit():
        pycolmap.logging.minloglevel = int(level)
    return pycolmap


def import_trimesh() -> ModuleType:
    try:
        import trimesh
    except ImportError as err:
        raise DependencyError("this needs trimesh: {hint} ({error})", hint=EXPORT_EXTRA, error=err) from None
    return trimesh


def import_cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as err:
        raise DependencyError("this needs OpenCV: {hint} ({error})", hint=EXPORT_EXTRA, error=err) from None
    return cv2
