"""Fault injection against the real commands: every fault ends with the documented exit code, one line on stderr,
and nothing half-written left behind.

Write failures come from a per-file size limit set in the child (RLIMIT_FSIZE) and from a full tmpfs (skipped
where mounting is not allowed), permission problems from files the child cannot read once it has dropped every
capability (setpriv), interruptions from signals sent while the export runs.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG
from PIL import Image

pytest.importorskip("pycolmap")

FAST = ["--device", "cpu", "--dtype", "float32", "--resolution", "56"]
# The child may not grow past this (a safety net: a reader misled by a damaged file must not take the machine).
CHILD_MEMORY_LIMIT = 6 * 2**30
SETPRIV = shutil.which("setpriv")
DROP_CAPABILITIES = [SETPRIV, "--inh-caps=-all", "--bounding-set=-all", "--"] if SETPRIV else None


def run_vggt(
    args: list[str],
    cwd: Path,
    limits: dict[int, int] | None = None,
    prefix: list[str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`python -m vggt ARGS` in a child process, with resource limits set in the child."""

    def set_limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
        for kind, value in (limits or {}).items():
            resource.setrlimit(kind, (value, value))

    command = [*(prefix or []), sys.executable, "-m", "vggt", *args]
    return subprocess.run(command, cwd=cwd, preexec_fn=set_limits, capture_output=True, text=True, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def leftovers(folder: Path, name: str) -> list[str]:
    """Staging or output folders named after `name` in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name == name or p.name.startswith(f".{name}."))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def golden_checkpoint(golden_dir) -> list[str]:
    return ["--checkpoint", str(golden_dir / "tiny_state_dict.safetensors"), "--preset", "tiny"]


# ------------------------------------------------------------------------------------------------ write failures


def test_file_size_limit_fails_the_run_and_keeps_nothing(photos, tmp_path):
    """pycolmap's writer reports nothing when a file hits the limit: the read-back check must catch it. The COLMAP
    model is written (and checked) first; 150 bytes hold cameras.bin (2 PINHOLE cameras: 120 bytes), not images.bin
    (2 images: at least 166 bytes)."""
    args = ["reconstruct", str(photos), "--out", "out", "--preset", "tiny", "-q", *FAST]
    result = run_vggt(args, tmp_path, limits={resource.RLIMIT_FSIZE: 150})
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("vggt reconstruct: error:") and "images.bin was not written completely" in line
    assert "out/sparse/0/images.bin" in line  # named where it was meant to go, not by the staging folder
    assert leftovers(tmp_path, "out") == []


def test_python_writer_hitting_the_limit_fails_cleanly(photos, tmp_path):
    args = ["reconstruct", str(photos), "--out", "out", "--preset", "tiny", "--max-points", "50", "-q", *FAST]
    result = run_vggt(args, tmp_path, limits={resource.RLIMIT_FSIZE: 30_000})
    assert result.returncode == 1
    line = error_line(result)
    assert "could not write the" in line and "File too large" in line
    assert leftovers(tmp_path, "out") == []


def test_full_disk_fails_cleanly(photos, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        args = ["reconstruct", str(photos), "--out", str(disk / "out"), "--preset", "tiny", "-q", *FAST]
        args += ["--conf-percentile", "0"]
        result = run_vggt(args, tmp_path)
        assert result.returncode == 1
        line = error_line(result)
        assert "No space left on device" in line or "was not written completely" in line
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------------------------ predictions


def test_nan_checkpoint_stops_the_run_naming_the_checkpoint(photos, tmp_path):
    from vggt.models.vggt import VGGT

    model = VGGT.from_preset("tiny")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    checkpoint = tmp_path / "diverged"
    model.save_pretrained(checkpoint)
    result = run_vggt(
        ["reconstruct", str(photos), "--out", "out", "--checkpoint", str(checkpoint), "-q", *FAST], tmp_path
    )
    assert result.returncode == 1
    line = error_line(result)
    assert "non-finite" in line and str(checkpoint) in line
    assert leftovers(tmp_path, "out") == []


def test_non_finite_pixels_are_masked_and_never_written():
    from vggt.errors import PredictionError
    from vggt.pipeline.inference import Predictions, check_finite, finite_or_zero

    depth = np.ones((2, 40, 60), np.float32)
    depth[0, 0, :20] = np.nan  # 20 of 4800 pixels (0.4 %): masked and counted
    predictions = Predictions(
        images=np.zeros((2, 3, 40, 60), np.uint8),
        extrinsics=np.zeros((2, 3, 4), np.float32),
        intrinsics=np.ones((2, 3, 3), np.float32),
        depth=depth,
        depth_conf=np.ones((2, 40, 60), np.float32),
    )
    assert check_finite(predictions, "m") == 20
    assert np.isfinite(finite_or_zero(predictions.depth)).all()
    predictions.depth[1, :10] = np.inf
    with pytest.raises(PredictionError, match="non-finite depth or points"):
        check_finite(predictions, "m")
    predictions.depth[1, :10] = 1.0
    predictions.extrinsics[1, 0, 0] = np.nan
    with pytest.raises(PredictionError, match="non-finite cameras for 1 of 2 images"):
        check_finite(predictions, "m")


# ------------------------------------------------------------------------------------------------ names


NAME_SETS = [
    ["a.jpg", "a.png", "a.jpg.png"],
    ["a.jpg", "A.JPG", "a.JPG.png"],
    ["x.png", "x.png.png", "x.png.png.png", "X.PNG"],
    ["frame_000001.png", "frame_000001.PNG", "sub\\frame_000001.png"],
    ["..\\..\\evil.jpg", "evil.jpg", "evil"],
    ["b.jpeg", "b.jpg", "B.jpeg", "b.JPEG.jpg"],
]


@pytest.mark.parametrize("names", NAME_SETS)
def test_output_names_are_unique_for_any_input_names(names):
    from vggt.data.layout import depth_file_stems, unique_file_names

    images = unique_file_names(names)
    assert all("/" not in n and "\\" not in n and n not in ("", ".", "..") for n in images)
    stems = depth_file_stems(images)
    files = [f"images/{n}" for n in images] + [f"depth/{s}.npy" for s in stems] + [f"depth/{s}.png" for s in stems]
    assert len({f.lower() for f in files}) == len(files), files


def test_colliding_names_reconstruct_into_one_consistent_scene(tmp_path, golden_checkpoint):
    from vggt.data.scene import load_scene

    folder = tmp_path / "collide"
    folder.mkdir()
    rng = np.random.default_rng(2)
    sizes = {"a.jpg": (64, 48), "a.png": (60, 40), "a.jpg.png": (56, 42), "A.JPG": (50, 50)}
    for name, size in sizes.items():
        image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
        image.save(folder / name, format="PNG" if name.endswith(".png") else "JPEG")
    result = run_vggt(["reconstruct", str(folder), "--out", "out", "-q", *golden_checkpoint, *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    cameras = json.loads((out / "cameras.json").read_text())["images"]
    assert len({c["file_name"].lower() for c in cameras}) == 4
    assert len({c["depth_file"].lower() for c in cameras}) == 4
    scene = load_scene(out, load_data=False)
    for i, entry in enumerate(cameras):
        frame = scene.read_frame(i)
        np.testing.assert_array_equal(frame.depth, np.load(out / entry["depth_file"]))
        assert frame.depth.shape == (entry["height"], entry["width"])


# ------------------------------------------------------------------------------------------------ signals


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vggt", *args], cwd=cwd, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the command ended before the export started"
        assert time.monotonic() < deadline, "timed out waiting for the export"
        time.sleep(0.01)


@pytest.fixture
def room_args(examples_dir, golden_checkpoint) -> list[str]:
    # Full-size photos: the export writes megabytes of depth maps, long enough to be interrupted.
    return ["reconstruct", str(examples_dir / "room" / "images"), "--out", "out", *golden_checkpoint, *FAST]


def test_sigterm_during_export_ends_cleanly(tmp_path, room_args):
    process = _start(room_args, tmp_path)
    _wait_for(lambda: any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].endswith("terminated (SIGTERM); partial outputs were removed")
    assert "Traceback" not in stderr and "stack trace" not in stderr and "*** SIGTERM" not in stderr
    assert leftovers(tmp_path, "out") == []


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tmp_path, room_args, photos, golden_checkpoint):
    process = _start(room_args, tmp_path)
    _wait_for(lambda: any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()), process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert [p for p in leftovers(tmp_path, "out") if p.startswith(".out.tmp-")], "SIGKILL left no staging folder"
    result = run_vggt(["reconstruct", str(photos), "--out", "out", "-q", *golden_checkpoint, *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path, "out") == ["out"]


def test_training_stops_on_sigterm_with_a_checkpoint_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(TINY_TRAINING_CONFIG), f"run_dir={run_dir}", *SMALL_TRAINING_RUN]
    args += ["optim.max_steps=400", "checkpoint.every=1000", "data.frames_per_gpu=2"]
    process = _start(args, tmp_path)
    metrics = run_dir / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr.strip().splitlines()[-1]
    from training.checkpoint import list_checkpoints

    (step, _), *_ = list_checkpoints(run_dir)
    assert step >= 2
    resumed = run_vggt([*args[:-3], "optim.max_steps=" + str(step + 1), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run_dir}" in resumed.stdout


# ------------------------------------------------------------------------------------------------ early checks


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--resolution", "500"], "--resolution must be a positive multiple of the patch size 14"),
        (["--ba"], "--ba needs at least two images"),
        (["--out", "."], "is the current folder"),
    ],
)
def test_checks_come_before_the_model_is_loaded(tmp_path, extra, expected):
    """A checkpoint that does not exist proves the order: these errors must come first."""
    single = tmp_path / "single"
    single.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(single / "only.png")
    args = ["reconstruct", str(single), "--out", "out", "--checkpoint", str(tmp_path / "missing.safetensors")]
    args += ["--device", "cpu", "--overwrite", "-q", *extra]
    result = run_vggt(args, tmp_path)
    assert result.returncode == 2
    assert expected in error_line(result)


def test_evaluate_refuses_an_output_that_is_a_file_before_loading(tmp_path):
    from vggt.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", num_scenes=1, num_frames=2, height=28, width=28)
    (tmp_path / "report").write_text("not a folder")
    args = ["evaluate", "--data", "data", "--out", "report", "--checkpoint", "missing.safetensors", "-q"]
    result = run_vggt(args, tmp_path)
    assert result.returncode == 2 and "--out report exists and is not a folder" in error_line(result)


@pytest.mark.skipif(DROP_CAPABILITIES is None, reason="setpriv (util-linux) is not installed")
def test_unwritable_output_parent_is_refused_before_loading(tmp_path, photos):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    args = ["reconstruct", str(photos), "--out", str(locked / "out"), "--checkpoint", "missing.safetensors", "-q"]
    result = run_vggt(args, tmp_path, prefix=DROP_CAPABILITIES)
    assert result.returncode == 2
    assert "permission denied" in error_line(result) and str(locked) in result.stderr


# ------------------------------------------------------------------------------------------------ messages


@pytest.mark.skipif(DROP_CAPABILITIES is None, reason="setpriv (util-linux) is not installed")
def test_unreadable_image_and_folder_say_permission_denied(tmp_path, photos):
    (photos / "p1.png").chmod(0)
    result = run_vggt(
        ["reconstruct", str(photos), "--out", "out", "--preset", "tiny", "-q", *FAST],
        tmp_path,
        prefix=DROP_CAPABILITIES,
    )
    assert result.returncode == 2
    line = error_line(result)
    assert "permission denied" in line and "p1.png" in line and "corrupt" not in line
    photos.chmod(0)
    try:
        result = run_vggt(["reconstruct", str(photos), "--out", "out", "-q", *FAST], tmp_path, prefix=DROP_CAPABILITIES)
    finally:
        photos.chmod(0o755)
    assert result.returncode == 2 and "permission denied" in error_line(result)


def test_integer_weights_are_one_line_naming_the_tensor(tmp_path, photos):
    from safetensors.torch import save_file

    from vggt.models.vggt import VGGT

    state = {k: v.to(torch.int64) for k, v in VGGT.from_preset("tiny").state_dict().items()}
    save_file(state, str(tmp_path / "ints.safetensors"))
    args = ["reconstruct", str(photos), "--out", "out", "--checkpoint", "ints.safetensors", "--preset", "tiny", "-q"]
    result = run_vggt([*args, *FAST], tmp_path)
    assert result.returncode == 2
    line = error_line(result)
    assert "holds int64 values" in line and "aggregator." in line


def test_training_config_errors_name_the_key_and_the_line(tmp_path):
    bad_type = tmp_path / "type.yaml"
    bad_type.write_text("seed: 1\noptim:\n  lr: fast\n")
    result = run_vggt(["train", "--config", str(bad_type)], tmp_path)
    assert result.returncode == 2
    assert "config key 'optim.lr' must be a number, got 'fast'" in error_line(result) and "line 3" in result.stderr
    bad_yaml = tmp_path / "syntax.yaml"
    bad_yaml.write_text("optim:\n  lr: [0.1\n")
    result = run_vggt(["train", "--config", str(bad_yaml)], tmp_path)
    assert result.returncode == 2 and "is not valid YAML" in error_line(result) and "line 3" in result.stderr


def test_resume_passes_over_a_damaged_latest_checkpoint(tmp_path):
    from training.checkpoint import RNG_STATE_NAME, list_checkpoints

    run_dir = tmp_path / "run"
    args = ["train", "--config", str(TINY_TRAINING_CONFIG), f"run_dir={run_dir}", *SMALL_TRAINING_RUN]
    args += ["optim.max_steps=2", "checkpoint.every=1", "data.frames_per_gpu=2"]
    assert run_vggt(args, tmp_path).returncode == 0
    (_, first), (_, latest) = list_checkpoints(run_dir)
    (latest / RNG_STATE_NAME).write_bytes(b"truncated")
    args[-2:-1] = ["optim.max_steps=3"]
    result = run_vggt([*args, "--resume"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is damaged" in result.stderr and f"resumed from {first}" in result.stdout


def test_tiny_photo_warns_and_summary_says_one_frame(tmp_path, golden_checkpoint):
    folder = tmp_path / "tiny"
    folder.mkdir()
    Image.new("RGB", (1, 1), (120, 30, 200)).save(folder / "dot.png")
    result = run_vggt(["reconstruct", str(folder), "--out", "out", *golden_checkpoint, *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "smaller than 224 pixels" in result.stderr and "dot.png" in result.stderr
    assert "1 frame," in result.stdout


def test_error_line_is_not_glued_to_a_progress_bar(tmp_path, photos):
    (photos / "p9_broken.png").write_bytes(b"\x89PNG not really")
    result = run_vggt(["reconstruct", str(photos), "--out", "out", "--preset", "tiny", *FAST], tmp_path)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1
    # What a terminal shows of the line: the text after the last carriage return.
    assert error_lines[0].split("\r")[-1].startswith("vggt reconstruct: error:"), repr(error_lines[0])


def test_quiet_silences_pycolmap(tmp_path, photos, golden_checkpoint):
    result = run_vggt(["reconstruct", str(photos), "--out", "out", "-q", *golden_checkpoint, *FAST], tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ------------------------------------------------------------------------------------------------ exact copies


def test_images_hold_exactly_what_the_model_saw(tmp_path, golden_checkpoint):
    import cv2

    from vggt.utils.images import read_image_rgb

    folder = tmp_path / "formats"
    folder.mkdir()
    rng = np.random.default_rng(5)
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65536, size=(48, 64, 3), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    result = run_vggt(["reconstruct", str(folder), "--out", "out", "-q", *golden_checkpoint, *FAST], tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("deep.png", "cmyk.jpg"):
        written = np.asarray(Image.open(tmp_path / "out" / "images" / name))
        np.testing.assert_array_equal(written, np.asarray(read_image_rgb(folder / name)), err_msg=name)
        assert Image.open(tmp_path / "out" / "images" / name).mode == "RGB"


def test_checkpoints_are_saved_with_the_usual_file_mode(tmp_path):
    from vggt.models.vggt import VGGT

    umask = os.umask(0o022)
    os.umask(umask)
    VGGT.from_preset("tiny").save_pretrained(tmp_path / "model")
    for path in (tmp_path / "model").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


# --------------------------------------------------------------------------------------------- hostile use


def test_overwrite_never_deletes_the_runs_own_inputs(tmp_path, photos):
    """`--out out/ckin --checkpoint out/ckin/model --intrinsics out/ckin/calib.json --overwrite`: refused."""
    from vggt.utils.files import OUTPUT_MARKER

    out = tmp_path / "out" / "ckin"
    (out / "model").mkdir(parents=True)
    (out / OUTPUT_MARKER).write_text("an earlier output")
    (out / "calib.json").write_text("{}")
    for flags in (["--checkpoint", str(out / "model")], ["--intrinsics", str(out / "calib.json")]):
        result = run_vggt(["reconstruct", str(photos), "--out", str(out), *flags, "--overwrite", *FAST], tmp_path)
        assert result.returncode == 2
        assert "holds the input" in error_line(result)
    assert (out / "model").is_dir() and (out / "calib.json").read_text() == "{}"


@pytest.mark.parametrize("windows", [[], ["--window", "2", "--overlap", "1"]])
def test_a_second_run_to_the_same_output_is_refused_in_one_line(tmp_path, photos, windows):
    """Both used to exit 0, one output silently replaced; a second windowed run deleted the first's windows."""
    from test_utils_files import HOLD_LOCK

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / ".out.windows").mkdir()
        (tmp_path / ".out.windows" / "manifest.json").write_text("{}")  # the first run's windows
        args = ["reconstruct", str(photos), "--out", "out", "--preset", "tiny", *windows, *FAST]
        result = run_vggt(args, tmp_path)
        assert result.returncode == 2
        assert (tmp_path / ".out.windows" / "manifest.json").read_text() == "{}"
        assert f"being written by another vggt run (process {holder.pid})" in error_line(result)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_config_of_hostile_sizes_is_one_line_at_once(tmp_path, photos):
    """`depth: 100000000` used to hang building blocks; `img_size: -518` blamed a --resolution never passed."""
    for key, value in (("depth", 100_000_000), ("img_size", -518), ("num_heads", 0)):
        checkpoint = tmp_path / f"bad_{key}"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(json.dumps({"model_type": "vggt", key: value}))
        (checkpoint / "model.safetensors").write_bytes(b"")
        start = time.monotonic()
        args = ["reconstruct", str(photos), "--out", "out", "--checkpoint", str(checkpoint), "--device", "cpu", "-q"]
        result = run_vggt(args, tmp_path, timeout=60)
        assert result.returncode == 2 and time.monotonic() - start < 60
        line = error_line(result)
        assert f"model config {key} must be" in line and "--resolution" not in line, line


