"""Gradio's copies of visitors' files: owned by sessions, shared copies kept while one owner is open, caps."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from vggt.apps.gradio_files import CACHE_PREFIX, GradioFiles, UploadLimit, remove_dead_servers_folders, server_folder


def test_a_copy_goes_with_the_last_session_that_refers_to_it(tmp_path):
    files = GradioFiles(tmp_path / "cache")
    (tmp_path / "cache" / "a").mkdir(parents=True)
    shared, own = tmp_path / "cache" / "a" / "photo.png", tmp_path / "cache" / "a" / "mine.png"
    shared.write_bytes(b"x")
    own.write_bytes(b"y")
    files.claim("one", [shared, own, tmp_path / "elsewhere.png", None])
    files.claim("two", [shared])
    assert files.release("one") == 1 and not own.exists() and shared.exists()
    assert files.release("two") == 1 and not (tmp_path / "cache" / "a").exists()  # and its emptied folder


def test_unclaimed_copies_go_once_older_than_the_session_limit(tmp_path):
    files = GradioFiles(tmp_path)
    (tmp_path / "u").mkdir()
    old, new, claimed = (tmp_path / "u" / n for n in ("old.png", "new.png", "claimed.png"))
    for path in (old, new, claimed):
        path.write_bytes(b"x")
    for path in (old, claimed):
        os.utime(path, (time.time() - 100, time.time() - 100))
    files.claim("s", [claimed])
    assert files.sweep(max_age_seconds=50) == 1
    assert not old.exists() and new.exists() and claimed.exists()


def test_upload_limits_per_request_and_per_server(tmp_path):
    files = GradioFiles(tmp_path)
    (tmp_path / "held.bin").write_bytes(bytes(600))
    limit = UploadLimit(app=None, files=files, request_bytes=500, server_bytes=1000)
    assert limit.refusal({b"content-length": b"300"}) is None
    assert limit.refusal({b"content-length": b"501"})[0] == 413  # one request too large
    assert limit.refusal({b"content-length": b"450"})[0] == 413  # the server would hold more than 1000
    assert limit.refusal({})[0] == 411


def test_folders_of_dead_servers_are_removed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f"{CACHE_PREFIX}{child.pid}-abc"
    dead.mkdir()
    alive = server_folder(CACHE_PREFIX, tmp_path)
    assert remove_dead_servers_folders([tmp_path]) == [dead]
    assert alive.is_dir() and not dead.exists()
