"""`vggt demo` as its users meet it: a real server in a subprocess (the golden tiny weights at 112 px on CPU),
called through gradio_client and Gradio's REST API, and driven by a headless Chromium.

One server serves the whole module; each test makes its own sessions (a gradio_client `Client` or a browser
page is one session).
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import MIN_DRAWN_PIXELS, AppServer, drawn_pixels, free_port, save_screenshot
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the demo tests need vggt[demo] (gradio)")
trimesh = pytest.importorskip("trimesh")

RESOLUTION = 112
MAX_FILES = 12
RUN_PATTERN = re.compile(r"vggt demo: model run (\d+):")
API_TIMEOUT = 120


@pytest.fixture(scope="module")
def room_photos(examples_dir) -> list[Path]:
    return sorted((examples_dir / "room" / "images").iterdir())


@pytest.fixture(scope="module")
def demo(golden_dir, examples_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    args = ["demo", "--checkpoint", str(golden_dir / "tiny_state_dict.safetensors"), "--preset", "tiny"]
    args += ["--device", "cpu", "--dtype", "float32", "--resolution", str(RESOLUTION), "--max-files", str(MAX_FILES)]
    args += ["--examples", str(examples_dir), "--session-minutes", "10"]
    server = AppServer(args, free_port(), tmp).wait_until_serving()
    server.tmp = tmp
    yield server
    assert server.stop() == 0, server.log()[-3000:]
    assert not list((tmp / "tmp").glob("vggt-demo-*")), "the server left session files behind"


def model_runs(server: AppServer) -> int:
    return len(RUN_PATTERN.findall(server.log()))


def session_dirs(server: AppServer) -> list[Path]:
    return sorted(p for root in (server.tmp / "tmp").glob("vggt-demo-*") for p in root.iterdir())


def client(server: AppServer):
    return gradio_client.Client(server.url, verbose=False, download_files=str(server.tmp / "client"))


def read_scene(path: str):
    scene = trimesh.load(path, file_type="glb")
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    frustums = [name for name in scene.geometry if name.startswith("camera_")]
    return clouds, frustums


# ------------------------------------------------------------------------------------------------ the API


def test_reconstruct_then_rerender_without_the_model(demo, room_photos, tmp_path):
    api = client(demo)
    runs = model_runs(demo)
    files = [gradio_client.handle_file(str(p)) for p in room_photos]
    scene, summary, *_ = api.predict(files, api_name="/reconstruct")
    assert model_runs(demo) == runs + 1
    assert summary.startswith("8 frames, ") and "on cpu (float32)" in summary
    clouds, frustums = read_scene(scene)
    assert len(clouds) == 1 and len(frustums) == 8
    half = len(clouds[0].vertices)
    assert half == int(summary.split(", ")[1].split()[0]) > 1000

    rescene, resummary = api.predict(conf_percentile=80, api_name="/render")
    stricter = read_scene(rescene)[0][0]
    assert 0.35 * half < len(stricter.vertices) < 0.45 * half  # 20 % of the pixels instead of 50 %
    hidden, _ = api.predict(conf_percentile=80, show_cameras=False, max_points=5000, api_name="/render")
    clouds, frustums = read_scene(hidden)
    assert len(clouds[0].vertices) == 5000 and not frustums
    assert model_runs(demo) == runs + 1  # re-rendering used the cached predictions

    downloads = api.predict(api_name="/downloads")
    assert [Path(p).name for p in downloads] == [
        "scene.glb",
        "points.ply",
        "vggt-scene.zip",
        "predictions.npz",
        "cameras.json",
    ]
    assert len(trimesh.load(downloads[1]).vertices) == 5000
    with zipfile.ZipFile(downloads[2]) as archive:
        archive.extractall(tmp_path / "scene")
    from vggt.pipeline.reconstruction import Reconstruction

    saved = Reconstruction.load(tmp_path / "scene")
    assert saved.num_points == 5000 and saved.selection.conf_percentile == 80
    assert sorted(saved.image_names) == [p.name for p in room_photos]

    caption, image, depth, confidence = api.predict(3, api_name="/frame")
    assert caption == f"Frame 4 of 8: {room_photos[3].name}"
    assert np.asarray(Image.open(depth)).shape == (84, 112, 3)


def test_bad_input_is_one_line_in_the_page_and_the_server_keeps_serving(demo, room_photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    api = client(demo)
    cases = [
        ([broken, room_photos[0]], "corrupt or truncated image file: broken.jpg"),
        ([], "no input: upload photos or a video"),
        ([notes], "Invalid file type"),  # refused by Gradio's check of the file types
        ([room_photos[0]] * (MAX_FILES + 1), f"holds {MAX_FILES + 1} files, more than this server takes ({MAX_FILES})"),
    ]
    for paths, expected in cases:
        with pytest.raises(gradio_client.exceptions.AppError) as error:
            api.predict([gradio_client.handle_file(str(p)) for p in paths], api_name="/reconstruct")
        message = str(error.value)
        assert expected in message and "Traceback" not in message and "uploads/" not in message
    with pytest.raises(gradio_client.exceptions.AppError, match="nothing reconstructed yet"):
        api.predict(api_name="/render")

    scene, summary, *_ = api.predict(
        [gradio_client.handle_file(str(p)) for p in room_photos[:2]], api_name="/reconstruct"
    )
    assert summary.startswith("2 frames")


def test_sessions_are_apart_and_upload_names_stay_inside(demo, examples_dir, room_photos):
    """Two visitors' files sit in two folders; a name like ../../x.jpg becomes x.jpg inside its session's uploads."""
    import httpx

    first, second = client(demo), client(demo)
    kitchen = sorted((examples_dir / "kitchen" / "images").iterdir())[:2]
    before = set(session_dirs(demo))
    first.predict([gradio_client.handle_file(str(p)) for p in room_photos[:3]], api_name="/reconstruct")
    second.predict([gradio_client.handle_file(str(p)) for p in kitchen], api_name="/reconstruct")
    new = [d for d in session_dirs(demo) if d not in before]
    assert len(new) == 2
    uploads = sorted(sorted(p.name for p in (d / "uploads").iterdir()) for d in new)
    assert uploads == sorted([[p.name for p in room_photos[:3]], [p.name for p in kitchen]])
    assert first.predict(api_name="/render")[1].startswith("3 frames")  # each sees its own reconstruction
    assert second.predict(api_name="/render")[1].startswith("2 frames")
    upload = next((new[0] / "uploads").iterdir())  # the session folders are not served to anyone
    assert httpx.get(f"{demo.url}gradio_api/file={upload}").status_code == 403

    # Gradio's REST API, with upload names that try to climb out of the folder.
    api = f"{demo.url}gradio_api"
    names = ["../../x.jpg", "..\\..\\y.jpg"]
    payload = [("files", (name, room_photos[1].read_bytes(), "image/jpeg")) for name in names]
    paths = httpx.post(f"{api}/upload", files=payload).raise_for_status().json()
    files = [{"path": p, "orig_name": n, "meta": {"_type": "gradio.FileData"}} for p, n in zip(paths, names)]
    data = rest_reconstruct_data(files)
    event = httpx.post(f"{api}/call/reconstruct", json={"data": data}).raise_for_status().json()["event_id"]
    stream = httpx.get(f"{api}/call/reconstruct/{event}", timeout=API_TIMEOUT).text
    assert "event: complete" in stream and "2 frames" in stream, stream[-2000:]
    copies = [p for p in demo.tmp.rglob("*") if p.name in ("x.jpg", "y.jpg")]
    in_sessions = {p.parent for p in copies if p.parent.name == "uploads"}
    assert len(in_sessions) == 1 and sorted(p.name for p in in_sessions.pop().iterdir()) == ["x.jpg", "y.jpg"]
    assert all(p.parent.name == "uploads" or demo.tmp / "gradio" in p.parents for p in copies)  # or Gradio's cache
    assert not any((folder / name).exists() for folder in demo.tmp.parents for name in ("x.jpg", "y.jpg"))


def rest_reconstruct_data(files: list[dict], max_points: int = 1000) -> list:
    """Every input of /reconstruct, as Gradio's REST API takes them (gradio_client fills in the defaults itself)."""
    return [files, None, 1.0, 8, 50, [], True, "Depth and camera", False, False, max_points]


