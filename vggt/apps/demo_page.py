"""The demo page's components, laid out inside a `gr.Blocks`; `vggt.apps.demo` wires their events.

Left: the inputs (photos or one video, frame sampling, example scenes, a preview gallery) and the Reconstruct
button, then the view controls. Right: the 3D scene, the summary, the per-frame views and the downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vggt.apps.views import VIEW_MAX_POINTS
from vggt.pipeline.options import DEFAULT_CONF_PERCENTILE

# The page's names for the two point sources (what `Reconstruction.select(points=...)` takes).
POINT_BRANCHES = {"Depth and camera": "depth", "Point map": "pointmap"}
DEFAULT_BRANCH = "Depth and camera"
DEFAULT_FPS = 1.0
MAX_FPS = 30.0
POINT_RANGE = (1_000, 2_000_000)
POINT_STEP = 1_000
CONF_STEP = 1.0
TITLE = "VGGT: 3D from photos"
INTRO = (
    "Upload several photos of a scene (or one video), then **Reconstruct**: VGGT predicts every camera, a depth "
    "map per photo and a coloured point cloud in one forward pass. The view controls re-draw the scene from the "
    "cached predictions without running the model again."
)
SCENE_HEIGHT = 520
FRAME_PAGE_HEIGHT = 220
GALLERY_COLUMNS = 4


@dataclass(frozen=True)
class PageLimits:
    """The most frames one run may use (the frame slider's top), its default, and the example scene names."""

    max_frames: int
    default_frames: int
    examples: tuple[str, ...] = ()


@dataclass
class Page:
    """The components of the demo page (see the module docstring)."""

    session: Any
    images: Any
    video: Any
    fps: Any
    max_frames: Any
    example: Any
    gallery: Any
    reconstruct: Any
    conf_percentile: Any
    frames: Any
    show_cameras: Any
    branch: Any
    mask_black: Any
    mask_white: Any
    max_points: Any
    scene: Any
    summary: Any
    frame_index: Any
    previous: Any
    next: Any
    frame_caption: Any
    image: Any
    depth: Any
    confidence: Any
    downloads: Any

    @property
    def view_controls(self) -> list[Any]:
        """The controls of the 3D view, in the order of the render handler's parameters."""
        return [
            self.conf_percentile,
            self.frames,
            self.show_cameras,
            self.branch,
            self.mask_black,
            self.mask_white,
            self.max_points,
        ]


def input_column(gr: Any, limits: PageLimits) -> dict[str, Any]:
    """Photos or a video, frame sampling, examples, the preview and the Reconstruct button."""
    parts = {
        "images": gr.File(label="Photos", file_count="multiple", file_types=["image"]),
        "video": gr.File(label="Or one video", file_count="single", file_types=["video"]),
    }
    with gr.Row():
        parts["fps"] = gr.Number(
            label="Video frames per second", value=DEFAULT_FPS, minimum=0.01, maximum=MAX_FPS, step=0.5
        )
        parts["max_frames"] = gr.Slider(
            1, limits.max_frames, value=limits.default_frames, step=1, label="Maximum frames"
        )
    parts["example"] = gr.Dropdown(
        choices=list(limits.examples), value=None, label="Or an example scene", visible=bool(limits.examples)
    )
    parts["gallery"] = gr.Gallery(label="Preview", columns=GALLERY_COLUMNS, height="auto", object_fit="contain")
    parts["reconstruct"] = gr.Button("Reconstruct", variant="primary")
    return parts


def view_column(gr: Any) -> dict[str, Any]:
    """The controls that re-draw the 3D scene from the cached predictions."""
    parts = {
        "conf_percentile": gr.Slider(
            0,
            100 - CONF_STEP,
            value=DEFAULT_CONF_PERCENTILE,
            step=CONF_STEP,
            label="Confidence percentile",
            info="drop the least confident X % of the pixels",
        ),
        "frames": gr.Dropdown(
            choices=[], value=[], multiselect=True, label="Show points from frames", info="none chosen: all frames"
        ),
        "show_cameras": gr.Checkbox(value=True, label="Show cameras"),
        "branch": gr.Radio(list(POINT_BRANCHES), value=DEFAULT_BRANCH, label="Points from"),
    }
    with gr.Row():
        parts["mask_black"] = gr.Checkbox(value=False, label="Mask near-black background")
        parts["mask_white"] = gr.Checkbox(value=False, label="Mask near-white background")
    parts["max_points"] = gr.Slider(*POINT_RANGE, value=VIEW_MAX_POINTS, step=POINT_STEP, label="Maximum points")
    return parts


def result_column(gr: Any) -> dict[str, Any]:
    """The 3D scene, the summary, the per-frame views with previous / next, and the downloads."""
    parts = {
        "scene": gr.Model3D(label="3D scene", height=SCENE_HEIGHT, clear_color=(1.0, 1.0, 1.0, 1.0)),
        "summary": gr.Markdown("Nothing reconstructed yet.", label="Summary", elem_id="vggt-summary"),
    }
    with gr.Row():
        parts["previous"] = gr.Button("Previous", size="sm")
        parts["frame_index"] = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=True)
        parts["next"] = gr.Button("Next", size="sm")
    parts["frame_caption"] = gr.Markdown("", label="Frame caption", elem_id="vggt-frame-caption")
    with gr.Row():
        parts["image"] = gr.Image(label="Image", height=FRAME_PAGE_HEIGHT, interactive=False)
        parts["depth"] = gr.Image(label="Depth (near is red)", height=FRAME_PAGE_HEIGHT, interactive=False)
        parts["confidence"] = gr.Image(
            label="Confidence (bright is confident)", height=FRAME_PAGE_HEIGHT, interactive=False
        )
    parts["downloads"] = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="vggt-downloads")
    return parts


def build_page(gr: Any, limits: PageLimits, state: Any) -> Page:
    """Lay the page out inside the current `gr.Blocks`; `state` is the session's `gr.State`."""
    gr.Markdown(f"# {TITLE}\n{INTRO}")
    with gr.Row():
        with gr.Column(scale=1):
            inputs = input_column(gr, limits)
            with gr.Accordion("View", open=True):
                view = view_column(gr)
        with gr.Column(scale=2):
            results = result_column(gr)
    return Page(session=state, **inputs, **view, **results)
