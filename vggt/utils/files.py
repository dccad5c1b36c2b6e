"""Writing files and folders all or nothing.

`atomic_directory(target)` hands out a hidden staging folder beside `target` and moves it into place when the
block succeeds; `atomic_file(target)` does the same for one file. The staging path is on the same file system, so
the final rename is atomic: readers see the old output or the new one, never half of one. A failure (or Ctrl-C)
removes the staging folder and leaves `target` as it was. Every writer of folders (reconstructions, scene
folders, training checkpoints) and of checkpoint files goes through these two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from vggt.errors import InputError

# Staging names: `.<target>.tmp-<pid>-<random>`; the process id tells which process a leftover belongs to.
STAGING_MARKER = ".tmp-"
RETIRED_MARKER = ".old-"


def staging_path(target: Path, marker: str = STAGING_MARKER) -> Path:
    """A fresh hidden sibling of `target` named after it and this process."""
    return target.parent / f".{target.name}{marker}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def replace_with(staging: Path, target: Path) -> None:
    """Put `staging` at `target`; an existing `target` is swapped out and restored if the swap fails."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = staging_path(target, RETIRED_MARKER)
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired, ignore_errors=True)
    else:
        retired.unlink(missing_ok=True)


def is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target`, on any failure it is removed.

    Raises InputError when `target` is a file, or a non-empty folder and not `overwrite`.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError("output {path} exists and is not a folder", path=target)
    if is_non_empty_dir(target) and not overwrite:
        raise InputError(
            "output folder {path} is not empty; pass {overwrite=True} to replace it, or choose another", path=target
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    staging.mkdir()
    try:
        yield staging
        replace_with(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path for one file; on success it replaces `target`, on failure it is deleted."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
