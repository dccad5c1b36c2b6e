"""Writing files and folders all or nothing.

`atomic_directory(target)` hands out a hidden staging folder beside `target` and moves it into place when the
block succeeds; `atomic_file(target)` does the same for one file. The staging path is on the same file system, so
the final rename is atomic: readers see the old output or the new one, never half of one. A failure (or Ctrl-C)
removes the staging folder and leaves `target` as it was. Every writer of folders (reconstructions, scene
folders, training checkpoints) and of checkpoint files goes through these two.

Every folder `atomic_directory` writes carries a marker file (`OUTPUT_MARKER`); `overwrite` replaces only a folder
that has it, an earlier output of ours, never a folder of the user's. A writer holds the output's lock
(`vggt.utils.locks`) while it writes, and removes the staging folders that dead processes left anywhere in the
same parent folder.
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
from vggt.utils.locks import output_lock
from vggt.utils.paths import check_output_path, resolved_path

logger = logging.getLogger(__name__)

# Staging names: `.<target>.tmp-<pid>-<random>`; the process id tells which process a leftover belongs to.
STAGING_MARKER = ".tmp-"
RETIRED_MARKER = ".old-"
# The file that says a folder is an output of ours (what `overwrite` may replace).
OUTPUT_MARKER = ".vggt-output"
OUTPUT_MARKER_TEXT = "written by vggt; `--overwrite` replaces only folders holding this file\n"
_LEFTOVER = re.compile(rf"^\.(.+)({re.escape(STAGING_MARKER)}|{re.escape(RETIRED_MARKER)})(\d+)-[0-9a-f]{{8}}$")


def staging_path(target: Path, marker: str = STAGING_MARKER) -> Path:
    """A fresh hidden sibling of `target` named after it and this process."""
    return target.parent / f".{target.name}{marker}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the staging folders that dead processes (killed, or lost power) left beside `target`, whatever
    output they were for (any later run in the same parent folder cleans up).

    A swapped-out previous output (`.old-`) of a dead process is put back where it was when that place is empty
    (the process died between the two renames of `replace_with`). Returns what was removed.
    """
    if not target.parent.is_dir():
        return []
    removed = []
    for entry in sorted(target.parent.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if match is None or process_is_alive(int(match.group(3))):
            continue
        original = target.parent / match.group(1)
        if match.group(2) == RETIRED_MARKER and not original.exists():
            logger.warning("restoring %s from %s, left by an interrupted run", original, entry.name)
            os.replace(entry, original)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.info("removed %d staging folder(s) of interrupted runs in %s", len(removed), target.parent)
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


def check_replaceable(directory: Path, overwrite: bool) -> None:
    """Raise InputError unless `directory` may become a new output: absent, empty, or with `overwrite` an earlier
    output of ours (it holds OUTPUT_MARKER). A refusal says what replacing it would have deleted."""
    if directory.exists() and not directory.is_dir():
        raise InputError("output {path} exists and is not a folder", path=directory)
    if not is_non_empty_dir(directory):
        return
    if not overwrite:
        raise InputError(
            "output folder {path} is not empty; pass {overwrite=True} to replace it, or choose another",
            path=directory,
        )
    if not (directory / OUTPUT_MARKER).is_file():
        entries = sorted(p.name for p in directory.iterdir())
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise InputError(
            "output folder {path} is not an earlier output of vggt (it has no {marker}); {overwrite=True} would "
            "delete what it holds ({entries}): delete it yourself or choose another folder",
            path=directory,
            marker=OUTPUT_MARKER,
            entries=shown,
        )


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
    directory: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike | None] = ()
) -> None:
    """Refuse, before any work, an output folder that cannot be written as a whole: a file; a non-empty folder
    without `overwrite`, or with it one that is not an earlier output of ours; the current folder or one of its
    ancestors; one holding (or being) an input (photos, checkpoint, intrinsics...; None entries are skipped); one
    whose parent is not writable. Stale staging folders of dead runs beside it are removed first."""
    directory = Path(directory)
    check_output_path(directory)
    resolved = resolved_path(directory, "output")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(
            "output folder {path} is the current folder or holds it; replacing it would delete the folder you work "
            "in: choose a new folder for the outputs",
            path=directory,
        )
    for source in inputs:
        if source is None:
            continue
        source = resolved_path(Path(source), "input")
        if source == resolved or resolved in source.parents:
            raise InputError(
                "output folder {path} holds the input {source}; choose another output folder",
                path=directory,
                source=source,
            )
    remove_stale_staging(directory)
    check_replaceable(directory, overwrite)
    check_writable_folder(directory.parent, directory)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder (but for OUTPUT_MARKER); on success it replaces `target`, on any failure it
    is removed. The output's lock is held throughout.

    Raises InputError when `target` is a file, a non-empty folder and not `overwrite`, a non-empty folder that is
    not an earlier output of ours, or locked by another process.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(target):
        remove_stale_staging(target)
        check_replaceable(target, overwrite)
        staging = staging_path(target)
        staging.mkdir()
        try:
            (staging / OUTPUT_MARKER).write_text(OUTPUT_MARKER_TEXT)
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
