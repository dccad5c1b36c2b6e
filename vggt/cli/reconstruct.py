"""`vggt reconstruct INPUT --out DIR`: cameras, depth and a point cloud from photos or a video.

A thin layer over `vggt.reconstruct` and `Reconstruction.save`: each flag sets the `ReconstructOptions` field of
its name. torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

from vggt.cli.args import (
    add_image_arguments,
    add_merge_ratio_argument,
    add_message_arguments,
    add_model_arguments,
    add_subcommand,
    positive_float,
    positive_int,
)
from vggt.errors import DependencyError
from vggt.export.colmap import CAMERA_MODELS, DEFAULT_CAMERA_MODEL
from vggt.pipeline.options import (
    BA_BACKENDS,
    DEFAULT_CONF_PERCENTILE,
    DEFAULT_MAX_POINTS,
    POINT_SOURCES,
    TRACK_FILTER_OPTIONS,
    ReconstructOptions,
)
from vggt.utils.files import check_output_folder
from vggt.utils.locks import output_lock

OUTPUTS_HELP = """\
outputs in DIR:
  sparse/0/{cameras,images,points3D}.bin  COLMAP model: cameras at each photo's original size, points with
                                          multi-view tracks (colmap bundle_adjuster refines it)
  images/, images_2/, images_4/, images_8/ the input photos, named as given, and downscaled copies
  points.ply                              the point cloud (binary, xyz + rgb)
  scene.glb                               points and one camera frustum per image, for 3D viewers
  depth/<name>.npy, depth/<name>.png      float32 depth at the photo's resolution, and 16-bit PNG (value x 1e-3)
  depth_preview/<name>.png                colour previews of the depth
  cameras.json, transforms.json           cameras: ours (OpenCV axes) and nerfstudio's (OpenGL axes)
  predictions.npz                         the raw model outputs
  (the first camera is the world frame; outputs are up to an unknown scale unless cameras.json says
   "metric": true, as with --model pi3x; with --poses, the world frame and units are the given poses')

exit codes: 0 success, 2 bad input or usage, 1 anything else, 130 interrupted, 143 terminated
"""
EXPORT_MODULES = ("pycolmap", "trimesh", "cv2")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "reconstruct",
        run,
        help="cameras, depth and a point cloud from photos or a video",
        description="Reconstruct cameras, depth maps and a coloured point cloud from a folder of photos, "
        "several image files, or a video, and write them in formats other tools read.",
        epilog=OUTPUTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="a folder of images, image files, or one video")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it is not empty")

    model = add_model_arguments(parser)
    model.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="frames per chunk of the streaming pass (lower uses less memory; default: automatic)",
    )
    add_merge_ratio_argument(model)
    model.add_argument(
        "--offload",
        action="store_true",
        help="keep the aggregator outputs in CPU memory and stream them to the heads (thousands of frames on a GPU)",
    )
    model.add_argument(
        "--skip-memory-check",
        dest="memory_check",
        action="store_false",
        help="run even when the memory estimate says it will not fit",
    )
    images = add_image_arguments(parser, "at most this many frames (evenly spaced)")
    images.add_argument("--fps", type=positive_float, default=None, help="frames per second sampled from a video")

    cloud = parser.add_argument_group("point cloud")
    cloud.add_argument(
        "--points",
        choices=POINT_SOURCES,
        default="depth",
        help="depth: depth unprojected with the predicted cameras (default, more accurate); pointmap: point head",
    )
    cloud.add_argument(
        "--conf-percentile",
        type=float,
        default=DEFAULT_CONF_PERCENTILE,
        help=f"drop the least confident X %% of the pixels (default {DEFAULT_CONF_PERCENTILE:g})",
    )
    cloud.add_argument(
        "--max-points", type=positive_int, default=DEFAULT_MAX_POINTS, help=f"default {DEFAULT_MAX_POINTS}"
    )
    add_bundle_adjustment_arguments(parser)
    add_sequence_arguments(parser)
    add_output_arguments(parser)
    add_message_arguments(parser)
    return parser


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--camera-model, --shared-camera / --no-shared-camera, --no-colmap-points, --masks, --no-downscaled-images."""
    group = parser.add_argument_group("output folder")
    group.add_argument(
        "--camera-model",
        choices=CAMERA_MODELS,
        default=DEFAULT_CAMERA_MODEL,
        help=f"COLMAP camera model of every output (default {DEFAULT_CAMERA_MODEL}; SIMPLE_PINHOLE: one focal length)",
    )
    group.add_argument(
        "--shared-camera",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one camera for all frames (default: yes for a video, no for photos)",
    )
    group.add_argument(
        "--no-colmap-points",
        dest="colmap_points",
        action="store_false",
        help="COLMAP model with cameras and images only (for colmap point_triangulator or MVS)",
    )
    group.add_argument(
        "--masks", action="store_true", help="write masks/ (0 = low-confidence or background pixel, 255 = kept)"
    )
    group.add_argument(
        "--no-downscaled-images",
        dest="downscaled_images",
        action="store_false",
        help="skip images_2/, images_4/, images_8/ (and depth_N/, masks_N/), the copies trainers read",
    )


def add_sequence_arguments(parser: argparse.ArgumentParser) -> None:
    """Known intrinsics and windowed reconstruction of long sequences."""
    cameras = parser.add_argument_group("known cameras")
    cameras.add_argument(
        "--intrinsics",
        type=Path,
        default=None,
        metavar="FILE",
        help="known intrinsics instead of the predicted ones: a JSON file or COLMAP cameras.txt/.bin or model folder "
        "(see docs/dataset_format.md); distorted photos are undistorted first",
    )
    cameras.add_argument(
        "--refine-intrinsics", action="store_true", help="with --ba, let bundle adjustment refine known intrinsics"
    )
    cameras.add_argument(
        "--depth",
        type=Path,
        default=None,
        metavar="DIR",
        help="known depth for --model pi3x's conditioning: DIR/<photo name without extension>.npy, float32 at the "
        "photo's size, 0 where unknown",
    )
    cameras.add_argument(
        "--poses",
        type=Path,
        default=None,
        metavar="FILE",
        help="known camera poses of some or all photos: a JSON file (camera_to_world or world_to_camera per photo) "
        "or COLMAP images.txt/.bin or model folder (see docs/dataset_format.md); --model pi3x reads them in its "
        "network, and every model's outputs are moved into the poses' frame and units, posed cameras as given",
    )
    windows = parser.add_argument_group("long sequences")
    windows.add_argument(
        "--window", type=int, default=None, metavar="W", help="one forward pass per W frames (memory bounded by W)"
    )
    windows.add_argument(
        "--overlap", type=int, default=None, metavar="K", help="frames a window shares with the one before (W/4)"
    )
    windows.add_argument(
        "--loop-closure",
        nargs="?",
        const=True,
        default=False,
        type=loop_frames,
        metavar="EARLY:LATE",
        help="close a loop: alone, the last frames revisit the first ones; EARLY:LATE, frame LATE (0-based, in the "
        "sequence) revisits frame EARLY",
    )
    windows.add_argument("--resume", action="store_true", help="reuse the windows an interrupted run left beside DIR")


def loop_frames(text: str) -> tuple[int, int]:
    """`EARLY:LATE` as two ints."""
    early, _, late = text.partition(":")
    try:
        return int(early), int(late)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected EARLY:LATE frame positions, e.g. 0:250, got {text!r}") from None


def work_dir_for(out: Path) -> Path:
    """Where a windowed run keeps its windows, beside the output folder (kept for --resume until it succeeds)."""
    return out.parent / f".{out.name}.windows"


def add_bundle_adjustment_arguments(parser: argparse.ArgumentParser) -> None:
    """--ba and the track filters it applies (keys of `ba_options`, `vggt.ba.refine_with_ba`'s arguments)."""
    group = parser.add_argument_group("bundle adjustment")
    group.add_argument(
        "--ba", dest="bundle_adjust", action="store_true", help="refine cameras and points by bundle adjustment"
    )
    group.add_argument("--ba-vis-threshold", dest="vis_threshold", type=float, default=None, help="min visibility")
    group.add_argument("--ba-conf-threshold", dest="conf_threshold", type=float, default=None, help="min confidence")
    group.add_argument(
        "--ba-max-reproj-error", dest="max_reproj_error", type=float, default=None, help="max pixel error"
    )
    group.add_argument(
        "--ba-backend",
        choices=BA_BACKENDS,
        default="theseus",
        help="theseus (differentiable, the ba extra; default) or ceres (COLMAP's bundle adjuster through pycolmap)",
    )


# Destinations of this command's flags that are not ReconstructOptions fields: what to read and where to write,
# the messages, and the bundle-adjustment filters (gathered into `ba_options`). Names starting with "_" and
# "command" are the command-line plumbing (`vggt.cli.args.add_subcommand`, `vggt.cli.main`).
COMMAND_FLAGS = frozenset({"inputs", "out", "overwrite", "quiet", "verbose", "command", *TRACK_FILTER_OPTIONS})


def options_from_args(args: argparse.Namespace) -> ReconstructOptions:
    """The ReconstructOptions the flags set (each flag's destination is a field name, or one of COMMAND_FLAGS).

    A destination that is neither (a flag renamed on one side only) raises TypeError rather than being dropped.
    """
    fields = ReconstructOptions.field_names()
    unmatched = sorted(
        name for name in vars(args) if name not in fields and name not in COMMAND_FLAGS and not name.startswith("_")
    )
    if unmatched:
        raise TypeError(
            f"flags {unmatched} of vggt reconstruct match no ReconstructOptions field: rename the flag's dest to "
            "its field, or add it to COMMAND_FLAGS"
        )
    # Fields without a flag (processes, work_dir, ...) keep their defaults or are set below.
    chosen = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    ba_options = {name: getattr(args, name) for name in TRACK_FILTER_OPTIONS if getattr(args, name) is not None}
    work_dir = work_dir_for(args.out) if args.window is not None else None
    return ReconstructOptions(**chosen, ba_options=ba_options, work_dir=work_dir, progress=not args.quiet)


def local_files(*values: str | os.PathLike | None) -> list[Path]:
    """The values that name existing files or folders (a checkpoint may be a Hub id instead)."""
    return [Path(value) for value in values if value is not None and Path(value).exists()]


def check_export_dependencies() -> None:
    """The writers need pycolmap, trimesh and OpenCV: say so before the model runs, not after."""
    missing = [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise DependencyError(
            "missing {modules} for the exports: pip install 'vggt[export]'", modules=", ".join(missing)
        )


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun rank other than 0 computes its share, silently
        args.quiet = True
        logging.getLogger("vggt").setLevel(logging.ERROR)
    options = options_from_args(args)
    check_export_dependencies()
    from vggt.pipeline.api import reconstruct

    # Everything the run reads must survive it: --overwrite never deletes an input.
    check_output_folder(
        args.out,
        args.overwrite,
        [*args.inputs, *local_files(options.checkpoint, options.intrinsics, options.depth, options.poses)],
    )
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    # The windows beside the output are the run's too: one run at a time per output (torchrun ranks share it).
    lock = output_lock(args.out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        reconstruction = reconstruct(inputs, options=options)
        if reconstruction is None:  # a torchrun rank other than 0: rank 0 writes the outputs
            return 0
        reconstruction.save(args.out, overwrite=args.overwrite, progress=options.progress)
        if options.work_dir is not None:
            shutil.rmtree(options.work_dir, ignore_errors=True)
    if not args.quiet:
        seconds = time.perf_counter() - start
        print(f"vggt reconstruct: {reconstruction.summary(args.out, seconds)}")
    return 0