def test_one_model_run_at_a_time_with_progress_and_places_in_the_queue(demo, room_photos):
    import httpx

    api = f"{demo.url}gradio_api"
    payload = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in room_photos]
    files = [
        {"path": p, "meta": {"_type": "gradio.FileData"}} for p in httpx.post(f"{api}/upload", files=payload).json()
    ]
    calls = [httpx.post(f"{api}/call/reconstruct", json={"data": rest_reconstruct_data(files)}) for _ in range(3)]
    # The queue registers the calls asynchronously: look at its size for a moment, not once.
    waiting, deadline = 0, time.monotonic() + 10
    while waiting < 1 and time.monotonic() < deadline:
        waiting = max(waiting, httpx.get(f"{api}/queue/status").json()["queue_size"])
        time.sleep(0.02)
    job = client(demo).submit([gradio_client.handle_file(str(p)) for p in room_photos], api_name="/reconstruct")
    ranks, bars = [], set()
    while not job.done():
        status = job.status()
        if status.code.name == "IN_QUEUE" and status.rank is not None:
            ranks.append(status.rank)
        bars.update(unit.desc for unit in status.progress_data or ())
        time.sleep(0.02)
    assert job.result()[1].startswith("8 frames")
    for call in calls:
        stream = httpx.get(f"{api}/call/reconstruct/{call.json()['event_id']}", timeout=API_TIMEOUT).text
        assert "event: complete" in stream and "8 frames" in stream
    assert waiting >= 1  # three runs asked for at once: one runs, the others wait
    assert ranks and min(ranks) >= 0  # the visitor who came next waited and was told their place in the line
    assert {"loading", "inference"} <= bars  # the page's progress bar follows the pipeline's tqdm bars


