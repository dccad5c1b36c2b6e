"""What the windows of a windowed run depend on, so that `resume` reuses only windows of the same run.

The manifest is keyed on content, not on paths: each photo's name and hash (a photo replaced under the same name
is a change), or for a video its hash and the sampling (`fps`, `max_frames`) rather than the temporary folder its
frames were sampled into; the checkpoint's size and modification time when it is a local file or folder; the
known intrinsics' hash; and every option that changes the numbers (mode, resolution, windows, loop, dtype, fast
mode). `manifest_changes` names what differs between two manifests, for a refusal in one line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 2
HASH_CHUNK_BYTES = 1 << 20
# Manifest keys as they are named in messages (the others by their own name).
KEY_NAMES = {"inputs": "input files", "checkpoint": "checkpoint", "intrinsics": "intrinsics file"}


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) of a file's bytes, as hex."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _files(path: Path) -> list[tuple[str, Path]]:
    """(name, file) of a file, or of every file under a folder (named relative to it), in order."""
    if not path.is_dir():
        return [(path.name, path)]
    return [(str(p.relative_to(path)), p) for p in sorted(path.rglob("*")) if p.is_file()]


def _stat_fingerprint(path: Path) -> list[Any]:
    """Sizes and modification times of a file or folder's files (cheap for checkpoints of gigabytes)."""
    return [[name, file.stat().st_size, file.stat().st_mtime_ns] for name, file in _files(path)]


def _content_fingerprint(path: Path) -> list[Any]:
    """Hashes of a file or folder's files (small files: known intrinsics)."""
    return [[name, file_digest(file)] for name, file in _files(path)]


def inputs_fingerprint(
    paths: Sequence[Path], video: Path | None, fps: float | None, max_frames: int | None
) -> dict[str, Any]:
    """The photos by name and content, or the video by content and how its frames were sampled."""
    if video is not None:
        sampling = {"fps": fps, "max_frames": max_frames, "frames": len(paths)}
        return {"video": Path(video).name, "hash": file_digest(video), **sampling}
    return {"images": [[Path(p).name, file_digest(p)] for p in paths]}


def windows_manifest(
    paths: Sequence[Path], opts: Any, resolution: int, model_name: str, video: Path | None = None
) -> dict[str, Any]:
    """What a window store's content depends on (`opts`: ReconstructOptions); a resumed run must have the same."""
    checkpoint = Path(opts.checkpoint) if opts.checkpoint is not None else None
    intrinsics = Path(opts.intrinsics) if opts.intrinsics is not None else None
    return {
        "version": MANIFEST_VERSION,
        "inputs": inputs_fingerprint(paths, video, opts.fps, opts.max_frames),
        "model": model_name,
        "checkpoint": _stat_fingerprint(checkpoint) if checkpoint is not None and checkpoint.exists() else None,
        "mode": opts.mode,
        "resolution": resolution,
        "window": opts.window,
        "overlap": opts.overlap,
        "loop_closure": opts.loop_closure if isinstance(opts.loop_closure, bool) else list(opts.loop_closure),
        "dtype": str(opts.dtype),
        "merge_ratio": opts.merge_ratio,
        "intrinsics": _content_fingerprint(intrinsics) if intrinsics is not None and intrinsics.exists() else None,
    }


def _input_change(saved: Any, current: dict[str, Any]) -> str:
    """Which input differs: the first photo whose content changed, or the video or its sampling."""
    if not isinstance(saved, dict) or ("video" in saved) != ("video" in current):
        return "the inputs (photos instead of a video, or the reverse)"
    if "video" in current:
        changed = [key for key in ("video", "hash", "fps", "max_frames") if saved.get(key) != current[key]]
        return f"the video ({', '.join('content' if k == 'hash' else k for k in changed) or 'frames'})"
    before, now = dict(map(tuple, saved.get("images", []))), dict(map(tuple, current["images"]))
    if list(before) != list(now):
        return f"the photos ({len(now)} now, {len(before)} then, or other names)"
    changed = [name for name in now if before[name] != now[name]]
    return f"the photo {changed[0]}" + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")


def manifest_changes(saved: Any, current: dict[str, Any]) -> list[str]:
    """What differs between the manifest of the windows on disk and the current run's, in words (empty: none)."""
    if not isinstance(saved, dict) or saved.get("version") != current["version"]:
        return ["the format of the windows (written by another vggt version)"]
    changes = []
    for key, value in current.items():
        if saved.get(key) == value:
            continue
        if key == "inputs":
            changes.append(_input_change(saved.get(key), value))
        elif key in KEY_NAMES:
            changes.append(KEY_NAMES[key])
        else:
            changes.append(f"{key} (was {saved.get(key)!r})")
    return changes
