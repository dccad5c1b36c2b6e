"""Writing files and folders all or nothing.

`atomic_directory(target)` hands out a hidden staging folder beside `target` and moves it into place when the
block succeeds; `atomic_file(target)` does the same for one file. The staging path is on the same file system, so
the final rename is atomic: readers see the old output or the new one, never half of one. A failure (or Ctrl-C)
removes the staging folder and leaves `target` as it was. Every writer of folders (reconstructions, scene
folders, training checkpoints) and of checkpoint files goes through these two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from vggt.errors import InputError

logger = logging.getLogger(__name__)

# Staging names: `.<target>.tmp-<pid>-<random>`; the process id tells which process a leftover belongs to.
STAGING_MARKER = ".tmp-"
RETIRED_MARKER = ".old-"


def staging_path(target: Path, marker: str = STAGING_MARKER) -> Path:
    """A fresh hidden sibling of `target` named after it and this process."""
    return target.parent / f".{target.name}{marker}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the staging folders that dead processes (killed, or lost power) left beside `target`.

    A swapped-out previous output (`.old-`) of a dead process is put back at `target` when `target` is missing
    (the process died between the two renames of `replace_with`). Returns what was removed.
    """
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}({re.escape(STAGING_MARKER)}|{re.escape(RETIRED_MARKER)})(\d+)-")
    removed = []
    for entry in sorted(target.parent.iterdir()):
        match = pattern.match(entry.name)
        if match is None or _process_is_alive(int(match.group(2))):
            continue
        if match.group(1) == RETIRED_MARKER and not target.exists():
            logger.warning("restoring %s from %s, left by an interrupted run", target, entry.name)
            os.replace(entry, target)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.info("removed %d staging folder(s) of interrupted runs beside %s", len(removed), target)
    return removed


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


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: Path, for_output: Path) -> None:
    """Raise InputError unless files can be created in `folder` (or its nearest existing ancestor)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise InputError("output {path}: {parent} is not a folder", path=for_output, parent=existing)
    try:
        fd, probe = tempfile.mkstemp(prefix=".vggt-write-test-", dir=existing)
    except PermissionError:
        raise InputError(
            "output {path}: cannot write into {parent} (permission denied); choose another output folder",
            path=for_output,
            parent=existing,
        ) from None
    except OSError as err:
        raise InputError(
            "output {path}: cannot write into {parent} ({error})", path=for_output, parent=existing, error=err
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_folder(
    directory: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()
) -> None:
    """Refuse, before any work, an output folder that cannot be written as a whole: a file; a non-empty folder
    without `overwrite`; the current folder or one of its ancestors; one holding (or being) an input; one whose
    parent is not writable. Stale staging folders of dead runs beside it are removed first."""
    directory = Path(directory)
    resolved = directory.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(
            "output folder {path} is the current folder or holds it; replacing it would delete the folder you work "
            "in: choose a new folder for the outputs",
            path=directory,
        )
    for source in inputs:
        source = Path(source).resolve()
        if source == resolved or resolved in source.parents:
            raise InputError(
                "output folder {path} holds the input {source}; choose another output folder",
                path=directory,
                source=source,
            )
    remove_stale_staging(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError("output {path} exists and is not a folder", path=directory)
    if is_non_empty_dir(directory) and not overwrite:
        raise InputError(
            "output folder {path} is not empty; pass {overwrite=True} to replace it, or choose another", path=directory
        )
    check_writable_folder(directory.parent, directory)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target`, on any failure it is removed.

    Raises InputError when `target` is a file, or a non-empty folder and not `overwrite`.
    """
    target = Path(target)
    remove_stale_staging(target)
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


def default_file_mode() -> int:
    """The mode a new file gets here: 0o666 minus the process's umask (some writers create files 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path for one file; on success it replaces `target` with the usual file mode, on failure it
    is deleted."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    try:
        yield staging
        os.chmod(staging, default_file_mode())
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