def test_video_upload_is_sampled_by_the_pipeline(demo, room_photos, tmp_path):
    pytest.importorskip("cv2")
    from test_cli_reconstruct import write_video

    video = gradio_client.handle_file(str(write_video(tmp_path / "walk.avi", num_frames=20, fps=10.0)))
    api = client(demo)
    preview = api.predict([], video, 5.0, 8, api_name="/preview")
    assert len(preview) == 8  # 2 s at 5 frames per second, thinned to 8
    scene, summary, *_ = api.predict([], video=video, fps=5.0, max_frames=8, api_name="/reconstruct")
    assert summary.startswith("8 frames") and len(read_scene(scene)[1]) == 8
    with pytest.raises(gradio_client.exceptions.AppError, match="either photos or one video"):
        api.predict([gradio_client.handle_file(str(room_photos[0]))], video=video, api_name="/reconstruct")


# ------------------------------------------------------------------------------------------------ in a browser


def wait_for_text(page, selector: str, text: str, timeout_s: float = API_TIMEOUT) -> str:
    page.wait_for_function(
        "([selector, text]) => { const e = document.querySelector(selector); return e && e.innerText.includes(text); }",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )
    return page.locator(selector).inner_text()


def open_page(chromium, demo):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(demo.url, wait_until="load")
    page.get_by_role("button", name="Reconstruct").wait_for(timeout=API_TIMEOUT * 1000)
    return page


def test_page_reconstructs_uploaded_photos(chromium, demo, room_photos, tmp_path):
    page = open_page(chromium, demo)
    before = set(session_dirs(demo))
    page.locator("input[type=file]").first.set_input_files([str(p) for p in room_photos])
    page.locator(".grid-wrap img, .gallery img, button.thumbnail-item img").nth(7).wait_for(
        timeout=60_000
    )  # the preview
    page.get_by_role("button", name="Reconstruct").click()
    summary = wait_for_text(page, "#vggt-summary", "8 frames,")
    assert "on cpu (float32)" in summary
    page.locator("#vggt-downloads a").nth(4).wait_for(timeout=60_000)
    names = page.locator("#vggt-downloads").inner_text().replace("\n", "")  # a name is drawn in two parts
    for name in ("scene.glb", "points.ply", "vggt-scene.zip", "predictions.npz", "cameras.json"):
        assert name in names
    page.get_by_role("button", name="Next").click()
    wait_for_text(page, "#vggt-frame-caption", f"Frame 2 of 8: {room_photos[1].name}")
    page.wait_for_timeout(3000)  # let the 3D view draw the scene
    page.evaluate("window.scrollTo(0, 0)")
    shot = np.asarray(Image.open(save_screenshot(page, "demo.png", tmp_path)).convert("RGB"))
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 100
    page.locator("canvas").first.screenshot(path=str(tmp_path / "scene.png"))
    assert drawn_pixels(tmp_path / "scene.png") > MIN_DRAWN_PIXELS, "the 3D view drew nothing"

    mine = [d for d in session_dirs(demo) if d not in before]
    assert len(mine) == 1
    page.close()  # leaving the page deletes the session's files
    deadline = time.monotonic() + 30
    while mine[0].exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not mine[0].exists()


