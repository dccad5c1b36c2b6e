"""Names that come from data (COLMAP models, cameras.json, uploads, manifests) turned into paths safely.

A name read from a file is never joined to a folder raw: `confined_path(folder, name)` refuses a name that is
absolute, climbs out with `..`, holds a NUL or a backslash separator, or resolves (through symbolic links) outside
`folder`. `check_file_name` refuses names that cannot be kept as the user's bytes in every output: names that
are not UTF-8 (Python holds their bytes as surrogate escapes, which JSON, COLMAP and numpy would each store
differently) and names longer than the file system allows.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from vggt.errors import InputError

# The longest file name (one path component, in bytes) Linux, macOS and Windows file systems all accept.
MAX_NAME_BYTES = 255
# What writers add to a name: `depth/<name>.npy`, `.png` previews, `.<name>.tmp-<pid>-<random>` staging.
NAME_ROOM_BYTES = 32
# The longest path Linux accepts, and what an output folder must leave for the files inside it.
MAX_PATH_BYTES = 4096


def confined_path(folder: str | os.PathLike, name: str, what: str = "file name") -> Path:
    """`folder / name` when `name` is a relative path that stays inside `folder` once resolved, else InputError.

    Args:
        folder: the folder the name must stay in (it need not exist yet).
        name: a relative POSIX path read from data (a COLMAP image name, a cameras.json `file_name`...).
        what: how to call the name in the message (e.g. "COLMAP image name").
    """
    folder = Path(folder)
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (
        not isinstance(name, str)
        or not parts
        or PurePosixPath(name).is_absolute()
        or ".." in parts
        or "\\" in name
        or "\0" in name
        or Path(name).is_absolute()
    ):
        raise InputError(
            "{what} {name!r} is not a path inside {folder}: refusing it (names must be relative, without '..')",
            what=what,
            name=name,
            folder=folder,
        )
    path = folder / name
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise InputError(
            "{what} {name!r} leads outside {folder} (through a symbolic link): refusing it",
            what=what,
            name=name,
            folder=folder,
        )
    return path


def check_file_name(path: str | os.PathLike, what: str = "input", room: int = 0) -> None:
    """Raise InputError unless the last component of `path` is valid UTF-8 and at most MAX_NAME_BYTES - `room`
    bytes (`room`: what writers will add to it)."""
    name = Path(path).name
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "{what} {path!r} has a file name that is not UTF-8 ({raw!r}); rename it (e.g. with convmv) so that "
            "every output can keep its name",
            what=what,
            path=str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
            raw=os.fsencode(name),
        ) from None
    if len(encoded) > MAX_NAME_BYTES - room:
        raise InputError(
            "{what} file name {name!r}... is {count} bytes long, more than the {limit} the outputs can be named "
            "after (file systems accept {most}); rename it",
            what=what,
            name=name[:40],
            count=len(encoded),
            limit=MAX_NAME_BYTES - room,
            most=MAX_NAME_BYTES,
        )


def resolved_path(path: Path, what: str) -> Path:
    """`path` resolved; a loop of symbolic links is an InputError naming it (Path.resolve raises RuntimeError)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as error:
        raise InputError("{what} {path} cannot be resolved ({error})", what=what, path=path, error=error) from None


def check_output_path(directory: str | os.PathLike) -> None:
    """Raise InputError unless an output folder's name leaves room for its staging name and its path for the
    files inside it (checked before any work, not when the first file is written)."""
    directory = Path(directory)
    check_file_name(directory, "output", room=NAME_ROOM_BYTES)
    length = len(os.fsencode(resolved_path(directory, "output")))
    if length + 1 + MAX_NAME_BYTES > MAX_PATH_BYTES:
        raise InputError(
            "output {path} is a path of {count} bytes; the files inside it would pass the {limit} bytes a path may "
            "have: choose a shorter one",
            path=directory,
            count=length,
            limit=MAX_PATH_BYTES,
        )
