"""Writers of outputs: `overwrite` replaces only our own outputs, one writer per output, leftovers of dead runs go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vggt.errors import InputError
from vggt.utils.files import OUTPUT_MARKER, atomic_directory, check_output_folder
from vggt.utils.locks import lock_path, output_lock

HOLD_LOCK = """
import sys, time
from vggt.utils.locks import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def lock_holder(tmp_path):
    """A child process holding the lock of tmp_path/out."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "locked"
    yield child
    child.kill()
    child.wait()


def test_overwrite_replaces_our_output_and_refuses_any_other_folder(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("1")
    assert (out / OUTPUT_MARKER).is_file()
    with atomic_directory(out, overwrite=True) as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.txt"]

    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(InputError, match=r"not an earlier output of vggt.*would delete.*chapter1\.tex"):
        with atomic_directory(thesis, overwrite=True):
            pass
    with pytest.raises(InputError, match="not an earlier output"):
        check_output_folder(thesis, overwrite=True)
    assert (thesis / "chapter1.tex").read_text() == "years of work"


def test_overwrite_refuses_an_output_holding_any_input(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as staging:
        (staging / "model").mkdir()
        (staging / "calib.json").write_text("{}")
    for given in (out / "model", out / "calib.json"):
        with pytest.raises(InputError, match="holds the input"):
            check_output_folder(out, overwrite=True, inputs=[tmp_path / "photos", None, given])
    assert (out / "model").is_dir() and (out / "calib.json").is_file()


def test_a_second_writer_is_refused_naming_the_first(tmp_path, lock_holder):
    with pytest.raises(InputError, match=rf"being written by another vggt run \(process {lock_holder.pid}\)"):
        with atomic_directory(tmp_path / "out"):
            pass
    assert not (tmp_path / "out").exists()


def test_a_killed_writer_leaves_no_lock_that_blocks(tmp_path, lock_holder):
    lock_holder.send_signal(signal.SIGKILL)
    lock_holder.wait()
    assert lock_path(tmp_path / "out").exists()  # the file stays, its lock died with the process
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_locks_nest_within_a_process(tmp_path):
    with output_lock(tmp_path / "out"):
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "x").write_text("x")
        assert lock_path(tmp_path / "out").exists()
    assert not lock_path(tmp_path / "out").exists()


def test_staging_of_dead_runs_for_other_outputs_is_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    leftovers = [tmp_path / f".other.tmp-{dead}-0123abcd", tmp_path / f".third.old-{dead}-0123abcd"]
    kept = [tmp_path / f".other.tmp-{alive}-0123abcd", tmp_path / ".notes.tmp-x", tmp_path / "mine.tmp-1-0123abcd"]
    for folder in leftovers + kept:
        folder.mkdir()
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "x").write_text("x")
    assert (tmp_path / "third").is_dir()  # a retired output of a dead run whose place is empty goes back
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "third", *(p.name for p in kept)])


def test_lock_file_names_the_owner(tmp_path):
    with output_lock(tmp_path / "out") as path:
        assert Path(path).read_text().strip() == str(os.getpid())