@pytest.mark.parametrize("resolution", ["14000", "140000"])
@pytest.mark.parametrize("model", ["preset", "checkpoint"])
def test_a_huge_resolution_is_refused_before_any_photo_is_decoded(tmp_path, photos, resolution, model):
    """`--resolution 140000` on the tiny preset was killed by the kernel at 23.9 GB; now the estimate comes first
    (for a checkpoint of unknown architecture, the photos alone; a missing one proves the check comes first)."""
    start = time.monotonic()
    chosen = ["--preset", "tiny"] if model == "preset" else ["--checkpoint", str(tmp_path / "missing.safetensors")]
    args = ["reconstruct", str(photos), "--out", "out", *chosen, "--device", "cpu", "-q"]
    result = run_vggt([*args, "--resolution", resolution], tmp_path, timeout=120)
    assert result.returncode == 2
    line = error_line(result)
    assert "not enough memory on cpu" in line and "lower --resolution" in line, line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()


def test_file_names_that_cannot_be_kept_are_refused_before_the_model_runs(tmp_path, photos):
    """`caf\\xe9.png` became `caf.png` and `\\xff\\xfe.png` a hidden `.png`; names too long failed after inference."""
    image = next(photos.iterdir()).read_bytes()
    cases = {b"caf\xe9.png": "is not UTF-8", b"\xff\xfe.png": "is not UTF-8", b"n" * 240 + b".png": "bytes long"}
    for raw, expected in cases.items():
        folder = tmp_path / f"case{len(raw)}{raw[0]}"
        folder.mkdir()
        with open(os.path.join(os.fsencode(folder), raw), "wb") as file:
            file.write(image)
        (folder / "plain.png").write_bytes(image)
        args = ["reconstruct", str(folder), "--out", "out", "--checkpoint", str(tmp_path / "missing.safetensors")]
        result = run_vggt([*args, "--device", "cpu", "-q"], tmp_path)
        assert result.returncode == 2
        assert expected in error_line(result)
    result = run_vggt(["reconstruct", str(photos), "--out", "o" * 250, "--preset", "tiny", "-q", *FAST], tmp_path)
    assert result.returncode == 2 and "output file name" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_loop_as_input_is_one_line(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for flags in (["loop", "--out", "out"], [str(tmp_path), "--out", "loop/out"]):
        result = run_vggt(["reconstruct", *flags, "--preset", "tiny", "-q", *FAST], tmp_path)
        assert result.returncode == 2
        line = error_line(result)
        assert "loop" in line and "RuntimeError" not in line, line


def test_a_write_failing_in_a_windowed_run_names_the_folder_and_the_cause(tmp_path):
    """It said "28224 requested and 20352 written", with no file and no cause."""
    folder = tmp_path / "three"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    args = ["reconstruct", str(folder), "--out", "out", "--preset", "tiny", "--window", "2", "--overlap", "1", "-q"]
    result = run_vggt([*args, *FAST], tmp_path, limits={resource.RLIMIT_FSIZE: 20_000})
    assert result.returncode == 1
    line = error_line(result)
    assert "could not write the windows into" in line and ".out.windows" in line, line
    assert "size limit" in line and "kept there for --resume" in line, line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ Hub ids


@pytest.fixture
def no_hub(tmp_path, monkeypatch) -> None:
    """An empty Hub cache and an endpoint on a closed local port: every connection is refused at once."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.mark.parametrize("name", ["a/b/c", "bad id!", "bad/id!", "-x/..", "x/-y", "owner/" + "n" * 200])
def test_odd_hub_ids_are_one_line_naming_the_value(tmp_path, photos, no_hub, name):
    result = run_vggt(["reconstruct", str(photos), "--out", "out", f"--checkpoint={name}", "-q", *FAST], tmp_path)
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert name in line and "facebook/VGGT-1B" in line and "HFValidationError" not in line


def test_unreachable_hub_fails_fast_in_one_line(tmp_path, photos, no_hub):
    start = time.monotonic()
    args = ["reconstruct", str(photos), "--out", "out", "--checkpoint", "facebook/VGGT-1B", "-q", *FAST]
    result = run_vggt(args, tmp_path, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert "facebook/VGGT-1B" in line and "no network connection" in line
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


def test_training_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    """SIGKILL before any checkpoint, then --resume: the run starts over and the dead run's log lines go."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = ["train", "--config", str(TINY_TRAINING_CONFIG), f"run_dir={run_dir}", *SMALL_TRAINING_RUN]
    args += ["logging.tensorboard=true", "checkpoint.every=1000", "data.frames_per_gpu=2"]
    process = _start([*args, "optim.max_steps=400"], tmp_path)
    metrics = run_dir / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, process)
    process.kill()
    process.communicate(timeout=60)
    from training.checkpoint import list_checkpoints

    assert not list_checkpoints(run_dir)
    resumed = run_vggt([*args, "optim.max_steps=3", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]
