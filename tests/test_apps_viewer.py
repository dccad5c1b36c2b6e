"""`vggt view`: a saved reconstruction served by viser in a subprocess and opened in a headless Chromium.

The scene is checked where it arrives: the WebSocket frames the browser receives are decoded (viser's wire
format: an 8-byte message length, an 8-byte compressed length, zstd-compressed msgpack, then the raw arrays) and
must hold the point cloud with every saved point and one camera frustum per photo.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIN_DRAWN_PIXELS, REPO_ROOT, AppServer, app_environment, drawn_pixels, free_port, save_screenshot

pytest.importorskip("viser", reason="the viewer tests need vggt[demo] (viser)")
zstandard = pytest.importorskip("zstandard")
msgpack = pytest.importorskip("msgspec.msgpack")

RESOLUTION = 112
MAX_POINTS = 3000
CONNECT_TIMEOUT_S = 60
HEADER_BYTES = 8


@pytest.fixture(scope="module")
def saved_scene(golden_dir, examples_dir, tmp_path_factory) -> Path:
    from vggt.models.vggt import VGGT
    from vggt.pipeline import reconstruct

    model = VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny")
    rec = reconstruct(
        examples_dir / "room" / "images",
        model=model,
        device="cpu",
        dtype="float32",
        resolution=RESOLUTION,
        max_points=MAX_POINTS,
    )
    return rec.save(tmp_path_factory.mktemp("view") / "scene")


def viser_messages(frame: bytes) -> list[tuple[str, dict, list[int]]]:
    """(type, fields, binary buffer sizes) of each message in one viser WebSocket frame."""
    inner_size = int.from_bytes(frame[:HEADER_BYTES], "little")
    compressed_size = int.from_bytes(frame[HEADER_BYTES : 2 * HEADER_BYTES], "little")
    compressed = frame[2 * HEADER_BYTES : 2 * HEADER_BYTES + compressed_size]
    window = msgpack.decode(zstandard.ZstdDecompressor().decompress(compressed, max_output_size=inner_size))
    sizes = list(window.get("binaryBufferLengths", ()))
    return [(message["type"], message, sizes) for message in window["messages"]]


def test_viewer_sends_the_saved_scene_to_the_browser(chromium, saved_scene, tmp_path):
    server = AppServer(["view", str(saved_scene)], free_port(), tmp_path).wait_until_serving()
    try:
        page = chromium.new_page(viewport={"width": 1200, "height": 800})
        frames: list[bytes] = []
        page.on(
            "websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f) if isinstance(f, bytes) else None)
        )
        page.goto(server.url, wait_until="load")
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while "browser connected" not in server.log() and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert f"sent {MAX_POINTS} points and 8 cameras" in server.log()

        messages = [m for frame in frames for m in viser_messages(frame)]
        clouds = [m for m in messages if m[0] == "PointCloudMessage"]
        frustums = [m for m in messages if m[0] == "CameraFrustumMessage"]
        assert len(clouds) == 1 and len(frustums) == 8
        # The points travel as float16 [N, 3] and the colours as uint8 [N, 3] beside the compressed metadata.
        assert MAX_POINTS * 3 * 2 in clouds[0][2] and MAX_POINTS * 3 in clouds[0][2]

        page.wait_for_timeout(3000)  # let it draw
        shot = save_screenshot(page, "viewer.png", tmp_path)
        assert drawn_pixels(shot) > MIN_DRAWN_PIXELS, "the viewer drew nothing"
        page.close()
    finally:
        server.stop()


def test_viewer_refuses_a_folder_that_is_not_a_reconstruction(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vggt", "view", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=app_environment(tmp_path),
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"vggt view: error: SCENE_DIR {tmp_path} has no predictions.npz: give an output folder of vggt "
        "reconstruct (or of the demo's zip)"
    ]


def test_viewer_controls_reselect_from_the_saved_predictions(saved_scene):
    from vggt.apps.viewer import SceneViewer
    from vggt.pipeline.reconstruction import Reconstruction

    rec = Reconstruction.load(saved_scene)
    viewer = SceneViewer(rec, "127.0.0.1", free_port())
    try:
        assert len(viewer.points.points) == MAX_POINTS and len(viewer.frustums) == 8
        viewer.conf.value = 80
        viewer.frame.value = rec.image_names[2]
        viewer.reselect()
        assert viewer.shown.selection.conf_percentile == 80 and viewer.shown.selection.frames == (2,)
        assert set(viewer.shown.observations.image_index.tolist()) == {2}
        assert len(viewer.points.points) == viewer.shown.num_points
        expected = rec.select(conf_percentile=80, frames=[2])
        assert (viewer.points.colors == expected.colors).all()
        viewer.set_cameras_visible(False)
        assert not any(frustum.visible for frustum in viewer.frustums)
    finally:
        viewer.stop()
