"""Writers for the outputs of a reconstruction: COLMAP, GLB, PLY, depth maps and cameras.json."""

from vggt.export.cameras import cameras_to_dict, write_cameras_json
from vggt.export.colmap import Observations, build_colmap_reconstruction, write_colmap
from vggt.export.depth import colorize_depth, unique_stems, write_depth_maps
from vggt.export.glb import build_scene, write_glb
from vggt.export.ply import read_ply, write_ply

__all__ = [
    "Observations",
    "build_colmap_reconstruction",
    "build_scene",
    "cameras_to_dict",
    "colorize_depth",
    "read_ply",
    "unique_stems",
    "write_cameras_json",
    "write_colmap",
    "write_depth_maps",
    "write_glb",
    "write_ply",
]
