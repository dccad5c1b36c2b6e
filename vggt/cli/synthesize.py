"""`vggt synthesize --out DIR [--like CONFIG]`: synthetic scene folders with ground truth (vggt.data.synthetic)."""

from __future__ import annotations

import argparse

from vggt.cli.args import add_subcommand
from vggt.data import synthetic


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "synthesize",
        synthetic.run,
        help="write synthetic scenes with exact cameras, depth and tracks (held-out scenes for a training config)",
        description=synthetic.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return synthetic.add_arguments(parser)
