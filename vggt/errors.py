"""The one family of errors `vggt` raises for problems a user can fix.

Every message says what is wrong and how to fix it. Library code names Python arguments; the command line names
its flags. Both come from one message template: `{name}` stands for argument `name` (`max_frames` in Python,
`--max-frames` on the command line), `{name=value}` for passing a value (`mode=crop` / `--mode crop`, and for
booleans `overwrite=True` / `--overwrite`).
Values inserted into a message are keyword arguments of the error, so braces inside them (paths) are kept as
they are.

    raise InputError("{conf_percentile} must be in [0, 100), got {value}", value=conf_percentile)
    str(err)                                   # "conf_percentile must be in [0, 100), got 100"
    err.render({"conf_percentile": "--conf-percentile"})  # "--conf-percentile must be in [0, 100), got 100"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Exit codes of the `vggt` command (also documented in the README): 128 + signal number for interruptions.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM


class _Arguments(dict):
    """Renders `{name}` / `{name=value}` placeholders for Python (`names` is None) or with command-line flags."""

    def __init__(self, values: Mapping[str, Any], names: Mapping[str, str] | None) -> None:
        super().__init__(values)
        self._names = names

    def __missing__(self, field: str) -> str:
        name, _, value = field.partition("=")
        if self._names is None:
            return field
        flag = self._names.get(name, name)
        # A boolean is passed by its flag alone (`--overwrite`, or `--skip-memory-check` for memory_check=False).
        return flag if value in ("", "True", "False") else f"{flag} {value}"


class Message:
    """A message template and its values, rendered for Python (`str`) or with command-line flags (`render`).

    Log records whose message is a `Message` are rendered with the command's flags by `vggt.utils.commands`.
    """

    def __init__(self, template: str, **values: Any) -> None:
        self.template = template
        self.values = values

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with argument placeholders as Python names (`names` None) or mapped through `names`."""
        try:
            return self.template.format_map(_Arguments(self.values, names))
        except (ValueError, IndexError, AttributeError):  # stray braces in a message built without placeholders
            return self.template

    def __str__(self) -> str:
        return self.render()


class VGGTError(Exception):
    """Base of every error with a message meant for the user. `exit_code` is what the `vggt` command returns."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, **values: Any) -> None:
        self.message = Message(message, **values)
        super().__init__(self.message.render())

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with argument placeholders as Python names (`names` None) or mapped through `names`."""
        return self.message.render(names)


class InputError(VGGTError, ValueError):
    """Bad input or options: missing or unreadable files, no images, inconsistent options, a busy output folder."""


class SceneFormatError(InputError):
    """A scene folder that breaks the format (docs/dataset_format.md); the message names the scene and the file."""


class CheckpointError(VGGTError, RuntimeError):
    """A checkpoint that cannot be found, read or loaded into the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file, folder or Hub id does not exist."""


class InsufficientMemoryError(VGGTError, MemoryError):
    """The run would not fit in memory; the message says what to change."""


class DependencyError(VGGTError, ImportError):
    """An optional dependency is missing; the message says what to install."""


class PredictionError(VGGTError, RuntimeError):
    """The model predicted something unusable (non-finite cameras or depth): a broken checkpoint, usually."""

    exit_code = EXIT_FAILURE


class OutputError(VGGTError, OSError):
    """An output could not be written completely (disk full, file size limit, permissions); nothing was kept."""

    exit_code = EXIT_FAILURE


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, docker, Slurm, torchrun), raised like Ctrl-C so that clean-up runs."""
