"""Gradio's copies of visitors' files: kept in a folder of this server only, deleted with their session.

Gradio copies every upload, and every file a handler returns, into its cache folder (`GRADIO_TEMP_DIR`) and serves
it at `/gradio_api/file=<path>`. Left alone, those copies outlive the session (and Gradio's own timed clean-up
fails under concurrent use), so the demo takes them over:

- the cache is a folder of this server (`vggt-gradio-<pid>-<random>`, `server_cache_folder`), deleted when the
  server stops; folders of servers that died (SIGKILL, power loss) are deleted by the next one to start;
- `GradioFiles` records which session each copy belongs to (the uploads a handler receives, the files it returns,
  moved into the cache by `GradioFiles.hand_out`) and deletes a copy when no open session refers to it; copies
  nobody claimed (an upload never submitted, a rendered frame) are deleted once older than the session limit;
- `UploadLimit` refuses an upload request larger than the limit per request, or one that would take the cache past
  the limit per server, before Gradio reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vggt.utils.files import process_is_alive

CACHE_PREFIX = "vggt-gradio-"
STORE_PREFIX = "vggt-demo-"
_SERVER_FOLDER = re.compile(rf"^({re.escape(CACHE_PREFIX)}|{re.escape(STORE_PREFIX)})(\d+)-")
UPLOAD_PATH_SUFFIX = "/upload"


def server_folder(prefix: str, parent: str | os.PathLike | None = None) -> Path:
    """A new folder `<prefix><pid>-<random>` in `parent` (default: the temporary folder)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def remove_dead_servers_folders(parents: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the cache and session folders that servers which are no longer running left in `parents`."""
    removed = []
    for parent in {Path(p) for p in parents}:
        if not parent.is_dir():
            continue
        for entry in parent.iterdir():
            match = _SERVER_FOLDER.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not process_is_alive(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def gradio_temp_parent() -> Path:
    """Where Gradio would keep its cache: `GRADIO_TEMP_DIR`, else `<temporary folder>/gradio`."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


class GradioFiles:
    """The files of Gradio's cache folder `root` that belong to each session (a file may be shared, e.g. the same
    photo uploaded twice: it goes with the last session that refers to it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._owners: dict[Path, set[str]] = {}
        self._lock = threading.Lock()

    def _inside(self, path: str | os.PathLike) -> Path | None:
        path = Path(path).resolve()
        return path if path.is_relative_to(self.root.resolve()) and path != self.root.resolve() else None

    def claim(self, session_id: str, paths: Iterable[str | os.PathLike | None]) -> None:
        """Record that the cache files among `paths` belong to `session_id` (paths elsewhere are ignored)."""
        with self._lock:
            for path in paths:
                inside = self._inside(path) if path else None
                if inside is not None:
                    self._owners.setdefault(inside, set()).add(session_id)

    def hand_out(self, session_id: str, path: str | os.PathLike) -> str:
        """A copy of `path` in the cache, recorded as the session's: return it from a handler instead of `path`
        (Gradio then serves it as it is instead of copying it where nobody would delete it)."""
        from gradio.processing_utils import save_file_to_cache

        copy = save_file_to_cache(str(path), cache_dir=str(self.root))
        self.claim(session_id, [copy])
        return copy

    def release(self, session_id: str) -> int:
        """Delete the files no session but `session_id` (now closed) refers to; returns how many."""
        with self._lock:
            orphans = []
            for path, owners in list(self._owners.items()):
                owners.discard(session_id)
                if not owners:
                    del self._owners[path]
                    orphans.append(path)
        for path in orphans:
            _delete_with_empty_parent(path, self.root)
        return len(orphans)

    def sweep(self, max_age_seconds: float, now: float | None = None) -> int:
        """Delete the cache files no session claims that are older than `max_age_seconds`; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            claimed = set(self._owners)
        removed = 0
        for path in sorted(self.root.rglob("*"), reverse=True) if self.root.is_dir() else []:
            try:
                if path.is_file() and path.resolve() not in claimed and now - path.stat().st_mtime > max_age_seconds:
                    _delete_with_empty_parent(path, self.root)
                    removed += 1
            except FileNotFoundError:  # deleted meanwhile
                continue
        return removed

    def size(self) -> int:
        """Bytes the cache holds."""
        total = 0
        for path in self.root.rglob("*") if self.root.is_dir() else []:
            try:
                total += path.stat().st_size if path.is_file() else 0
            except FileNotFoundError:
                continue
        return total


def _delete_with_empty_parent(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    parent = path.parent
    if parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


class UploadLimit:
    """ASGI middleware: an upload request (a POST to `.../upload`) must say its size (Content-Length), be at most
    `request_bytes`, and fit with what `files` holds within `server_bytes`; else 413 (or 411), before Gradio reads
    a byte of it."""

    def __init__(self, app: Any, files: GradioFiles, request_bytes: int, server_bytes: int) -> None:
        self.app = app
        self.files = files
        self.request_bytes = request_bytes
        self.server_bytes = server_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST" and scope["path"].endswith(UPLOAD_PATH_SUFFIX):
            refusal = self.refusal(dict(scope.get("headers") or []))
            if refusal is not None:
                status, message = refusal
                body = json.dumps({"detail": message}).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """(HTTP status, message) for an upload request with these headers, or None to let it through."""
        try:
            length = int(headers.get(b"content-length", b""))
        except ValueError:
            return 411, "uploads must state their size (Content-Length)"
        if length > self.request_bytes:
            return 413, f"upload of {length >> 20} MB is over this server's limit of {self.request_bytes >> 20} MB"
        if self.files.size() + length > self.server_bytes:
            return 413, "this server holds as many uploads as it may; try again later"
        return None
