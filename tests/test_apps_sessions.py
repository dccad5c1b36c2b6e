"""Session folders of the demo (vggt.apps.sessions): safe upload names, one folder per visitor, deletion."""

from __future__ import annotations

from pathlib import Path

import pytest

from vggt.apps.sessions import SessionStore, safe_file_name


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("photo.JPG", "photo.jpg"),
        ("../../x.jpg", "x.jpg"),
        ("..\\..\\windows\\y.png", "y.png"),
        ("C:x.jpg", "x.jpg"),
        ("/etc/passwd", "passwd"),
        ("..", "upload"),
        (".bashrc", "bashrc"),
        ("a b;rm -rf *.jpg", "a_b_rm_-rf.jpg"),
        ("nul\x00byte.png", "nul_byte.png"),
        ("фото.jpeg", "upload.jpeg"),
        ("x" * 300 + ".png", "x" * 96 + ".png"),
    ],
)
def test_safe_file_name(name, safe):
    assert safe_file_name(name) == safe
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".")


def test_safe_file_name_keeps_names_apart():
    taken = {"a.jpg", "a-2.jpg"}
    assert safe_file_name("dir/a.jpg", taken) == "a-3.jpg"


def test_uploads_stay_in_their_own_session_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "one.jpg").write_bytes(b"1")
    (source / "two.jpg").write_bytes(b"2")
    store = SessionStore(tmp_path / "sessions", ttl_seconds=60)
    first, second = store.open(None, page="page-a"), store.open(None, page="page-b")
    assert first.folder != second.folder and first.folder.parent == second.folder.parent == store.root
    copies = first.take_uploads([source / "one.jpg", source / "two.jpg"], names=["../../x.jpg", "../x.jpg"])
    assert [p.name for p in copies] == ["x.jpg", "x-2.jpg"]
    assert all(p.parent == first.folder / "uploads" for p in copies) and not (tmp_path / "x.jpg").exists()
    assert [p.read_bytes() for p in copies] == [b"1", b"2"]
    assert not (second.folder / "uploads").exists()
    assert store.open(first.id) is first and store.get("unknown") is None

    store.close_page("page-a")  # the visitor closed the page
    assert not first.folder.exists() and store.get(first.id) is None and second.folder.exists()
    store.close_all()
    assert not store.root.exists()


def test_idle_sessions_are_deleted_after_the_time_limit(tmp_path):
    now = [0.0]
    store = SessionStore(tmp_path / "sessions", ttl_seconds=10, clock=lambda: now[0])
    idle, busy = store.open(None), store.open(None)
    render = idle.fresh_dir("scene")
    assert render.is_dir() and render.parent == idle.folder
    assert idle.fresh_dir("scene") != render and not render.exists()  # an older render of the same kind goes
    now[0] = 8.0
    store.get(busy.id)
    now[0] = 12.0
    store.sweep()
    assert not idle.folder.exists() and busy.folder.exists() and len(store) == 1
    assert store.open(idle.id).id != idle.id  # a closed session is not revived: a new one starts


def test_folder_names_come_from_the_server(tmp_path):
    store = SessionStore(tmp_path / "sessions", ttl_seconds=60)
    session = store.open("../../chosen-by-the-browser")
    assert Path(session.folder).parent == store.root and len(session.id) == 32
