"""What the apps verify before a model loads: their optional dependencies, the address to listen on, and the
example scenes. Each problem is a `VGGTError` with a one-line message (rendered in flag names by the command)."""

from __future__ import annotations

import errno
import importlib.util
import logging
import socket
from pathlib import Path

from vggt.errors import DependencyError, InputError
from vggt.utils.images import list_image_files, natural_sort_key

logger = logging.getLogger(__name__)

# The extra that installs the apps' dependencies (setup.cfg).
APPS_EXTRA = "demo"
ANY_FREE_PORT = 0
MAX_PORT = 65535


def require_modules(command: str, *modules: str) -> None:
    """DependencyError naming what to install unless every one of `modules` can be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise DependencyError(
            "{command} needs {modules}: pip install 'vggt[{extra}]'",
            command=command,
            modules=", ".join(missing),
            extra=APPS_EXTRA,
        )


def check_listen_address(host: str, port: int) -> int:
    """The port to listen on at `host` (a free one for port 0); InputError when it is invalid or taken."""
    if not 0 <= port <= MAX_PORT:
        raise InputError("{port} must be in 0..{top} (0: any free port), got {value}", top=MAX_PORT, value=port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InputError(
            "{host} {value!r} is not an address of this machine ({error})", value=host, error=error
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise InputError(
                    "{port} {value} is already in use on {address}; pass another {port} (0: any free port)",
                    value=port,
                    address=host,
                ) from None
            raise InputError(
                "cannot listen on {address}:{value} ({error}); check {host} and {port}",
                address=host,
                value=port,
                error=error.strerror,
            ) from None
        return int(probe.getsockname()[1])


def example_scenes(folder: Path) -> dict[str, list[Path]]:
    """Example name -> its image files: each subfolder of `folder` holding images (or an images/ subfolder that
    does). InputError when `folder` is not a folder or has no such subfolder."""
    if not folder.is_dir():
        raise InputError("{examples} {path} is not a folder", path=folder)
    scenes = {}
    for sub in sorted((p for p in folder.iterdir() if p.is_dir()), key=natural_sort_key):
        images = _images_in(sub) or _images_in(sub / "images")
        if images:
            scenes[sub.name] = images
        else:
            logger.warning("example %s holds no images; left out", sub)
    if not scenes:
        raise InputError(
            "{examples} {path} has no subfolder with images: each example is a subfolder of photos", path=folder
        )
    return scenes


def _images_in(folder: Path) -> list[Path]:
    try:
        return list_image_files(folder)
    except ValueError:  # not a folder, or no images in it
        return []
