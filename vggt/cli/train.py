"""`vggt train --config CONFIG [key=value ...]`: training and fine-tuning (the same as `python -m training.train`)."""

from __future__ import annotations

import argparse

from training import train
from vggt.cli.args import add_subcommand


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "train",
        train.run,
        help="train or fine-tune on scene folders or synthetic scenes (configs/*.yaml)",
        description=train.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return train.add_arguments(parser)
