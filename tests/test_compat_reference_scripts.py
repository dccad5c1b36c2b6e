"""The reference package's own user-facing scripts (../shared/reference/scripts, unmodified) run on this package.

Each script runs as a user on an offline CPU machine would run it:
- it downloads VGGT-1B with `torch.hub.load_state_dict_from_url`; the test places random VGGT-1B weights (bfloat16,
  to halve the file) in the torch hub cache under `TORCH_HOME`, where that call finds them without a network, and
  for bundle adjustment the third-party weights `predict_tracks` downloads (VGGSfM tracker, DINOv2, SuperPoint,
  ALIKED; see compat_weights.py), also random;
- it calls `torch.cuda.get_device_capability()` unconditionally; a `sitecustomize.py` the test puts first on
  PYTHONPATH answers it on CPU (the script itself is not touched);
- `HF_HUB_OFFLINE=1` and a private `HF_HOME` keep every Hub lookup local.
The scripts only run on the full VGGT-1B (they call `VGGT()`), so each mode runs once, on two small photos.
demo_gradio.py needs Gradio 5 (Gradio 6 removed `Gallery(show_download_button=...)`): it runs with the packages
where gradio 5.50.0's requirements differ from this environment's, which `scripts/install.sh all` puts in
`<prefix>/gradio-5` (GRADIO_5_FOLDER), first on its PYTHONPATH, as a user's environment with gradio==5.50.0 has them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from compat_weights import write_tracking_weights

SITECUSTOMIZE = """\
# A CPU answer to torch.cuda.get_device_capability(), which the reference scripts call unconditionally.
import torch