def test_page_shows_a_corrupt_upload_as_a_message(chromium, demo, room_photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page = open_page(chromium, demo)
    page.locator("input[type=file]").first.set_input_files([str(broken), str(room_photos[0])])
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Reconstruct").click()
    page.get_by_text(re.compile("broken.jpg")).last.wait_for(timeout=API_TIMEOUT * 1000)
    text = page.locator("body").inner_text()
    assert "corrupt or truncated image file: broken.jpg" in text and "Traceback" not in text
    page.close()


def test_page_example_scene_fills_the_upload(chromium, demo):
    page = open_page(chromium, demo)
    page.get_by_label("Or an example scene").click()
    page.get_by_role("option", name="room").click()
    page.locator("button.thumbnail-item img, .grid-wrap img").nth(7).wait_for(timeout=60_000)  # the preview
    assert "no_overlap_8.jpg" in page.locator("body").inner_text().replace("\n", "")  # listed in the upload
    page.close()


# ------------------------------------------------------------------------------------------------ visitors' files


def _cache_files(tmp: Path) -> list[Path]:
    """Files in Gradio's cache folders of the servers under `tmp`."""
    return sorted(p for p in (tmp / "gradio").glob("vggt-gradio-*/**/*") if p.is_file())


def _server_folders(tmp: Path) -> list[str]:
    return sorted(p.name for p in [*(tmp / "gradio").glob("vggt-gradio-*"), *(tmp / "tmp").glob("vggt-demo-*")])


def _wait_until(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


@pytest.fixture
def small_examples(tmp_path) -> Path:
    """An examples folder with one scene of two small photos, and a secret beside the scene."""
    scene = tmp_path / "examples" / "squares"
    scene.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(scene / f"p{i}.png")
    (tmp_path / "examples" / ".env").write_text("SECRET=1")
    return tmp_path / "examples"


def test_visitors_files_go_with_their_session_the_server_and_a_killed_server(golden_dir, small_examples, tmp_path):
    """3 concurrent visitors, a session expiry, SIGTERM and a SIGKILL restart: nothing of the visitors is left, and
    nothing is served once its session is gone; --examples serves the example photos only; uploads are capped."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    tmp = tmp_path / "server"
    args = ["demo", "--checkpoint", str(golden_dir / "tiny_state_dict.safetensors"), "--preset", "tiny"]
    args += ["--device", "cpu", "--dtype", "float32", "--resolution", str(RESOLUTION), "--max-upload", "1"]
    args += ["--examples", str(small_examples), "--session-minutes", "0.25"]
    server = AppServer(args, free_port(), tmp).wait_until_serving()
    server.tmp = tmp
    try:
        photos = sorted((small_examples / "squares").iterdir())
        api = f"{server.url}gradio_api"
        assert httpx.get(f"{api}/file={photos[0]}").status_code == 200
        assert httpx.get(f"{api}/file={small_examples / '.env'}").status_code == 403
        too_big = [("files", ("big.png", bytes(2 << 20), "image/png"))]
        assert httpx.post(f"{api}/upload", files=too_big).status_code == 413

        def visit(_: int) -> list:
            visitor = client(server)
            visitor.predict([gradio_client.handle_file(str(p)) for p in photos], api_name="/reconstruct")
            return visitor.predict(api_name="/downloads")

        with ThreadPoolExecutor(3) as pool:
            downloads = list(pool.map(visit, range(3)))
        assert all(len(d) == 5 for d in downloads)
        served = _cache_files(tmp)
        assert any(p.suffix == ".glb" for p in served) and any(p.name == "predictions.npz" for p in served)
        assert httpx.get(f"{api}/file={served[0]}").status_code == 200
        # The sessions expire after 15 s idle: every copy goes, and is no longer served.
        assert _wait_until(lambda: not _cache_files(tmp)), _cache_files(tmp)
        assert httpx.get(f"{api}/file={served[0]}").status_code in (403, 404)
        assert not session_dirs(server)

        client(server).predict([gradio_client.handle_file(str(p)) for p in photos], api_name="/reconstruct")
        assert _cache_files(tmp)
        server.process.kill()  # SIGKILL: nothing of ours runs
        server.process.wait()
        assert _cache_files(tmp) and session_dirs(server)
    finally:
        server.stop()
    restarted = AppServer(args, free_port(), tmp).wait_until_serving()
    try:
        assert len(_server_folders(tmp)) == 2 and not _cache_files(tmp)  # the new server's two (empty) folders
    finally:
        assert restarted.stop() == 0, restarted.log()[-3000:]
    assert _server_folders(tmp) == [] and not _cache_files(tmp)
