"""`vggt evaluate`: run a model on scene folders with ground truth and write the paper's metrics.

    vggt evaluate --data DATASET_OR_SCENE --checkpoint facebook/VGGT-1B --out eval/

DATASET_OR_SCENE is a scene folder (cameras.json, images/, optional depth/, masks/ and tracks.npz; see
docs/dataset_format.md) or a folder of them. Writes OUT/metrics.json (every metric, per scene and overall) and
OUT/metrics.md (a table): cameras, depth and point maps, and TAP-Vid track metrics where a scene has tracks.npz
and the model a track head. The model runs as in `vggt reconstruct` (the same preprocessing and inference path),
at the resolution it was trained at unless --resolution says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vggt.cli.args import (
    add_image_arguments,
    add_merge_ratio_argument,
    add_message_arguments,
    add_model_arguments,
    add_subcommand,
)
from vggt.errors import DependencyError, InputError
from vggt.eval.depth import DEPTH_ALIGNMENTS
from vggt.eval.points import DEFAULT_MAX_POINTS
from vggt.models.config import DEFAULT_CHECKPOINT

DEFAULT_OUT = "vggt_eval"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "evaluate",
        run,
        help="score a model on scenes with ground-truth cameras, depth and tracks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, help="a scene folder, or a folder of scene folders")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the metrics.json and metrics.md in it")
    add_merge_ratio_argument(add_model_arguments(parser))
    add_image_arguments(parser, "evenly spaced frames per scene (default: all)")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument(
        "--depth-alignment", default="median", choices=DEPTH_ALIGNMENTS, help="per-frame depth scale alignment"
    )
    metrics.add_argument(
        "--max-points", type=int, default=DEFAULT_MAX_POINTS, help="points per scene for the Chamfer metrics"
    )
    add_message_arguments(parser)
    return parser


def scene_dirs(data: Path) -> list[Path]:
    from vggt.data.layout import CAMERAS_FILE
    from vggt.data.scene import list_scenes

    if not data.is_dir():
        raise InputError("{data} {path} is not a folder; give a scene folder or a folder of scene folders", path=data)
    if (data / CAMERAS_FILE).is_file():
        return [data]
    return list_scenes(data)


def check_output(out: Path, overwrite: bool = False) -> None:
    """The reports' folder: a folder (or nothing yet) without earlier reports, unless `overwrite`."""
    from vggt.eval.runner import METRICS_JSON, METRICS_MARKDOWN

    if out.exists() and not out.is_dir():
        raise InputError("{out} {path} exists and is not a folder; choose a folder for the reports", path=out)
    earlier = [name for name in (METRICS_JSON, METRICS_MARKDOWN) if (out / name).exists()]
    if earlier and not overwrite:
        raise InputError(
            "{out} {path} already holds {files}; pass {overwrite=True} to replace them, or choose another folder",
            path=out,
            files=" and ".join(earlier),
        )


def run(args: argparse.Namespace) -> int:
    for module in ("scipy", "tqdm"):
        try:
            __import__(module)
        except ImportError:
            raise DependencyError("vggt evaluate needs {module}: pip install 'vggt[eval]'", module=module) from None
    if args.max_points is not None and args.max_points < 3:
        raise InputError("{max_points} must be at least 3, got {value}", value=args.max_points)
    check_output(args.out, args.overwrite)
    scenes = scene_dirs(args.data)

    from vggt.eval.runner import EvalSettings, evaluate_scenes, write_report
    from vggt.pipeline.model_choice import load_model
    from vggt.utils.device import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    settings = EvalSettings(
        max_frames=args.max_frames,
        depth_alignment=args.depth_alignment,
        max_points=args.max_points,
        device=device,
        dtype=resolve_dtype(device, args.dtype),
        mode=args.mode,
        resolution=args.resolution,
        merge_ratio=args.merge_ratio,
    )
    model = load_model(args.model_name, args.checkpoint, args.preset, device)
    start = time.perf_counter()
    report = evaluate_scenes(model, scenes, settings, progress=not args.quiet)
    report["model"] = getattr(model, "registry_name", None) or ("vggt-1b" if args.preset is None else None)
    report["checkpoint"] = args.checkpoint or (None if args.preset or args.model_name else DEFAULT_CHECKPOINT)
    report["preset"] = args.preset
    json_path, md_path = write_report(report, args.out)
    if not args.quiet:
        camera = report["overall"].get("camera", {})
        auc = f", AUC@30 {camera['AUC@30']:.2f}" if camera else ""
        seconds = time.perf_counter() - start
        print(
            f"vggt evaluate: evaluated {len(scenes)} scene(s) in {seconds:.1f} s{auc}; wrote {json_path} and {md_path}",
            file=sys.stderr,
        )
    return 0