torch.cuda.get_device_capability = lambda device=None: (8, 0)
"""
# Seconds one script may take. Measured on the 2-core development machine: with a load average of 2-4,
# demo_colmap.py --use_ba took 189 s and demo_viser.py 128 s (the 1B weights file: 18 s); shared with five other
# engineers' test runs (load average 10-25) the feed-forward demo_colmap.py took 9 min and --use_ba 26 min.
SCRIPT_TIMEOUT = 2400
# The Gradio 5 packages for demo_gradio.py (see scripts/install.sh) and the release they were tested with.
GRADIO_5_FOLDER = Path(sys.prefix) / "gradio-5"
GRADIO_5_VERSION = "5.50.0"
# The example videos demo_gradio.py lists (it builds its examples table from them when the page is built).
GRADIO_EXAMPLE_VIDEOS = (
    "great_wall", "Colosseum", "room", "kitchen", "fern", "single_cartoon", "single_oil_painting", "pyramid"
)  # fmt: skip


@pytest.fixture(scope="module")
def scripts_dir(shared_dir: Path) -> Path:
    folder = shared_dir / "reference" / "scripts"
    if not (folder / "demo_colmap.py").is_file():
        pytest.skip(f"{folder} has no reference scripts")
    return folder


@pytest.fixture(scope="module")
def user_machine(tmp_path_factory) -> dict[str, str]:
    """Environment of an offline CPU machine whose torch hub cache holds (random) VGGT-1B weights."""
    from vggt.models.vggt import VGGT

    root = tmp_path_factory.mktemp("user")
    checkpoints = root / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGGT().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        # Small random weights keep the 24 + 24 blocks finite; norms start at one as a trained model's roughly do.
        ones = key.endswith("weight") and ("norm" in key or key.endswith(".gamma")) and len(shape) == 1
        tensor = torch.empty(shape, dtype=torch.bfloat16)
        state[key] = tensor.fill_(1.0) if ones else tensor.normal_(0.0, 0.02, generator=generator)
    # The camera head's last layer predicts a fixed pose encoding (identity rotation, zero translation, fields of
    # view of 1 rad after its 4 additive iterations), so that every frame gets the same sane camera.
    fc2 = "camera_head.pose_branch.fc2"
    state[f"{fc2}.weight"] = torch.zeros_like(state[f"{fc2}.weight"])
    state[f"{fc2}.bias"] = torch.tensor([0, 0, 0, 0, 0, 0, 0.25, 0.25, 0.25], dtype=torch.bfloat16)
    torch.save(state, checkpoints / "model.pt")
    del state
    write_tracking_weights(root / "torch")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    worktree = Path(__file__).resolve().parents[1]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(worktree)]),
        "PYTHONDONTWRITEBYTECODE": "1",  # the scripts' folder is read-only material
        "TORCH_HOME": str(root / "torch"),
        "HF_HOME": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _scene(tmp_path: Path, examples_dir: Path, count: int = 2) -> Path:
    images = tmp_path / "scene" / "images"
    images.mkdir(parents=True)
    for photo in sorted((examples_dir / "kitchen" / "images").iterdir())[:count]:
        shutil.copy(photo, images / photo.name)
    return images.parent


def _run(script: Path, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT
    )
    if result.returncode != 0:
        pytest.fail(f"{script.name} {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def test_demo_colmap_feed_forward_writes_a_colmap_model(scripts_dir, user_machine, examples_dir, tmp_path):
    import pycolmap
    from PIL import Image

    scene = _scene(tmp_path, examples_dir)
    # --conf_thres_value 0: random weights give confidences near 2, below the default threshold of 5.
    _run(scripts_dir / "demo_colmap.py", ["--scene_dir", str(scene), "--conf_thres_value", "0"], user_machine, tmp_path)

    model = pycolmap.Reconstruction(str(scene / "sparse"))
    names = sorted(p.name for p in (scene / "images").iterdir())
    assert sorted(image.name for image in model.images.values()) == names
    for image in model.images.values():
        camera = model.cameras[image.camera_id]
        width, height = Image.open(scene / "images" / image.name).size
        assert (camera.width, camera.height) == (width, height)  # rescaled to the original photo
        assert camera.model.name == "PINHOLE"
        np.testing.assert_allclose(camera.params[2:], (width / 2, height / 2))
        assert image.num_points3D > 0
    # 2 frames of 518 x 518 pixels, all above a zero threshold: the script's cap of 100000 points.
    assert model.num_points3D() == 100000
    assert (scene / "sparse" / "points.ply").stat().st_size > 100000 * 15


def test_demo_colmap_with_bundle_adjustment(scripts_dir, user_machine, examples_dir, tmp_path):
    import pycolmap

    scene = _scene(tmp_path, examples_dir)
    # The smallest tracking settings that keep 500 visible tracks per frame (below that, predict_tracks queries
    # every frame again with 2048 keypoints per extractor); fine tracking cannot be switched off in the script.
    args = ["--scene_dir", str(scene), "--use_ba", "--max_query_pts", "300", "--query_frame_num", "2"]
    _run(scripts_dir / "demo_colmap.py", args, user_machine, tmp_path)

    model = pycolmap.Reconstruction(str(scene / "sparse"))
    assert sorted(image.name for image in model.images.values()) == sorted(p.name for p in (scene / "images").iterdir())
    assert all(camera.model.name == "SIMPLE_PINHOLE" for camera in model.cameras.values())
    assert model.num_points3D() > 100
    tracks = [point.track.length() for point in model.points3D.values()]
    assert min(tracks) >= 2  # bundle adjustment keeps tracks seen twice
    assert (scene / "sparse" / "points.ply").is_file()


def test_demo_viser_serves_the_reconstruction(scripts_dir, user_machine, examples_dir, tmp_path):
    """demo_viser.py started headless: it reconstructs, builds the scene in its viser server, serves the page on its
    port, and is stopped (SIGINT, as Ctrl-C)."""
    from conftest import free_port

    images = _scene(tmp_path, examples_dir) / "images"
    port = free_port()
    log_path = tmp_path / "viser.log"
    args = [sys.executable, str(scripts_dir / "demo_viser.py"), "--image_folder", str(images), "--port", str(port)]

    def page() -> bytes | None:
        # "Starting viser server..." is printed once the whole scene (points, cameras, GUI) is in the server.
        return _get(f"http://127.0.0.1:{port}/") if "Starting viser server..." in log_path.read_text() else None

    served = _serve_then_stop(args, user_machine, tmp_path, log_path, page)
    output = log_path.read_text()
    assert "Preprocessed images shape: torch.Size([2, 3," in output and "Starting viser server..." in output
    assert b"<html" in served.lower()


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def _serve_then_stop(
    args: list[str], env: dict[str, str], cwd: Path, log_path: Path, fetch: Callable[[], object | None]
) -> object:
    """Run a script as a server until `fetch()` gives something (None or OSError: not yet), then stop it with SIGINT
    (as Ctrl-C). Fails when the script exits first or gives nothing within SCRIPT_TIMEOUT."""
    import signal
    import time

    with log_path.open("w") as log:
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SCRIPT_TIMEOUT
            result = None
            while result is None and time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(
                        f"{Path(args[1]).name} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
                    )
                try:
                    result = fetch()
                except OSError:
                    result = None
                if result is None:
                    time.sleep(1)
            assert result is not None, f"{Path(args[1]).name} never served:\n{log_path.read_text()[-4000:]}"
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return result


def _example_videos(folder: Path, examples_dir: Path) -> None:
    """examples/videos/*.mp4 as the reference's repository has them, here 3-frame clips of the kitchen photos."""
    import cv2

    folder.mkdir(parents=True)
    photos = sorted((examples_dir / "kitchen" / "images").iterdir())[:3]
    frames = [cv2.resize(cv2.imread(str(photo)), (160, 120)) for photo in photos]
    for name in GRADIO_EXAMPLE_VIDEOS:
        writer = cv2.VideoWriter(str(folder / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 1.0, (160, 120))
        for frame in frames:
            writer.write(frame)
        writer.release()


def test_demo_gradio_builds_and_serves_with_gradio_5(scripts_dir, user_machine, examples_dir, tmp_path):
    """demo_gradio.py started headless with Gradio 5.50: it loads the model, builds its page (gallery, 3D view,
    examples) and serves it on a local port (its `share=True` link needs the internet; offline, Gradio serves
    locally only), and is stopped (SIGINT, as Ctrl-C). Measured: 100 s on the 2-core machine, after the module's
    55 s of writing the weights."""
    import json

    from conftest import free_port

    if not (GRADIO_5_FOLDER / "gradio").is_dir():
        pytest.skip(f"{GRADIO_5_FOLDER} has no Gradio 5 (bash scripts/install.sh all puts it there)")
    _example_videos(tmp_path / "examples" / "videos", examples_dir)
    port = free_port()
    site, worktree = user_machine["PYTHONPATH"].split(os.pathsep)
    env = {
        **user_machine,
        "PYTHONPATH": os.pathsep.join([site, str(GRADIO_5_FOLDER), worktree]),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
    }
    log_path = tmp_path / "gradio.log"
    args = [sys.executable, str(scripts_dir / "demo_gradio.py")]
    config = _serve_then_stop(
        args, env, tmp_path, log_path, lambda: json.loads(_get(f"http://127.0.0.1:{port}/config"))
    )
    assert config["version"] == GRADIO_5_VERSION
    kinds = {component["type"] for component in config["components"]}
    assert {"gallery", "model3d", "video", "dataset"} <= kinds, kinds  # dataset: the examples table
    gallery = next(c for c in config["components"] if c["type"] == "gallery")
    assert gallery["props"]["show_download_button"] is True
    assert "Initializing and loading VGGT model..." in log_path.read_text()
