"""`vggt` console entry point: dispatches to subcommands.

Each subcommand module exposes `add_parser(subparsers)`. Exit codes: 0 success, 2 bad input or usage, 1 anything
else (see vggt.errors and vggt.utils.commands).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vggt.utils.commands import run_main
from vggt.version import __version__

SUBCOMMAND_MODULES = (
    "vggt.cli.reconstruct",
    "vggt.cli.evaluate",
    "vggt.cli.train",
    "vggt.cli.import_colmap",
    "vggt.cli.demo",
    "vggt.cli.view",
    "vggt.cli.synthesize",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vggt", description="VGGT: cameras, depth and points from images.")
    parser.add_argument("--version", action="version", version=f"vggt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), None, argv)


if __name__ == "__main__":
    sys.exit(main())
