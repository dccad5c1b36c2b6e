"""`Cameras`: the one object that carries a set of pinhole cameras between modules.

Conventions are those of `vggt.utils.geometry`: OpenCV camera-from-world extrinsics (x right, y down, z forward),
pinhole intrinsics in pixels with pixel centres at integer coordinates, sizes as (width, height).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Our pixel (0, 0) has its centre at (0, 0); COLMAP (and SIFT keypoints) put it at (0.5, 0.5).
COLMAP_PIXEL_CENTER = 0.5


@dataclass(frozen=True)
class Cameras:
    """S named pinhole cameras.

    Attributes:
        names: S image names (file names relative to the scene's `images/` folder).
        extrinsics: [S, 3, 4] float64 camera-from-world `[R | t]`.
        intrinsics: [S, 3, 3] float64, in pixels of images of size `image_wh`.
        image_wh: [S, 2] int64 (width, height) of each image.
    """

    names: tuple[str, ...]
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    image_wh: np.ndarray

    def __init__(
        self, names: Sequence[str], extrinsics: np.ndarray, intrinsics: np.ndarray, image_wh: np.ndarray
    ) -> None:
        names = tuple(str(n) for n in names)
        count = len(names)
        extrinsics = np.asarray(extrinsics, dtype=np.float64)
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        image_wh = np.asarray(image_wh).astype(np.int64).reshape(-1, 2) if count else np.zeros((0, 2), np.int64)
        expected = {"extrinsics": (extrinsics, (count, 3, 4)), "intrinsics": (intrinsics, (count, 3, 3))}
        expected["image_wh"] = (image_wh, (count, 2))
        for label, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{count} camera names need {label} of shape {list(shape)}, got {list(array.shape)}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "extrinsics", extrinsics)
        object.__setattr__(self, "intrinsics", intrinsics)
        object.__setattr__(self, "image_wh", image_wh)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_hw(self) -> np.ndarray:
        """[S, 2] (height, width)."""
        return self.image_wh[:, ::-1].copy()

    def select(self, indices: Sequence[int] | np.ndarray) -> Cameras:
        """The cameras at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Cameras(
            [self.names[i] for i in indices], self.extrinsics[indices], self.intrinsics[indices], self.image_wh[indices]
        )

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.extrinsics).all() and np.isfinite(self.intrinsics).all())
