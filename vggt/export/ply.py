"""Binary little-endian PLY point clouds: float32 x, y, z and uint8 red, green, blue per vertex."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLY_VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_header(num_points: int) -> bytes:
    """The ASCII header of a PLY file of `num_points` vertices as `write_ply` writes them."""
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by vggt",
        f"element vertex {num_points}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write points [N, 3] with colours [N, 3] uint8 (default grey) to `path`; return the path."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape [N, 3], got {points.shape}")
    if colors is None:
        colors = np.full(points.shape, 128, dtype=np.uint8)
    colors = np.asarray(colors)
    if colors.shape != points.shape:
        raise ValueError(f"colors must have the shape of points {points.shape}, got {colors.shape}")
    if colors.dtype != np.uint8:
        raise ValueError(f"colors must be uint8 (0..255), got {colors.dtype}")

    vertices = np.empty(len(points), dtype=PLY_VERTEX_DTYPE)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors[:, channel]

    path = Path(path)
    with open(path, "wb") as f:
        f.write(ply_header(len(points)))
        f.write(vertices.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back a file written by `write_ply`: (points [N, 3] float32, colours [N, 3] uint8)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY files written by vggt are read here")
    count = next(int(line.split()[-1]) for line in header if line.startswith("element vertex"))
    vertices = np.frombuffer(data, dtype=PLY_VERTEX_DTYPE, count=count, offset=end + len(b"end_header\n"))
    points = np.stack([vertices[n] for n in "xyz"], axis=1)
    colors = np.stack([vertices[n] for n in ("red", "green", "blue")], axis=1)
    return points, colors
