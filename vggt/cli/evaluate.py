"""`vggt evaluate`: run a model on scene folders with ground truth and write the paper's metrics.

    vggt evaluate --data DATASET_OR_SCENE --checkpoint facebook/VGGT-1B --out eval/

DATASET_OR_SCENE is a scene folder (cameras.json, images/, optional depth/ and masks/; see
docs/dataset_format.md) or a folder of them. Writes OUT/metrics.json (every metric, per scene and overall) and
OUT/metrics.md (a table).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from vggt.cli.main import UsageError

DEFAULT_CHECKPOINT = "facebook/VGGT-1B"
DEFAULT_OUT = "vggt_eval"

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vggt.eval.depth import DEPTH_ALIGNMENTS
    from vggt.eval.points import DEFAULT_MAX_POINTS
    from vggt.pipeline.options import DEVICE_CHOICES, DTYPE_CHOICES

    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on scenes with ground-truth cameras and depth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, help="a scene folder, or a folder of scene folders")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help=f"Hub id, directory or weights file (default {DEFAULT_CHECKPOINT}; with only --preset: random weights)",
    )
    parser.add_argument("--preset", default=None, help="architecture preset, e.g. tiny (see vggt.models.config)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="compute precision of the aggregator")
    parser.add_argument("--max-frames", type=int, default=None, help="evenly spaced frames per scene (default: all)")
    parser.add_argument(
        "--depth-alignment", default="median", choices=DEPTH_ALIGNMENTS, help="per-frame depth scale alignment"
    )
    parser.add_argument(
        "--max-points", type=int, default=DEFAULT_MAX_POINTS, help="points per scene for the Chamfer metrics"
    )
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="full tracebacks on errors")
    return parser


def _scene_dirs(data: Path) -> list[Path]:
    from vggt.data.scene import CAMERAS_FILE, list_scenes

    if not data.is_dir():
        raise UsageError(f"--data {data} is not a folder; give a scene folder or a folder of scene folders")
    if (data / CAMERAS_FILE).is_file():
        return [data]
    try:
        return list_scenes(data)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _load_model(args: argparse.Namespace, device):
    from vggt.models.vggt import VGGT

    if args.checkpoint is None and args.preset is not None:
        logger.warning("no --checkpoint: evaluating the %s preset with RANDOM weights", args.preset)
        return VGGT.from_preset(args.preset).to(device)
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    return VGGT.from_pretrained(checkpoint, preset=args.preset, device=device)


def run(args: argparse.Namespace) -> int:
    for missing in ("scipy", "tqdm"):
        try:
            __import__(missing)
        except ImportError:
            raise UsageError(f"vggt evaluate needs {missing}: pip install 'vggt[eval]'") from None
    from vggt.data.scene import SceneFormatError
    from vggt.device import resolve_device, resolve_dtype
    from vggt.eval.runner import EvalSettings, evaluate_scenes, write_report
    from vggt.models.checkpoint import CheckpointError
    from vggt.utils.images import ImageReadError

    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.max_points is not None and args.max_points < 3:
        raise UsageError(f"--max-points must be at least 3, got {args.max_points}")
    scene_dirs = _scene_dirs(args.data)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(device, args.dtype)
        model = _load_model(args, device)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        raise UsageError(str(err)) from None

    settings = EvalSettings(
        max_frames=args.max_frames,
        depth_alignment=args.depth_alignment,
        max_points=args.max_points,
        device=device,
        dtype=dtype,
    )
    start = time.perf_counter()
    try:
        report = evaluate_scenes(model, scene_dirs, settings, progress=not args.quiet)
    except (SceneFormatError, ImageReadError) as err:
        raise UsageError(str(err)) from None
    report["checkpoint"] = args.checkpoint or (None if args.preset else DEFAULT_CHECKPOINT)
    report["preset"] = args.preset
    json_path, md_path = write_report(report, args.out)
    if not args.quiet:
        camera = report["overall"].get("camera", {})
        auc = f", AUC@30 {camera['AUC@30']:.2f}" if camera else ""
        print(
            f"evaluated {len(scene_dirs)} scene(s) in {time.perf_counter() - start:.1f} s{auc}; "
            f"wrote {json_path} and {md_path}",
            file=sys.stderr,
        )
    return 0
