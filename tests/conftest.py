"""Shared test fixtures: the read-only `../shared` folder (golden outputs, example photos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
EXAMPLES = SHARED / "data" / "examples"


# Overrides of configs/tiny_synthetic.yaml for quick CPU training runs: 2-frame samples of 56 x 70 scenes,
# without the (slow) track head unless a test adds it; frames per GPU and steps are up to each test.
TINY_TRAINING_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_synthetic.yaml"
SMALL_TRAINING_RUN = [
    "threads=1",
    "model.heads=[camera,depth,point]",
    "data.num_frames=[2,2]",
    "data.num_scenes=8",
    "data.batches_per_epoch=5",
    "logging.progress=false",
    "logging.tensorboard=false",
    "logging.log_every=1",
    "optim.warmup_steps=0",
]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the project's ../shared folder (golden files, photos)")
    return path


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test ends with torch's thread count as it began: a trainer sets it for the whole process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return _require(EXAMPLES)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN)


@pytest.fixture(scope="session")
def golden_io(golden_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden_dir / "tiny_io.safetensors"))


@pytest.fixture(scope="session")
def golden_state_dict(golden_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden_dir / "tiny_state_dict.safetensors"))


@pytest.fixture(scope="module")
def golden_model(golden_dir: Path):
    """The tiny preset with the golden weights, in eval mode, loaded as users load a checkpoint; one per test
    module (some tests move it between devices or wrap it)."""
    from vggt.models.vggt import VGGT

    return VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny").eval()


@pytest.fixture(scope="session")
def golden_config(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "tiny_config.json").read_text())


@pytest.fixture(scope="session")
def tolerances(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "tolerances.json").read_text())


def assert_close_golden(name: str, actual: torch.Tensor, expected: torch.Tensor, tolerances: dict) -> None:
    """Compare with the tolerance golden/tolerances.json gives `name` (or its default)."""
    tol = tolerances.get(name, tolerances["default"])
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        actual.detach().float(), expected.float(), atol=tol["atol"], rtol=tol["rtol"], msg=lambda m: f"{name}: {m}"
    )


# -------------------------------------------------------------------------------- apps (servers, browser)

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package (scripts/install.sh all installs it)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-swiftshader",  # WebGL on the CPU, so that the 3D views draw without a GPU
]
SERVER_STARTUP_SECONDS = 180
REPO_ROOT = Path(__file__).resolve().parents[1]
# Where the browser tests also copy their screenshots (the README's pictures come from such a run).
SCREENSHOT_DIR_VARIABLE = "VGGT_SCREENSHOT_DIR"
SCREENSHOT_WIDTH, SCREENSHOT_COLORS = 900, 128  # the copies are made small enough to commit


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_environment(tmp: Path) -> dict[str, str]:
    """The environment of an app server under test: this checkout first, temporary files under `tmp`."""
    import os

    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(TMPDIR=str(tmp / "tmp"), GRADIO_TEMP_DIR=str(tmp / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    return env


class AppServer:
    """A `vggt <command>` server in a subprocess, its output in a log file."""

    def __init__(self, args: list[str], port: int, tmp: Path) -> None:
        import subprocess
        import sys

        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = tmp / "server.log"
        self.env = app_environment(tmp)
        self._log = self.log_path.open("w")
        command = [sys.executable, "-m", "vggt", *args, "--host", "127.0.0.1", "--port", str(port)]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_until_serving(self, timeout: float = SERVER_STARTUP_SECONDS) -> AppServer:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"server not serving after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # as process managers stop servers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium (the system's, driven by Playwright), or a skip saying what to install."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (vggt[demo])")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium (scripts/install.sh all does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def save_screenshot(page, name: str, tmp: Path) -> Path:
    """A PNG screenshot of `page` in `tmp`; a small copy goes to $VGGT_SCREENSHOT_DIR when that is set."""
    import os

    path = tmp / name
    page.screenshot(path=str(path))
    if os.environ.get(SCREENSHOT_DIR_VARIABLE):
        from PIL import Image

        target = Path(os.environ[SCREENSHOT_DIR_VARIABLE])
        target.mkdir(parents=True, exist_ok=True)
        small = Image.open(path).convert("RGB")
        small.thumbnail((SCREENSHOT_WIDTH, SCREENSHOT_WIDTH * 4))
        small.quantize(colors=SCREENSHOT_COLORS).save(target / name, optimize=True)
    return path


# A 3D view that drew something has at least this many pixels off its background (see drawn_pixels).
MIN_DRAWN_PIXELS = 50


def drawn_pixels(screenshot: Path) -> int:
    """Pixels in the middle of a 3D view's screenshot (away from its label and buttons) that differ from its
    background (the most common colour)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    height, width = pixels.shape[:2]
    middle = pixels[height // 5 : -height // 5, width // 5 : -width // 5].reshape(-1, 3)
    colors, counts = np.unique(middle, axis=0, return_counts=True)
    return int((middle != colors[counts.argmax()]).any(-1).sum())


def synthetic_reconstruction(folder: Path, num_frames: int = 5, height: int = 48, width: int = 64, **export):
    """A `Reconstruction` of a rendered synthetic scene (vggt.data.synthetic) with its exact depth and cameras, as
    if the model had predicted them at the photos' own size (confidence 1 + depth, NaN where no surface): the
    photos are written into `folder`, `export` sets `ExportOptions` fields."""
    import numpy as np
    from PIL import Image

    from vggt.data.synthetic import generate_scene
    from vggt.pipeline import Reconstruction
    from vggt.pipeline.inference import Predictions
    from vggt.pipeline.options import ExportOptions
    from vggt.pipeline.points import PointSelection, dense_cloud
    from vggt.utils.cameras import Cameras
    from vggt.utils.load_fn import PreprocessTransform

    scene = generate_scene(num_frames=num_frames, height=height, width=width, seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in zip(scene.image_names, scene.images):
        Image.fromarray(image).save(folder / name)
        paths.append(folder / name)
    depth = scene.depths.astype(np.float32)
    predictions = Predictions(
        images=scene.images.transpose(0, 3, 1, 2).copy(),
        extrinsics=scene.extrinsics.astype(np.float32),
        intrinsics=scene.intrinsics.astype(np.float32),
        depth=depth,
        depth_conf=np.where(depth > 0, 1.0 + depth, np.nan).astype(np.float32),  # no surface (sky): no point
    )
    transforms = [PreprocessTransform((width, height), (width, height), (1.0, 1.0), (0.0, 0.0))] * num_frames
    selection = PointSelection(conf_percentile=0.0, max_points=None)
    extrinsics, intrinsics = predictions.extrinsics, predictions.intrinsics
    cameras = Cameras(scene.image_names, extrinsics, intrinsics, np.tile([width, height], (num_frames, 1)))
    return Reconstruction(
        cameras=cameras,
        image_paths=paths,
        model_intrinsics=intrinsics,
        predictions=predictions,
        transforms=transforms,
        cloud=dense_cloud(predictions, extrinsics, intrinsics, transforms, "depth", selection),
        selection=selection,
        export=ExportOptions(**export),
    )
