"""One writer at a time per output: `output_lock(target)` holds `.<target>.lock` beside `target`.

The lock is an advisory `flock` on a small file holding the owner's process id (shown to a second run, which is
refused at once rather than left waiting on a run that may take hours). The kernel drops the lock when its
process dies, so a killed run never leaves a lock that blocks the next one; the file itself is deleted on release.
Locks are re-entrant within a process: the command locks its output for the whole run, and the writer it calls
locks the same output again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vggt.errors import InputError

LOCK_SUFFIX = ".lock"
# Locks this process holds: resolved lock path -> (file descriptor, depth of nesting).
_held: dict[Path, list[int]] = {}


def lock_path(target: Path) -> Path:
    """The lock file of `target`: a hidden sibling, so that replacing `target` does not touch it."""
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _owner(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _acquire(path: Path, target: Path) -> int:
    """A descriptor of `path` holding its exclusive lock (InputError when another process holds it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                "output {path} is being written by another vggt run (process {pid}); wait for it to end, or "
                "choose another output",
                path=target,
                pid=_owner(path),
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # not a lock file its previous owner deleted while we opened it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `target` for the block; yields the lock file. Raises InputError when another process
    holds it (the message names that process)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target.parent.resolve() / target.name)
    if path in _held:
        _held[path][1] += 1
    else:
        _held[path] = [_acquire(path, target), 1]
    try:
        yield path
    finally:
        entry = _held[path]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[path]
            path.unlink(missing_ok=True)  # before closing, while still holding it
            os.close(entry[0])
