"""Stopping a run cleanly on Ctrl-C or SIGTERM (what `timeout`, docker, Slurm and torchrun send).

A first signal asks the run to stop at the end of the current optimizer step: every rank agrees on it (one
all-reduce per step), a checkpoint of that step is written, and the run ends with `KeyboardInterrupt` (Ctrl-C) or
`vggt.errors.Terminated` (SIGTERM), which the command reports as exit code 130 or 143. A second signal stops at
once, leaving the previous checkpoint (checkpoints are written atomically, so none is ever half-written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from vggt.errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The signal that asked the run to stop (None while none has)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.signal = signum

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """While inside, SIGINT and SIGTERM set the request instead of raising (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def agreed(self) -> bool:
        """Whether any rank was asked to stop (the same answer on every rank)."""
        requested = self.signal is not None
        if dist.is_initialized():
            flag = torch.tensor([float(requested)], device=_collective_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
            if requested and self.signal is None:
                self.signal = signal.SIGTERM  # another rank got it
        return requested

    def interruption(self, run_dir: Path, step: int) -> BaseException:
        """The exception that ends the stopped run, after telling how to continue it."""
        print(f"[train] stopped at step {step}; its checkpoint is in {run_dir}; continue with --resume", flush=True)
        return Terminated() if self.signal == signal.SIGTERM else KeyboardInterrupt()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
