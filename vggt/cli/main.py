"""`vggt` console entry point: dispatches to subcommands.

Each subcommand module exposes `add_parser(subparsers)` and `run(args) -> int`. Exit codes:
0 success, 2 bad input or usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = ("vggt.cli.reconstruct", "vggt.cli.evaluate")


class UsageError(Exception):
    """Bad input or usage: reported in one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vggt", description="VGGT: cameras, depth and points from images.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        module = importlib.import_module(module_name)
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"vggt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vggt {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # the last line of defence: one line, not a traceback
        if getattr(args, "verbose", 0):
            raise
        message = f"{type(err).__name__}: {err} (run with -v for the traceback)"
        print(f"vggt {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run through the imported module so that subcommands raise the same UsageError class.
    from vggt.cli.main import main as _main

    sys.exit(_main())
