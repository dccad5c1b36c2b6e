"""Argument groups every `vggt` subcommand shares, so that each flag has one spelling, default and help text.

A flag's destination is the name of the Python argument it sets (`--max-frames` -> `max_frames`), which is also
how `vggt.utils.commands` turns the library's error messages into flag names.
"""

from __future__ import annotations

import argparse

from vggt.models.config import DEFAULT_CHECKPOINT
from vggt.pipeline.options import MODES
from vggt.utils.device import DEVICE_CHOICES, DTYPE_CHOICES


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--model, --checkpoint, --preset, --device, --dtype."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        dest="model_name",
        default=None,
        metavar="NAME",
        help="vggt-1b (default), vggt-omega-1b-512, vggt-omega-1b-256-text, pi3 or pi3x (its released weights "
        "from the Hub, or --checkpoint), or a small preset with RANDOM weights for tests (vggt-tiny, pi3-tiny, "
        "pi3x-tiny, vggt-omega-tiny, vggt-omega-text-tiny); see docs/models.md",
    )
    group.add_argument(
        "--checkpoint",
        default=None,
        help=f"Hub id, folder or weights file (.safetensors/.pt) of the model; default its released weights "
        f"({DEFAULT_CHECKPOINT} for VGGT; for offline runs, pass a local path)",
    )
    group.add_argument(
        "--preset",
        default=None,
        help="VGGT architecture preset (e.g. tiny); without --checkpoint it runs with RANDOM weights (for testing)",
    )
    group.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default auto)")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="compute precision (default auto)")
    return group


def add_merge_ratio_argument(group: argparse._ArgumentGroup) -> None:
    """--merge-ratio (the fast mode), shared by reconstruct and evaluate so that its cost in accuracy can be scored."""
    group.add_argument(
        "--merge-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="fast mode: merge this fraction (0-0.5) of the patch tokens in global attention (approximate; 0 exact)",
    )


def add_image_arguments(parser: argparse.ArgumentParser, max_frames_help: str) -> argparse._ArgumentGroup:
    """--mode, --resolution, --max-frames."""
    group = parser.add_argument_group("images")
    group.add_argument("--mode", choices=MODES, default="crop", help="crop (default) or pad the photos to the model")
    # The library checks these values (and says why in the flags' names).
    group.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="model input width (crop) or longer side (pad), multiple of 14 (default: the resolution the model was "
        "trained at, 518 for VGGT-1B; lower is faster)",
    )
    group.add_argument("--max-frames", type=int, default=None, help=max_frames_help)
    return group


def add_message_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """-v/--verbose, -q/--quiet."""
    group = parser.add_argument_group("messages")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more messages and a traceback on errors (-vv: debug)"
    )
    group.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    return group


def add_subcommand(subparsers: argparse._SubParsersAction, name: str, run, **parser_options) -> argparse.ArgumentParser:
    """A subcommand parser whose `run` and flag names `vggt.utils.commands.run_main` uses."""
    parser = subparsers.add_parser(name, **parser_options)
    parser.set_defaults(_run=run, _parser=parser, _prog=f"vggt {name}")
    return parser
