"""Virtual KITTI 2 read in its published layout, as `Scene`s: no conversion step.

The layout (the rgb, depth and textgt archives unpacked into one root, as the reference's loader reads them):

    <root>/Scene01/clone/intrinsic.txt               header, then "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
    <root>/Scene01/clone/extrinsic.txt               header, then "frame cameraID" + the 4 x 4 camera-from-world
                                                     matrix row by row (OpenCV axes: x right, y down, z forward)
    <root>/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg
    <root>/Scene01/clone/frames/depth/Camera_0/depth_00000.png   16-bit, centimetres along the camera's z axis

One sequence (scene, variation such as `clone` or `fog`, camera) is one `Scene` named
`Scene01_clone_Camera_0`. Depth beyond `max_depth_m` (80 m, as the reference; the sky is stored as 655.35 m)
counts as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.data.scene import Frame, Scene
from vggt.errors import SceneFormatError

INTRINSIC_FILE = "intrinsic.txt"
EXTRINSIC_FILE = "extrinsic.txt"
DEPTH_SCALE_M = 0.01  # depth PNGs hold centimetres
MAX_DEPTH_M = 80.0


@dataclass
class VKitti2Sequence(Scene):
    """A `Scene` whose depth beyond `max_depth_m` reads as unknown (0)."""

    max_depth_m: float = MAX_DEPTH_M

    def read_frame(self, index: int, with_depth: bool = True, with_mask: bool = True) -> Frame:
        frame = super().read_frame(index, with_depth, with_mask)
        if frame.depth is not None:
            frame.depth = np.where(frame.depth <= self.max_depth_m, frame.depth, np.float32(0))
        return frame


def _camera_table(path: Path, camera: int, columns: int, name: str) -> np.ndarray:
    """Rows of `path` (header skipped) for one camera, in frame order: [N, columns]."""
    if not path.is_file():
        raise SceneFormatError("Virtual KITTI 2 sequence {name!r}: {path} is missing", name=name, path=path)
    table = np.loadtxt(path, skiprows=1, ndmin=2)
    if table.shape[1] != columns:
        raise SceneFormatError(
            "Virtual KITTI 2 {path}: expected {n} columns, found {found}", path=path, n=columns, found=table.shape[1]
        )
    rows = table[table[:, 1] == camera]
    return rows[np.argsort(rows[:, 0], kind="stable")]


def read_sequence(variation_dir: Path, camera: int) -> VKitti2Sequence:
    """One camera of one variation folder (e.g. `<root>/Scene01/clone`, camera 0) as a Scene."""
    name = f"{variation_dir.parent.name}_{variation_dir.name}_Camera_{camera}"
    intrinsics_rows = _camera_table(variation_dir / INTRINSIC_FILE, camera, 6, name)
    extrinsic_rows = _camera_table(variation_dir / EXTRINSIC_FILE, camera, 18, name)
    frames = intrinsics_rows[:, 0].astype(int)
    if not np.array_equal(frames, extrinsic_rows[:, 0].astype(int)):
        raise SceneFormatError("Virtual KITTI 2 sequence {name!r}: intrinsic and extrinsic frames differ", name=name)
    rgb_dir = variation_dir / "frames" / "rgb" / f"Camera_{camera}"
    depth_dir = variation_dir / "frames" / "depth" / f"Camera_{camera}"
    image_paths = [rgb_dir / f"rgb_{frame:05d}.jpg" for frame in frames]
    depth_paths = [depth_dir / f"depth_{frame:05d}.png" for frame in frames]
    missing = [path for path in image_paths if not path.is_file()]
    if missing:
        raise SceneFormatError("Virtual KITTI 2 sequence {name!r}: {path} is missing", name=name, path=missing[0])
    intrinsics = np.zeros((len(frames), 3, 3))
    intrinsics[:, 0, 0], intrinsics[:, 1, 1] = intrinsics_rows[:, 2], intrinsics_rows[:, 3]
    intrinsics[:, 0, 2], intrinsics[:, 1, 2] = intrinsics_rows[:, 4], intrinsics_rows[:, 5]
    intrinsics[:, 2, 2] = 1.0
    extrinsics = extrinsic_rows[:, 2:].reshape(-1, 4, 4)[:, :3, :]
    from PIL import Image

    with Image.open(image_paths[0]) as first:
        width, height = first.size
    return VKitti2Sequence(
        name=name,
        image_names=[path.name for path in image_paths],
        intrinsics=intrinsics,
        extrinsics=extrinsics,
        image_hw=np.tile([height, width], (len(frames), 1)),
        image_paths=image_paths,
        depth_paths=depth_paths if all(path.is_file() for path in depth_paths) else None,
        depth_scale=DEPTH_SCALE_M,
    )


def list_sequences(root: Path | str) -> list[VKitti2Sequence]:
    """Every (scene, variation, camera) sequence under a Virtual KITTI 2 root, sorted by name."""
    root = Path(root)
    sequences = []
    for rgb_camera in sorted(root.glob("*/*/frames/rgb/Camera_*")):
        variation_dir = rgb_camera.parents[2]
        sequences.append(read_sequence(variation_dir, int(rgb_camera.name.rsplit("_", 1)[1])))
    if not sequences:
        raise SceneFormatError(
            "{root} holds no Virtual KITTI 2 sequence (<root>/SceneXX/<variation>/frames/rgb/Camera_N)", root=root
        )
    return sequences
