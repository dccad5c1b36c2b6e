"""`vggt reconstruct` end to end on CPU with the tiny model, and its one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt.cli.main import main

pycolmap = pytest.importorskip("pycolmap")
cv2 = pytest.importorskip("cv2")

FAST = ["--device", "cpu", "--dtype", "float32", "--resolution", "112"]


@pytest.fixture(scope="module")
def golden_checkpoint(golden_dir) -> list[str]:
    return ["--checkpoint", str(golden_dir / "tiny_state_dict.safetensors"), "--preset", "tiny"]


def small_photos(folder: Path, count: int = 2, extra_files: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    for name in extra_files:
        (folder / name).write_text("not an image")
    return folder


def write_video(path: Path, num_frames: int = 20, fps: float = 10.0, size: tuple[int, int] = (96, 64)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/avi here"
    for i in range(num_frames):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.circle(frame, (10 + 3 * i, 32), 12, (30, 180, 250), -1)
        writer.write(frame)
    writer.release()
    return path


def test_room_with_a_local_checkpoint(examples_dir, golden_checkpoint, tmp_path, capsys):
    out = tmp_path / "room"
    args = ["reconstruct", str(examples_dir / "room" / "images"), "--out", str(out), "--max-points", "500"]
    assert main(args + golden_checkpoint + FAST) == 0
    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()[-1]
    assert "8 frames" in summary and "500 points" in summary and str(out) in summary
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    # The COLMAP model holds the points of the cloud that other frames see too (random weights: few of them).
    assert model.num_reg_images() == 8 and model.num_points3D() <= 500
    assert all(point.track.length() >= 2 for point in model.points3D.values())
    sizes = {
        image.name: (model.cameras[image.camera_id].width, model.cameras[image.camera_id].height)
        for image in model.images.values()
    }
    assert sizes["no_overlap_1.png"] == (512, 384)
    assert sizes["no_overlap_2.jpg"] == (1280, 960)
    assert len(list((out / "images").iterdir())) == 8


def test_video_input(tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    args = ["reconstruct", str(video), "--out", str(out), "--preset", "tiny", "--fps", "4", "--max-frames", "3"]
    assert main(args + FAST) == 0
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.err
    assert "3 frames" in captured.out
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["frame_000000.png", "frame_000010.png", "frame_000018.png"]
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert sorted(image.name for image in model.images.values()) == names
    # The frames of a video come from one device: one camera for all of them by default.
    assert len(model.cameras) == 1 and (model.cameras[1].width, model.cameras[1].height) == (96, 64)


def test_output_folder_flags(tmp_path, capsys):
    photos = small_photos(tmp_path / "photos", count=3)
    out = tmp_path / "out"
    flags = ["--camera-model", "SIMPLE_PINHOLE", "--shared-camera", "--no-colmap-points", "--masks"]
    flags += ["--no-downscaled-images", "--ba", "--ba-backend", "ceres", "--ba-vis-threshold", "1.0"]
    assert main(["reconstruct", str(photos), "--out", str(out), "--preset", "tiny"] + flags + FAST) == 0
    err = capsys.readouterr().err
    assert "bundle adjustment skipped" in err  # random weights track nothing: said in one line, the run goes on
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert len(model.cameras) == 1 and model.cameras[1].model.name == "SIMPLE_PINHOLE"
    assert model.num_points3D() == 0 and model.num_reg_images() == 3
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["photo0.png", "photo1.png", "photo2.png"]
    assert not (out / "images_2").exists() and (out / "transforms.json").is_file()


def test_non_images_skipped_and_output_not_overwritten(tmp_path, capsys):
    photos = small_photos(tmp_path / "photos", extra_files=("notes.txt", "data.csv"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    base = ["reconstruct", str(photos), "--out", str(out), "--preset", "tiny"] + FAST
    assert main(base + ["-q"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert (out / "mine.txt").read_text() == "keep me"

    assert main(base + ["-q", "--overwrite"]) == 2  # not an earlier output of ours: never deleted
    err = capsys.readouterr().err
    assert "not an earlier output of vggt" in err and "mine.txt" in err, err
    assert (out / "mine.txt").read_text() == "keep me"

    (out / "mine.txt").unlink()
    assert main(base) == 0
    assert main(base + ["--overwrite"]) == 0  # an earlier output is replaced
    err = capsys.readouterr().err
    assert "notes.txt" in err and "data.csv" in err  # skipped and listed
    assert sorted(p.name for p in (out / "images").iterdir()) == ["photo0.png", "photo1.png"]


def test_output_folder_holding_the_inputs_is_refused(tmp_path, capsys):
    photos = small_photos(tmp_path / "scene" / "images")
    for out in (photos, tmp_path / "scene"):
        assert main(["reconstruct", str(photos), "--out", str(out), "--overwrite", "-q", "--preset", "tiny"]) == 2
        assert "holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == ["photo0.png", "photo1.png"]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after INPUT, expected words in the error) with INPUT first."""
    empty = tmp_path / "empty"
    empty.mkdir()
    only_text = tmp_path / "only_text"
    only_text.mkdir()
    (only_text / "readme.txt").write_text("x")
    corrupt = small_photos(tmp_path / "corrupt", count=1)
    (corrupt / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    photos = small_photos(tmp_path / "photos")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    return {
        "empty folder": ([str(empty)], "no images"),
        "no image files": ([str(only_text)], "no images"),
        "corrupt image": ([str(corrupt)], "broken.jpg"),
        "missing input": ([str(tmp_path / "nowhere")], "not found"),
        "corrupt video": ([str(tmp_path / "bad.mp4")], "bad.mp4"),
        "missing checkpoint": ([str(photos), "--checkpoint", str(tmp_path / "no.safetensors")], "not found"),
        "unknown preset": ([str(photos), "--preset", "huge"], "preset"),
        "conf percentile": ([str(photos), "--preset", "tiny", "--conf-percentile", "100"], "conf-percentile"),
        "fps on images": ([str(photos), "--preset", "tiny", "--fps", "2"], "--fps"),
        "resolution": ([str(photos), "--preset", "tiny", "--resolution", "100"], "multiple of the patch size"),
        "loop frames": ([str(photos), "--preset", "tiny", "--window", "2", "--loop-closure", "0:5"], "--loop-closure"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty folder",
        "no image files",
        "corrupt image",
        "missing input",
        "corrupt video",
        "missing checkpoint",
        "unknown preset",
        "conf percentile",
        "fps on images",
        "resolution",
        "loop frames",
    ],
)
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    arguments, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    fast = ["--device", "cpu", "--dtype", "float32"] + (
        ["--resolution", "56"] if "--resolution" not in arguments else []
    )
    assert main(["reconstruct", *arguments, "--out", str(out), "-q", *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("vggt reconstruct: error:") and expected in err
    assert "Traceback" not in err
    assert not out.exists()


def test_bundle_adjustment_without_theseus(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "theseus", None)  # as if it were not installed: `import theseus` fails
    photos = small_photos(tmp_path / "photos")
    out = tmp_path / "o"
    assert main(["reconstruct", str(photos), "--out", str(out), "--preset", "tiny", "--ba", "-q"] + FAST) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Theseus" in err and "vggt[ba]" in err
    assert not out.exists()


def test_cuda_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    photos = small_photos(tmp_path / "photos")
    assert main(["reconstruct", str(photos), "--out", str(tmp_path / "o"), "--device", "cuda", "-q"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_loop_closure_flag_alone_or_with_frames(tmp_path):
    from vggt.cli.main import build_parser
    from vggt.cli.reconstruct import options_from_args

    def loop(*flags: str):
        args = build_parser().parse_args(["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), *flags])
        return options_from_args(args).loop_closure

    assert loop() is False
    assert loop("--window", "8", "--loop-closure") is True
    assert loop("--window", "8", "--loop-closure", "3:120") == (3, 120)
    with pytest.raises(SystemExit) as exc:
        loop("--window", "8", "--loop-closure", "end")
    assert exc.value.code == 2


def test_a_flag_without_an_options_field_fails_loudly(tmp_path):
    from vggt.cli.main import build_parser
    from vggt.cli.reconstruct import options_from_args

    args = build_parser().parse_args(["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), "--fps", "2"])
    assert options_from_args(args).fps == 2  # every flag of the real command has its field
    args.conf_percentil = 30.0  # a flag whose dest no longer matches its field (conf_percentile)
    with pytest.raises(TypeError, match="conf_percentil"):
        options_from_args(args)


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), "--mode", "stretch"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", str(tmp_path)])  # --out is required
    assert exc.value.code == 2


def test_real_process_exit_code_and_help(tmp_path):
    # As the `vggt` console script does (`python -m vggt.cli.main` would define a second UsageError in __main__).
    command = [sys.executable, "-c", "import sys; from vggt.cli.main import main; sys.exit(main())", "reconstruct"]
    result = subprocess.run(
        command + [str(tmp_path / "missing"), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vggt reconstruct: error: input not found: {tmp_path / 'missing'}"]
    help_text = subprocess.run(command + ["--help"], capture_output=True, text=True)
    assert help_text.returncode == 0
    for output in ("sparse/0", "points.ply", "scene.glb", "cameras.json", "predictions.npz", "depth/<name>.npy"):
        assert output in help_text.stdout
