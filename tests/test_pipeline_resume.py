"""What a windowed run's windows depend on: content, not paths (vggt.pipeline.resume, the WindowStore's manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline_inputs import write_video

from vggt.errors import InputError
from vggt.pipeline.inputs import collect_inputs
from vggt.pipeline.options import ReconstructOptions
from vggt.pipeline.resume import windows_manifest
from vggt.pipeline.windowed import MANIFEST_FILE, WindowStore

OPTIONS = ReconstructOptions(window=4, overlap=1, resume=True)


def _photos(folder: Path, seed: int = 0) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [folder / f"p{i}.png" for i in range(3)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return paths


def _store(work: Path, paths, options=OPTIONS, video=None) -> WindowStore:
    return WindowStore(work, windows_manifest(paths, options, 56, "tiny", video), resume=options.resume)


def test_a_photo_replaced_under_its_name_is_a_change(tmp_path):
    paths = _photos(tmp_path / "photos")
    _store(tmp_path / "work", paths)
    (tmp_path / "work" / "window_00000").mkdir()  # a window of the first run
    _photos(tmp_path / "photos", seed=1)  # same names, other pixels
    with pytest.raises(InputError, match=r"of another run \(the photo p0.png and 2 more changed\)"):
        _store(tmp_path / "work", paths)
    assert (tmp_path / "work" / "window_00000").is_dir()  # refused, not cleared


def test_another_merge_ratio_or_resolution_is_a_change(tmp_path):
    paths = _photos(tmp_path / "photos")
    _store(tmp_path / "work", paths)
    fast = ReconstructOptions(window=4, overlap=1, resume=True, merge_ratio=0.3)
    with pytest.raises(InputError, match=r"merge_ratio \(was 0.0\) changed"):
        _store(tmp_path / "work", paths, fast)
    _store(tmp_path / "work", paths)  # the same run resumes


def test_a_video_resumes_though_its_frames_are_sampled_into_another_folder(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, num_frames=12, fps=6)
    first, second = collect_inputs(video, max_frames=5), collect_inputs(video, max_frames=5)
    try:
        assert first.frames_dir.name != second.frames_dir.name
        _store(tmp_path / "work", first.image_paths, video=first.video)
        _store(tmp_path / "work", second.image_paths, video=second.video)
        other = ReconstructOptions(window=4, overlap=1, resume=True, max_frames=6)
        fewer = collect_inputs(video, max_frames=6)
        with pytest.raises(InputError, match=r"the video \(max_frames\)"):
            _store(tmp_path / "work", fewer.image_paths, other, video=video)
    finally:
        first.cleanup(), second.cleanup()


def test_a_damaged_manifest_is_one_line_and_it_is_written_atomically(tmp_path):
    paths = _photos(tmp_path / "photos")
    _store(tmp_path / "work", paths)
    manifest = tmp_path / "work" / MANIFEST_FILE
    assert json.loads(manifest.read_text())["version"] == 2
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [MANIFEST_FILE]  # no staging left
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(InputError, match="manifest.json cannot be read .*drop resume=True to start over"):
        _store(tmp_path / "work", paths)


def test_a_work_folder_that_is_not_ours_is_never_cleared(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("mine")
    fresh = ReconstructOptions(window=4, overlap=1)
    with pytest.raises(InputError, match="holds files but no windows"):
        _store(work, _photos(tmp_path / "photos"), fresh)
    assert (work / "thesis.tex").read_text() == "mine"


def test_a_windowed_video_run_resumes_from_its_windows(golden_model, tmp_path, caplog):
    import logging

    import vggt

    video = tmp_path / "clip.mp4"
    write_video(video, num_frames=12, fps=6)
    options = dict(model=golden_model, device="cpu", dtype="float32", resolution=56, max_frames=6, window=4, overlap=2)
    first = vggt.reconstruct(video, work_dir=tmp_path / "work", **options)
    with caplog.at_level(logging.INFO, logger="vggt"):
        resumed = vggt.reconstruct(video, work_dir=tmp_path / "work", resume=True, **options)
    assert "resuming: 2 of 2 windows are already on disk" in caplog.text
    np.testing.assert_array_equal(resumed.extrinsics, first.extrinsics)
    np.testing.assert_array_equal(resumed.depth, first.depth)
