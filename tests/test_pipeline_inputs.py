"""Input collection (folders, image lists, videos) of vggt.pipeline.inputs and vggt.pipeline.video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt.pipeline import InputError, collect_inputs
from vggt.pipeline.video import sample_video_frames, select_frame_indices

cv2 = pytest.importorskip("cv2")


def test_collect_inputs_folder_rules(tmp_path):
    folder = tmp_path / "scene"
    (folder / "images").mkdir(parents=True)
    for name in ("img10.png", "img2.png", "img1.png"):
        Image.new("RGB", (8, 8)).save(folder / "images" / name)
    (folder / "images" / "readme.md").write_text("x")
    collected = collect_inputs(folder)  # falls back to the images/ subfolder
    assert [p.name for p in collected.image_paths] == ["img1.png", "img2.png", "img10.png"]
    assert [p.name for p in collected.skipped] == ["readme.md"]
    assert [p.name for p in collect_inputs(folder, max_frames=2).image_paths] == ["img1.png", "img10.png"]

    with pytest.raises(InputError, match="not an image"):
        collect_inputs(folder / "images" / "readme.md")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        collect_inputs(empty)
    with pytest.raises(InputError, match="not found"):
        collect_inputs(tmp_path / "missing")
    with pytest.raises(InputError, match="fps applies to a video"):
        collect_inputs(folder, fps=2)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 8)).save(other / "img1.png")
    with pytest.raises(InputError, match="img1.png"):
        collect_inputs([folder / "images" / "img1.png", other / "img1.png"])


def write_video(path: Path, num_frames: int, fps: float, size=(96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(num_frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.rectangle(frame, (4 * i, 10), (4 * i + 20, 40), (0, 200, 255), -1)
        writer.write(frame)
    writer.release()


def test_video_frame_sampling(tmp_path):
    assert select_frame_indices(20, 10.0, fps=2) == [0, 5, 10, 15]
    assert select_frame_indices(20, 10.0, max_frames=3) == [0, 10, 19]
    assert select_frame_indices(20, 10.0, fps=2, max_frames=2) == [0, 15]
    assert select_frame_indices(5, 10.0, fps=30) == [0, 1, 2, 3, 4]
    assert select_frame_indices(35, 10.0) == [0, 10, 20, 30]  # default: 1 frame per second

    video = tmp_path / "clip.avi"
    write_video(video, num_frames=20, fps=10)
    frames = sample_video_frames(video, tmp_path / "frames", fps=2)
    assert [p.name for p in frames] == [f"frame_{i:06d}.png" for i in (0, 5, 10, 15)]
    assert Image.open(frames[0]).size == (96, 64)

    (tmp_path / "broken.mp4").write_bytes(b"nope")
    with pytest.raises(InputError, match="broken.mp4"):
        collect_inputs(tmp_path / "broken.mp4")
