"""`vggt import-colmap SPARSE_DIR IMAGES_DIR OUT_DIR`: a COLMAP model as a scene folder (vggt.data.colmap_import)."""

from __future__ import annotations

import argparse

from vggt.cli.args import add_subcommand
from vggt.data import colmap_import


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "import-colmap",
        colmap_import.run,
        help="convert a COLMAP sparse model into a scene folder (for training and evaluation)",
        description=colmap_import.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return colmap_import.add_arguments(parser)
