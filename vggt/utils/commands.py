"""What every command-line entry point shares: one-line error messages in flag names, exit codes, log lines,
signals.

`run_main(parser, run, argv)` parses `argv`, routes the `vggt` and `training` loggers to one line per message on
stderr (drawn so that progress bars stay intact; messages that are `vggt.errors.Message`s in flag names), calls
`run(args)`, and turns a `VGGTError` into one line `<prog>: error: <message>` with Python argument names replaced
by the parser's flags (`max_frames` -> `--max-frames`), returning its exit code. SIGTERM is raised as
`vggt.errors.Terminated`, like Ctrl-C, so that clean-up (staging folders) runs; they exit with 143 and 130.
Anything else unexpected is one line too, unless `-v` asks for the traceback. Used by `vggt` and its
subcommands, `python -m training.train` and `python -m vggt.data.colmap_import`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from vggt.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Message,
    Terminated,
    VGGTError,
)
from vggt.utils.optional import GLOG_LEVEL_VARIABLE

# Loggers whose records the commands print.
LOGGER_NAMES = ("vggt", "training")
# pycolmap's (glog) minimum severity: errors only with -q, warnings by default, everything with -v.
GLOG_LEVELS = {"quiet": "2", "default": "1", "verbose": "0"}


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python argument name (an action's `dest`) -> its longest option string, e.g. `max_frames` -> `--max-frames`."""
    names = {}
    for action in parser._actions:
        if action.option_strings:
            names[action.dest] = max(action.option_strings, key=len)
        elif action.dest not in (argparse.SUPPRESS, None):
            names[action.dest] = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return names


class _OneLineHandler(logging.Handler):
    """`<prog>: <level>: <message>` on stderr, written through tqdm so that progress bars are redrawn below."""

    def __init__(self, prog: str, names: Mapping[str, str]) -> None:
        super().__init__()
        self.prog = prog
        self.names = names

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if isinstance(record.msg, Message) and not record.args:
                text = record.msg.render(self.names)
            else:
                text = record.getMessage()
            write_line(f"{self.prog}: {record.levelname.lower()}: {text}")
        except Exception:
            self.handleError(record)


def write_line(text: str) -> None:
    """One line on stderr that does not break a progress bar being drawn."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(text, file=sys.stderr)
        return
    tqdm.write(text, file=sys.stderr)


@contextlib.contextmanager
def command_logging(
    prog: str, verbose: int = 0, quiet: bool = False, names: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Route LOGGER_NAMES to one-line stderr messages: warnings by default, info with -v, debug with -vv;
    third-party C++ logging (pycolmap) follows the same choice."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    os.environ[GLOG_LEVEL_VARIABLE] = GLOG_LEVELS["quiet" if quiet else "verbose" if verbose else "default"]
    handler = _OneLineHandler(prog, names or {})
    saved = []
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, previous_level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)
            logger.propagate = propagate


def report(prog: str, error: VGGTError, parser: argparse.ArgumentParser | None) -> int:
    """Print `error` as one line in the parser's flag names; return its exit code."""
    names = flag_names(parser) if parser is not None else {}
    write_line(f"{prog}: error: {error.render(names)}")
    return error.exit_code


@contextlib.contextmanager
def termination_as_exception() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread (as SIGINT raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int | None] | None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` and call `run(args)` (or the `_run` a subcommand set), reporting errors as described above.

    Subcommands set `_run`, `_parser` (for the flag names) and `_prog` defaults on their parsers.
    """
    args = parser.parse_args(argv)
    run = getattr(args, "_run", run)
    command_parser = getattr(args, "_parser", parser)
    prog = getattr(args, "_prog", parser.prog)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    names = flag_names(command_parser)
    with command_logging(prog, verbose, quiet, names), termination_as_exception():
        try:
            return int(run(args) or 0)
        except VGGTError as error:
            return report(prog, error, command_parser)
        except Terminated:
            write_line(f"{prog}: terminated (SIGTERM); partial outputs were removed")
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            write_line(f"{prog}: interrupted; partial outputs were removed")
            return EXIT_INTERRUPTED
        except Exception as error:  # the last line of defence: one line, not a traceback
            if verbose:
                raise
            write_line(f"{prog}: error: {type(error).__name__}: {error} (run with -v for the traceback)")
            return EXIT_FAILURE


def exit_with(code: int) -> None:
    """End a `python -m` entry point with `code` (as argparse does for usage errors)."""
    raise SystemExit(code)
