"""`vggt demo`: a Gradio page that reconstructs uploaded photos or a video and shows the result in 3D.

One model per server (`ModelRunner`), one model run at a time (a queue with a concurrency limit of 1; waiting
visitors see their position). Each visitor's files live in their own session folder (`vggt.apps.sessions`); the
reconstruction is cached there, so the view controls re-render without running the model. Problems with the
input are `VGGTError`s shown as one short message in the page.

API (gradio_client): `/reconstruct` takes the image files first (every other input has a default) and returns
the GLB scene first; `/render` re-draws the cached reconstruction with other view settings, `/downloads` writes
the files to download, `/frame` gives one frame's image, depth and confidence.
"""

import html
import importlib
import logging
import os
import re
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from vggt.apps.demo_page import DEFAULT_BRANCH, DEFAULT_FPS, POINT_BRANCHES, TITLE, Page, PageLimits, build_page
from vggt.apps.downloads import write_downloads
from vggt.apps.gradio_files import GradioFiles, UploadLimit
from vggt.apps.runner import ModelRunner
from vggt.apps.sessions import Session, SessionStore
from vggt.apps.views import (
    VIEW_MAX_POINTS,
    ViewOptions,
    apply_view,
    frame_caption,
    frame_views,
    summary_line,
    write_scene,
)
from vggt.errors import InputError, VGGTError
from vggt.pipeline.options import DEFAULT_CONF_PERCENTILE
from vggt.pipeline.video import sample_video_frames
from vggt.utils.sampling import evenly_spaced_indices

logger = logging.getLogger(__name__)

# How the page names the arguments that the library's messages mention.
PAGE_NAMES = {
    "inputs": "the upload",
    "max_frames": "'Maximum frames'",
    "fps": "'Video frames per second'",
    "conf_percentile": "'Confidence percentile'",
    "max_points": "'Maximum points'",
    "frames": "'Show points from frames'",
    "points": "'Points from'",
    "resolution": "the server's --resolution",
    "chunk_size": "the server's --chunk-size",
    "memory_check": "the server's --skip-memory-check",
    "mode": "the server's --mode",
}
QUEUE_SIZE = 32
RENDER_CONCURRENCY = 4
MODEL_QUEUE = "model"
NOTHING_YET = "nothing reconstructed yet (or the session expired): press Reconstruct first"


@dataclass(frozen=True)
class DemoSettings:
    """Limits of one server: files per upload, frames per run (and the page's default), the idle time after which a
    session's files are deleted, the example scenes (name -> image files), the bytes one upload (and one session's
    input) may have and the bytes of uploads the whole server keeps."""

    max_files: int = 200
    max_frames: int = 100
    default_frames: int = 32
    session_seconds: float = 3600.0
    examples: dict[str, list[Path]] = field(default_factory=dict)
    max_upload_bytes: int = 1 << 30
    max_server_bytes: int = 8 << 30


def page_message(error: VGGTError, hidden: Sequence[Path]) -> str:
    """`error` as one line of the page (its controls' names); paths inside the server folders `hidden` are cut to
    their file names."""
    text = error.render(PAGE_NAMES)
    for folder in hidden:  # a path inside a server folder is shown as its file name
        text = re.sub(re.escape(f"{folder}{os.sep}") + r"(?:[^\s/]+/)*", "", text)
    return html.escape(text)


def frame_choices(names: Sequence[str]) -> list[str]:
    return [f"{i}: {name}" for i, name in enumerate(names)]


def chosen_frames(choices: Sequence[str] | None) -> tuple[int, ...] | None:
    """Frame indices of the dropdown's choices (`3: name`); None (every frame) when none is chosen."""
    if not choices:
        return None
    try:
        return tuple(int(str(choice).split(":", 1)[0]) for choice in choices)
    except ValueError:
        raise InputError("{frames} takes choices like '3: photo.jpg', got {value!r}", value=list(choices)) from None


def view_options(conf_percentile, frames, show_cameras, points, mask_black, mask_white, max_points) -> ViewOptions:
    """The view the controls ask for (the page's names of the point sources, frame choices as listed)."""
    source = POINT_BRANCHES.get(points, points)
    return ViewOptions(
        conf_percentile=float(conf_percentile),
        max_points=int(max_points) if max_points else None,
        frames=chosen_frames(frames),
        mask_black_background=bool(mask_black),
        mask_white_background=bool(mask_white),
        points=source,
        show_cameras=bool(show_cameras),
    )


