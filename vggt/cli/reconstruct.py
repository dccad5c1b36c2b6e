"""`vggt reconstruct INPUT --out DIR`: cameras, depth and a point cloud from photos or a video.

A thin layer over `vggt.pipeline.reconstruct` and `Reconstruction.save`; torch is imported only when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from vggt.cli.main import UsageError
from vggt.pipeline.options import (
    DEFAULT_CHECKPOINT,
    DEFAULT_CONF_PERCENTILE,
    DEFAULT_MAX_POINTS,
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    MODES,
    POINT_SOURCES,
)

OUTPUTS_HELP = """\
outputs in DIR:
  sparse/0/{cameras,images,points3D}.bin  COLMAP model (PINHOLE cameras at each photo's original size)
  images/                                 the input photos, named as given (gsplat/nerfstudio can train on DIR)
  points.ply                              the point cloud (binary, xyz + rgb)
  scene.glb                               points and one camera frustum per image, for 3D viewers
  depth/<name>.npy, depth/<name>.png      float32 depth at the photo's resolution, and a colour preview
  cameras.json                            per image: file name, size, 3x4 extrinsic, 3x3 intrinsic
  predictions.npz                         the raw model outputs

exit codes: 0 success, 2 bad input or usage, 1 anything else
"""


class _TqdmHandler(logging.Handler):
    """One line per message on stderr, written so that it does not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(f"vggt reconstruct: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _cli_logging(verbose: int, quiet: bool) -> Iterator[None]:
    """Route the `vggt` loggers to one-line stderr messages for the duration of the command."""
    if quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logger = logging.getLogger("vggt")
    saved = logger.level, logger.propagate
    handler = _TqdmHandler()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reconstruct",
        help="cameras, depth and a point cloud from photos or a video",
        description="Reconstruct cameras, depth maps and a coloured point cloud from a folder of photos, "
        "several image files, or a video, and write them in formats other tools read.",
        epilog=OUTPUTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="a folder of images, image files, or one video")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it is not empty")

    model = parser.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        default=None,
        help=f"Hub id, folder or weights file (.safetensors/.pt); default {DEFAULT_CHECKPOINT} "
        "(for offline runs, pass a local path)",
    )
    model.add_argument(
        "--preset",
        default=None,
        help="architecture preset (e.g. tiny); without --checkpoint it runs with RANDOM weights (for testing)",
    )
    model.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default auto)")
    model.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="compute precision (default auto)")
    model.add_argument(
        "--chunk-size", type=_positive_int, default=None, help="frames per dense-head chunk (lower uses less memory)"
    )
    model.add_argument(
        "--skip-memory-check", action="store_true", help="run even when the memory estimate says it will not fit"
    )

    images = parser.add_argument_group("images")
    images.add_argument("--mode", choices=MODES, default="crop", help="crop (default) or pad the photos to the model")
    images.add_argument(
        "--resolution",
        type=_positive_int,
        default=None,
        help="model input width (crop) or longer side (pad), multiple of 14 (default 518; lower is faster)",
    )
    images.add_argument("--fps", type=_positive_float, default=None, help="frames per second sampled from a video")
    images.add_argument(
        "--max-frames", type=_positive_int, default=None, help="at most this many frames (evenly spaced)"
    )

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
        "--max-points", type=_positive_int, default=DEFAULT_MAX_POINTS, help=f"default {DEFAULT_MAX_POINTS}"
    )
    cloud.add_argument("--ba", action="store_true", help="refine cameras and points by bundle adjustment (vggt[ba])")

    output = parser.add_argument_group("messages")
    output.add_argument(
        "-v", "--verbose", action="count", default=0, help="more messages and a traceback on errors (-vv: debug)"
    )
    output.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    return parser


def _check_export_dependencies() -> None:
    """The writers need pycolmap, trimesh and OpenCV: say so before the model runs, not after."""
    import importlib.util

    missing = [name for name in ("pycolmap", "trimesh", "cv2") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} for the exports: pip install 'vggt[export]'")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    progress = not args.quiet
    _check_export_dependencies()
    from vggt.device import InsufficientMemoryError
    from vggt.pipeline import InputError, check_output_dir, reconstruct

    with _cli_logging(args.verbose, args.quiet):
        try:
            check_output_dir(args.out, args.overwrite, args.inputs)
            inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
            reconstruction = reconstruct(
                inputs,
                checkpoint=args.checkpoint,
                preset=args.preset,
                device=args.device,
                dtype=args.dtype,
                mode=args.mode,
                resolution=args.resolution,
                points=args.points,
                conf_percentile=args.conf_percentile,
                max_points=args.max_points,
                chunk_size=args.chunk_size,
                fps=args.fps,
                max_frames=args.max_frames,
                bundle_adjust=args.ba,
                memory_check=not args.skip_memory_check,
                progress=progress,
            )
            reconstruction.save(args.out, overwrite=args.overwrite, progress=progress)
        except (InputError, InsufficientMemoryError) as err:
            raise UsageError(str(err)) from None
    if not args.quiet:
        seconds = time.perf_counter() - start
        print(f"vggt reconstruct: {reconstruction.summary(args.out, seconds)}")
    return 0
