"""Each visitor's own working folder: uploads copied in under safe names, renders and downloads.

A session is created on a visitor's first action and named by a random id the server chooses (never by anything
the browser sends). Its folder is deleted when the page is closed, when the session has been idle for the time
limit, or when the server stops. Uploaded names become plain file names inside the folder (`safe_file_name`), so
no name reaches a path outside it.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from vggt.errors import InputError

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
# Characters kept in uploaded file names; every other run of characters becomes one underscore.
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 100
FALLBACK_STEM = "upload"
# How often idle sessions are looked for, as a fraction of the time limit.
SWEEP_FRACTION = 0.1


def safe_file_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A plain file name for an uploaded `name`, not in `taken`.

    Only the last component of the name counts (for `/` and `\\` separators alike), characters other than
    letters, digits, `.`, `_` and `-` become `_`, leading dots and dashes go, the length is capped at
    MAX_NAME_LENGTH with the suffix kept, and a name already taken gets `-2`, `-3`, ... before its suffix.
    """
    last = PureWindowsPath(PurePosixPath(str(name)).name).name
    stem, dot, suffix = last.rpartition(".")
    if not dot or not stem.strip("."):  # no suffix, or a dot file such as `.bashrc`
        stem, suffix = last, ""
    suffix = UNSAFE_CHARACTERS.sub("", suffix).lower()
    suffix = f".{suffix}" if suffix else ""
    stem = UNSAFE_CHARACTERS.sub("_", stem).strip("._-") or FALLBACK_STEM
    stem = stem[: MAX_NAME_LENGTH - len(suffix)]
    candidate, number = f"{stem}{suffix}", 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    return candidate


@dataclass
class Session:
    """One visitor's folder and what the server keeps for them (the cached reconstruction, the latest renders)."""

    id: str
    folder: Path
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    reconstruction: Any = None  # the model's result, kept so that views re-render without running it again
    shown: Any = None  # the reconstruction on screen (the cloud of the current view)
    show_cameras: bool = True
    renders: int = 0

    def take_uploads(self, paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[Path]:
        """Copy uploaded files into `uploads/` (emptied first) under safe names (`names`: as uploaded, default the
        files' own names); returns the copies, in order."""
        target = self.folder / UPLOADS_DIR
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        copies, taken = [], set()
        for path, name in zip(paths, names or [Path(p).name for p in paths], strict=True):
            safe = safe_file_name(name, taken)
            taken.add(safe)
            copy = target / safe
            if copy.resolve().parent != target.resolve():  # cannot happen with a safe name; refuse rather than trust
                raise InputError("upload name {name!r} is not a plain file name", name=name)
            shutil.copyfile(path, copy)
            copies.append(copy)
        return copies

    def fresh_dir(self, kind: str) -> Path:
        """A new empty folder `<kind>-<n>` for one render; older folders of the same kind are deleted."""
        with self.lock:
            self.renders += 1
            for old in self.folder.glob(f"{kind}-*"):
                shutil.rmtree(old, ignore_errors=True)
            folder = self.folder / f"{kind}-{self.renders}"
            folder.mkdir(parents=True)
            return folder


class SessionStore:
    """The sessions of one server, each in its own folder under `root`, closed after `ttl_seconds` idle."""

    def __init__(self, root: Path, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._pages: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Called with the id of each closed session, and after each sweep (the demo deletes Gradio's copies).
        self.on_close: Callable[[str], Any] | None = None
        self.on_sweep: Callable[[], Any] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, session_id: str | None, page: str | None = None) -> Session:
        """The session `session_id`, marked as used now; a new one when it is None, closed or unknown.

        `page` names the browser page the session belongs to (Gradio's session hash), so that `close_page` can
        close it when that page goes away.
        """
        self.sweep()
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is None:
                new_id = uuid.uuid4().hex
                session = Session(id=new_id, folder=self.root / new_id)
                session.folder.mkdir()
                self._sessions[new_id] = session
            if page:
                self._pages[page] = session.id
            session.last_used = self._clock()
            return session

    def get(self, session_id: str | None) -> Session | None:
        """The open session `session_id`, marked as used now, or None."""
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is not None:
                session.last_used = self._clock()
            return session

    def close_page(self, page: str | None) -> None:
        """Close the session of a browser page that was closed."""
        with self._lock:
            session_id = self._pages.pop(page or "", None)
        self.close(session_id)

    def close(self, session_id: str | None) -> None:
        """Forget a session and delete its folder (nothing for an unknown id)."""
        with self._lock:
            session = self._sessions.pop(session_id or "", None)
            for page in [p for p, s in self._pages.items() if s == session_id]:
                del self._pages[page]
        if session is not None:
            with session.lock:
                session.reconstruction = session.shown = None
                shutil.rmtree(session.folder, ignore_errors=True)
            if self.on_close is not None:
                self.on_close(session.id)

    def sweep(self) -> None:
        """Close the sessions idle for longer than the time limit."""
        now = self._clock()
        with self._lock:
            idle = [s.id for s in self._sessions.values() if now - s.last_used > self.ttl_seconds]
        for session_id in idle:
            logger.info("session %s idle for over %.0f s: deleted", session_id[:8], self.ttl_seconds)
            self.close(session_id)
        if self.on_sweep is not None:
            self.on_sweep()

    def start_sweeping(self) -> threading.Thread:
        """A daemon thread that sweeps every SWEEP_FRACTION of the time limit until `close_all`."""

        def loop() -> None:
            while not self._stop.wait(max(self.ttl_seconds * SWEEP_FRACTION, 1.0)):
                self.sweep()

        thread = threading.Thread(target=loop, name="vggt-demo-sessions", daemon=True)
        thread.start()
        return thread

    def close_all(self) -> None:
        """Close every session and delete `root`."""
        self._stop.set()
        for session_id in list(self._sessions):
            self.close(session_id)
        shutil.rmtree(self.root, ignore_errors=True)