def private(name: str) -> dict[str, str]:
    """Event options of a page-only event: left out of the API, under a name of its own (not a public one's)."""
    return {"api_name": name, "api_visibility": "private"}


class DemoApp:
    """The page's event handlers around one `ModelRunner` and one `SessionStore`."""

    def __init__(self, runner: ModelRunner, store: SessionStore, settings: DemoSettings, files: GradioFiles) -> None:
        self.runner = runner
        self.store = store
        self.settings = settings
        self.files = files
        store.on_close = files.release
        store.on_sweep = lambda: files.sweep(settings.session_seconds)

    # ------------------------------------------------------------------------------------------ helpers

    def shown_to_user(self, handler: Callable) -> Callable:
        """`handler` with `VGGTError`s (and anything unexpected) turned into one short message in the page."""

        @wraps(handler)
        def guarded(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except VGGTError as error:
                hidden = [self.store.root, Path(get_upload_folder())]
                raise gr.Error(page_message(error, hidden), print_exception=False) from None
            except gr.Error:
                raise
            except Exception as error:  # the page gets one line, the server log the traceback
                logger.exception("demo handler %s failed", handler.__name__)
                message = f"unexpected {type(error).__name__}; the server's log has the details"
                raise gr.Error(html.escape(message), print_exception=False) from None

        return guarded

    def cached(self, session_id: str | None) -> Session:
        session = self.store.get(session_id)
        if session is None or session.reconstruction is None:
            raise InputError(NOTHING_YET)
        return session

    def frame_outputs(self, session: Session, index: int) -> tuple:
        """The caption and the frame's image, depth and confidence as PNG files of the session (in Gradio's cache)."""
        from PIL import Image

        index = min(max(int(index), 0), session.shown.num_frames - 1)
        folder = session.fresh_dir("frame")
        views = []
        for name, view in zip(("image", "depth", "confidence"), frame_views(session.shown, index)):
            Image.fromarray(view).save(folder / f"{name}.png")
            views.append(self.files.hand_out(session.id, folder / f"{name}.png"))
        return (frame_caption(session.shown, index), *views)

    # ------------------------------------------------------------------------------------------ inputs

    def input_files(self, images: Sequence[str] | None, video: str | None) -> tuple[list[str], str | None]:
        images = [str(p) for p in images or []]
        if not images and not video:
            raise InputError("no input: upload photos or a video, or choose an example scene")
        if images and video:
            raise InputError("upload either photos or one video, not both (clear one of them)")
        if len(images) > self.settings.max_files:
            raise InputError(
                "{inputs} holds {count} files, more than this server takes ({limit}); upload fewer or a video",
                count=len(images),
                limit=self.settings.max_files,
            )
        total = sum(Path(p).stat().st_size for p in [*images, *([video] if video else [])] if Path(p).is_file())
        if total > self.settings.max_upload_bytes:
            raise InputError(
                "{inputs} holds {size} MB, more than this server takes at once ({limit} MB); upload fewer or smaller "
                "files",
                size=total >> 20,
                limit=self.settings.max_upload_bytes >> 20,
            )
        return images, video

    def frame_limit(self, max_frames: float | None) -> int:
        if max_frames is None:
            return self.settings.default_frames
        if not 1 <= max_frames <= self.settings.max_frames:
            raise InputError(
                "{max_frames} must be in 1..{limit} on this server, got {value}",
                limit=self.settings.max_frames,
                value=max_frames,
            )
        return int(max_frames)

    def preview(
        self, images, video=None, fps=DEFAULT_FPS, max_frames=None, session_id=None, request: gr.Request = None
    ):
        """The frames a reconstruction would use: the photos (evenly thinned to the frame limit) or sampled frames."""
        if not images and not video:
            return [], session_id
        images, video = self.input_files(images, video)
        limit = self.frame_limit(max_frames)
        session = self.store.open(session_id, request.session_hash if request else None)
        self.files.claim(session.id, [*images, video])  # Gradio's copies of the upload go with the session
        if images:
            return [images[i] for i in evenly_spaced_indices(len(images), limit)], session.id
        frames = sample_video_frames(video, session.fresh_dir("preview"), fps=fps or DEFAULT_FPS, max_frames=limit)
        return [self.files.hand_out(session.id, p) for p in frames], session.id

    def example(self, name: str | None):
        """The example scene's photos as the upload (and no video)."""
        if not name:
            return gr.skip(), gr.skip()
        return [str(p) for p in self.settings.examples[name]], None

    # ------------------------------------------------------------------------------------------ the model

    def reconstruct(
        self,
        images: list[str] | None,
        video: str | None = None,
        fps: float = DEFAULT_FPS,
        max_frames: float | None = None,
        conf_percentile: float = DEFAULT_CONF_PERCENTILE,
        frames: list[str] | None = None,
        show_cameras: bool = True,
        points: str = DEFAULT_BRANCH,
        mask_black_background: bool = False,
        mask_white_background: bool = False,
        max_points: float = VIEW_MAX_POINTS,
        session_id: str | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio reads the default)
    ):
        """Run the model on the upload and show the result (the GLB scene first)."""
        images, video = self.input_files(images, video)
        limit = self.frame_limit(max_frames)
        view = view_options(
            conf_percentile, None, show_cameras, points, mask_black_background, mask_white_background, max_points
        )
        session = self.store.open(session_id, request.session_hash if request else None)
        self.files.claim(session.id, [*images, video])
        with session.lock:
            progress(0, desc="Reading the upload")
            inputs = session.take_uploads([video]) if video else session.take_uploads(images)
            reconstruction = self.runner.reconstruct(
                inputs[0] if video else inputs,
                fps=(fps or DEFAULT_FPS) if video else None,
                max_frames=limit,
                points=view.points,
                conf_percentile=view.conf_percentile,
                max_points=view.max_points,
            )
            session.reconstruction = reconstruction
            scene, summary = self.show(session, view)
            choices = frame_choices(reconstruction.image_names)
            return (
                scene,
                summary,
                gr.Dropdown(choices=choices, value=[]),
                gr.Slider(minimum=0, maximum=max(len(choices) - 1, 1), value=0, step=1),
                *self.frame_outputs(session, 0),
                session.id,
            )

    # ------------------------------------------------------------------------------------------ views

    def show(self, session: Session, view: ViewOptions) -> tuple[str, str]:
        """Select the view's cloud from the cached reconstruction and write its scene; (GLB path, summary)."""
        session.shown = apply_view(session.reconstruction, view)
        session.show_cameras = view.show_cameras
        scene = write_scene(session.shown, session.fresh_dir("scene"), view.show_cameras)
        return self.files.hand_out(session.id, scene), summary_line(session.shown, self.runner.settings.device_text)

    def render(
        self,
        conf_percentile: float = DEFAULT_CONF_PERCENTILE,
        frames: list[str] | None = None,
        show_cameras: bool = True,
        points: str = DEFAULT_BRANCH,
        mask_black_background: bool = False,
        mask_white_background: bool = False,
        max_points: float = VIEW_MAX_POINTS,
        session_id: str | None = None,
    ):
        """Re-draw the cached reconstruction with other view settings (the model does not run)."""
        view = view_options(
            conf_percentile, frames, show_cameras, points, mask_black_background, mask_white_background, max_points
        )
        session = self.cached(session_id)
        with session.lock:
            return self.show(session, view)

    def frame(self, index: float = 0, session_id: str | None = None):
        """Frame `index`: its caption, image, depth and confidence."""
        session = self.cached(session_id)
        with session.lock:
            return self.frame_outputs(session, int(index))

    def step(self, index: float, session_id: str | None, delta: int) -> int:
        session = self.store.get(session_id)
        if session is None or session.shown is None:
            return 0
        return min(max(int(index) + delta, 0), session.shown.num_frames - 1)

    def downloads(self, session_id: str | None = None) -> list[str]:
        """The files to download for the view on screen (the GLB first; see vggt.apps.downloads)."""
        session = self.cached(session_id)
        with session.lock:
            folder = session.fresh_dir("downloads")
            scene = write_scene(session.shown, folder, session.show_cameras)
            return [self.files.hand_out(session.id, p) for p in write_downloads(session.shown, folder, scene)]

    # ------------------------------------------------------------------------------------------ the page

    def build(self) -> gr.Blocks:
        """The page with its events wired."""
        limits = PageLimits(self.settings.max_frames, self.settings.default_frames, tuple(self.settings.examples))
        # Gradio's own timed clean-up is off (it fails under concurrent use): GradioFiles deletes the copies.
        with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=None) as blocks:
            state = gr.State(None, time_to_live=self.settings.session_seconds, delete_callback=self.store.close)
            page = build_page(gr, limits, state)
            self.wire(page)
            blocks.unload(self.page_closed)
        return blocks

    def page_closed(self, request: gr.Request) -> None:
        """The visitor closed the page: delete their session's files."""
        self.store.close_page(request.session_hash)

    def wire(self, page: Page) -> None:
        """Connect the page's events to the handlers (one model run at a time, views up to RENDER_CONCURRENCY)."""
        guard = self.shown_to_user
        frame_views_out = [page.frame_caption, page.image, page.depth, page.confidence]
        inputs_in = [page.images, page.video, page.fps, page.max_frames, page.session]
        gr.on(
            [page.images.change, page.video.change, page.fps.submit, page.max_frames.release],
            guard(self.preview),
            inputs_in,
            [page.gallery, page.session],
            api_name="preview",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        page.example.input(guard(self.example), [page.example], [page.images, page.video], **private("example"))
        downloads = {"fn": guard(self.downloads), "inputs": [page.session], "outputs": [page.downloads]}
        page.reconstruct.click(
            guard(self.reconstruct),
            [page.images, page.video, page.fps, page.max_frames, *page.view_controls, page.session],
            [page.scene, page.summary, page.frames, page.frame_index, *frame_views_out, page.session],
            api_name="reconstruct",
            concurrency_limit=1,
            concurrency_id=MODEL_QUEUE,
        ).success(**downloads, api_name="downloads", concurrency_limit=RENDER_CONCURRENCY)
        view_events = [page.conf_percentile.release, page.max_points.release, page.frames.input]
        view_events += [page.show_cameras.input, page.branch.input, page.mask_black.input, page.mask_white.input]
        gr.on(
            view_events,
            guard(self.render),
            [*page.view_controls, page.session],
            [page.scene, page.summary],
            api_name="render",
            concurrency_limit=RENDER_CONCURRENCY,
        ).success(
            guard(self.frame), [page.frame_index, page.session], frame_views_out, **private("render_frame")
        ).success(**downloads, **private("render_downloads"), concurrency_limit=RENDER_CONCURRENCY)
        page.frame_index.change(
            guard(self.frame),
            [page.frame_index, page.session],
            frame_views_out,
            api_name="frame",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        for button, delta in ((page.previous, -1), (page.next, 1)):
            button.click(
                lambda i, s, d=delta: self.step(i, s, d),
                [page.frame_index, page.session],
                page.frame_index,
                **private(f"step_{button.value.lower()}"),
            )


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the server as Ctrl-C does, so that the sessions' files are deleted on the way out."""
    raise KeyboardInterrupt


def serve(app: DemoApp, host: str, port: int, share: bool, max_file_mb: int, allowed: Sequence[Path] = ()) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM), then delete every session's files and Gradio's cache
    folder (`app.files.root`, which must be GRADIO_TEMP_DIR already). `allowed`: the files (never folders) the
    page may serve besides its own (the example photos)."""
    from starlette.middleware import Middleware

    # pycolmap (glog) replaces the SIGTERM handler when it is first imported: import it before setting ours.
    importlib.import_module("pycolmap")
    signal.signal(signal.SIGTERM, interrupt)
    blocks = app.build()
    blocks.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    upload_limits = {
        "files": app.files,
        "request_bytes": app.settings.max_upload_bytes,
        "server_bytes": app.settings.max_server_bytes,
    }
    app.store.start_sweeping()
    try:
        blocks.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=f"{max_file_mb}mb",
            allowed_paths=[str(p) for p in allowed],
            show_error=False,
            ssr_mode=False,
            run_history=False,
            app_kwargs={"middleware": [Middleware(UploadLimit, **upload_limits)]},
        )
    except KeyboardInterrupt:
        # Gradio's own wait loop turns a stop into a normal return; a stop that comes while launch() is still
        # checking its server (before that loop) is the same request and must end the same way.
        pass
    finally:
        blocks.close(verbose=False)
        app.store.close_all()
        shutil.rmtree(app.files.root, ignore_errors=True)
