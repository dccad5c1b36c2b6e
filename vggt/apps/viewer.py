"""`vggt view`: a saved reconstruction in a browser 3D view (viser), read from its files alone (no model).

The point cloud (with a confidence-percentile slider, a point-size control and a frame selector that
re-select it from the saved predictions, `Reconstruction.select`), one camera frustum per photo textured with the
image the model saw (click one to look through it), and show/hide cameras. The world is VGGT's: OpenCV axes
(y down), the first camera at the origin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from vggt.export.glb import FRUSTUM_RELATIVE_DEPTH, frustum_color, scene_extent
from vggt.pipeline.reconstruction import Reconstruction
from vggt.utils.commands import write_line

logger = logging.getLogger(__name__)

ALL_FRAMES = "All frames"
# Points are drawn this fraction of the scene's extent wide by default; the slider spans POINT_SIZE_RANGE of that.
POINT_RELATIVE_SIZE = 0.002
POINT_SIZE_RANGE = (0.1, 10.0)
POINT_SIZE_STEPS = 100
# Frustum images are sent at most this many pixels wide (the model input is larger than a thumbnail needs).
THUMBNAIL_WIDTH = 160
CONF_MAX = 99
CONNECT_LINE = "vggt view: browser connected (client {client}); sent {points} points and {cameras} cameras"


def camera_poses(reconstruction: Reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """World-from-camera rotations [S, 3, 3] and camera centres [S, 3] of the camera-from-world extrinsics."""
    rotation = reconstruction.extrinsics[:, :, :3].astype(np.float64)
    translation = reconstruction.extrinsics[:, :, 3].astype(np.float64)
    world_from_camera = rotation.transpose(0, 2, 1)
    return world_from_camera, -np.einsum("sij,sj->si", world_from_camera, translation)


def thumbnail(image_chw: np.ndarray) -> np.ndarray:
    """[3, H, W] uint8 -> [h, w, 3] uint8 at most THUMBNAIL_WIDTH wide (every k-th pixel)."""
    step = max(1, int(np.ceil(image_chw.shape[-1] / THUMBNAIL_WIDTH)))
    return np.ascontiguousarray(image_chw[:, ::step, ::step].transpose(1, 2, 0))


class SceneViewer:
    """A viser server showing one reconstruction; `selection` is re-applied when a control changes."""

    def __init__(self, reconstruction: Reconstruction, host: str, port: int) -> None:
        import viser

        self.base = reconstruction
        self.shown = reconstruction
        self.extent = scene_extent(reconstruction.points)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.server.scene.set_up_direction("-y")
        self._lock = threading.Lock()
        self.clients = 0
        self.points = self.server.scene.add_point_cloud(
            "/points",
            reconstruction.points,
            reconstruction.colors,
            point_size=POINT_RELATIVE_SIZE * self.extent,
            point_shape="rounded",
        )
        self.frustums = self.add_cameras(viser.transforms.SO3)
        self.add_controls()
        self.server.on_client_connect(self.client_connected)

    def add_cameras(self, so3: type) -> list:
        """One frustum per photo at its camera, textured with the model input; a click looks through it."""
        rec = self.base
        rotations, centres = camera_poses(rec)
        frustums = []
        for i in range(rec.num_frames):
            width, height = (float(v) for v in rec.image_wh[i])
            fy = float(rec.intrinsics[i, 1, 1])
            frustum = self.server.scene.add_camera_frustum(
                f"/cameras/{i:04d}",
                fov=float(2 * np.arctan2(height / 2, fy)),
                aspect=width / height,
                scale=FRUSTUM_RELATIVE_DEPTH * self.extent,
                image=thumbnail(rec.predictions.images[i]),
                wxyz=so3.from_matrix(rotations[i]).wxyz,
                position=centres[i],
                color=tuple(int(c) for c in frustum_color(i, rec.num_frames)[:3]),
            )
            frustum.on_click(self.look_through(frustum))
            frustums.append(frustum)
        return frustums

    @staticmethod
    def look_through(frustum) -> Callable:
        def move(event) -> None:
            with event.client.atomic():
                event.client.camera.wxyz = frustum.wxyz
                event.client.camera.position = frustum.position

        return move

    def add_controls(self) -> None:
        gui = self.server.gui
        gui.add_markdown(f"**{self.base.num_frames} frames**, saved cloud: {self.base.num_points} points")
        self.conf = gui.add_slider(
            "Confidence percentile", 0, CONF_MAX, 1, int(round(self.base.selection.conf_percentile))
        )
        base_size = POINT_RELATIVE_SIZE * self.extent
        low, high = (base_size * f for f in POINT_SIZE_RANGE)
        self.size = gui.add_slider("Point size", low, high, (high - low) / POINT_SIZE_STEPS, base_size)
        self.frame = gui.add_dropdown("Points from", [ALL_FRAMES, *self.base.image_names], initial_value=ALL_FRAMES)
        self.show_cameras = gui.add_checkbox("Show cameras", True)
        self.conf.on_update(lambda _: self.reselect())
        self.frame.on_update(lambda _: self.reselect())
        self.size.on_update(lambda _: setattr(self.points, "point_size", float(self.size.value)))
        self.show_cameras.on_update(lambda _: self.set_cameras_visible(bool(self.show_cameras.value)))

    def reselect(self) -> None:
        """Choose the cloud anew from the saved predictions with the controls' values."""
        frames = None if self.frame.value == ALL_FRAMES else (self.base.image_names.index(self.frame.value),)
        with self._lock:
            self.shown = self.base.select(conf_percentile=float(self.conf.value), frames=frames)
            with self.server.atomic():
                self.points.points = self.shown.points
                self.points.colors = self.shown.colors

    def set_cameras_visible(self, visible: bool) -> None:
        for frustum in self.frustums:
            frustum.visible = visible

    def client_connected(self, client) -> None:
        self.clients += 1
        write_line(
            CONNECT_LINE.format(client=client.client_id, points=self.shown.num_points, cameras=len(self.frustums))
        )

    def stop(self) -> None:
        self.server.stop()


def serve_viewer(reconstruction: Reconstruction, host: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve `reconstruction` at http://host:port until interrupted (or until `stop` is set)."""
    viewer = SceneViewer(reconstruction, host, port)
    write_line(f"vggt view: {reconstruction.summary()}; open http://{host}:{port} in a browser (Ctrl-C stops)")
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        viewer.stop()
