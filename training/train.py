"""Command-line entry point of training (also `vggt train`).

    python -m training.train --config configs/tiny_synthetic.yaml run_dir=runs/demo optim.max_steps=50
    torchrun --nproc_per_node=8 -m training.train --config configs/finetune_custom.yaml
    python -m training.train --config configs/tiny_synthetic.yaml --resume      # continue the latest checkpoint
    python -m training.train --export runs/demo runs/demo_model   # newest checkpoint -> VGGT.from_pretrained folder

The configuration (YAML plus `dotted.key=value` overrides) is described in `training.config`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import DEFAULT_CONFIG, load_config, parse_override
from vggt.errors import InputError, VGGTError
from vggt.utils.commands import run_main

__all__ = ["DEFAULT_CONFIG", "add_arguments", "load_config", "main", "parse_override", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vggt train` and `python -m training.train`."""
    parser.add_argument("--config", help="YAML config, e.g. configs/tiny_synthetic.yaml (required to train)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run_dir")
    parser.add_argument("--resume-from", type=Path, default=None, help="continue from this checkpoint directory")
    parser.add_argument(
        "--export",
        nargs=2,
        type=Path,
        metavar=("SOURCE", "OUT"),
        help="write the newest checkpoint of run folder SOURCE (or checkpoint folder SOURCE) as a model folder OUT",
    )
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    return parser


def run(args: argparse.Namespace) -> int:
    from training.distributed import cleanup_distributed
    from training.trainer import Trainer

    if args.export:
        from training.checkpoint import export_checkpoint

        print(f"[train] exported {export_checkpoint(*args.export)}")
        return 0
    if args.config is None:
        raise InputError("pass --config FILE to train (or --export SOURCE OUT to export a checkpoint)")
    try:
        config = load_config(args.config, args.overrides)
        trainer = Trainer(config, resume=args.resume_from or args.resume)
        expected = config["distributed"]["expected_world_size"]
        if expected and expected != trainer.ctx.world_size and trainer.ctx.is_main:
            print(
                f"[train] warning: this recipe expects {expected} processes, running with {trainer.ctx.world_size}: "
                "the global batch differs from the recipe's",
                file=sys.stderr,
            )
        summary = trainer.train()
        if trainer.ctx.is_main and summary:
            print(f"[train] done: step {summary['step']} loss {summary['loss']:.4f} -> {trainer.run_dir}")
    except VGGTError:
        raise
    except (ValueError, FileNotFoundError) as err:  # a config value the trainer refuses, naming its key
        raise InputError("{error}", error=err) from None
    finally:
        cleanup_distributed()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m training.train`: exits the process with the command's exit code."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    sys.exit(run_main(add_arguments(parser), run, argv))


if __name__ == "__main__":
    main()
