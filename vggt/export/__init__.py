"""Writers for the outputs of a reconstruction: COLMAP, GLB, PLY and depth maps (cameras.json: vggt.data.layout)."""

from vggt.export.colmap import Observations, build_colmap_reconstruction, write_colmap
from vggt.export.depth import colorize_depth, write_depth_maps
from vggt.export.glb import build_scene, write_glb
from vggt.export.ply import read_ply, write_ply

__all__ = [
    "Observations",
    "build_colmap_reconstruction",
    "build_scene",
    "colorize_depth",
    "read_ply",
    "write_colmap",
    "write_depth_maps",
    "write_glb",
    "write_ply",
]
