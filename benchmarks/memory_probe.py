"""Peak-memory probes: what one forward pass adds on top of the loaded model (benchmarks and memory tests).

Standalone (the standard library and torch only): the benchmarks run it in the reference's process too, and
`run_sequence_parallel(..., probe=PeakMemory)` runs it in every rank.

On CUDA: `torch.cuda.max_memory_allocated` above the allocation before the pass. On a Linux CPU: the
peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set before it,
taken after the allocator has given its free heap pages back (what loading the model left free would
otherwise hide part of the pass, by a different amount in every run); elsewhere the process's lifetime
peak (ru_maxrss), which over-counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
from pathlib import Path

import torch

MIB = 1024**2


def _give_back_freed_heap() -> None:
    """glibc's malloc_trim(0) (elsewhere nothing): what the streaming pass does after every block
    (`vggt.runtime.host_memory.release_freed_host_memory`), repeated here because this file also runs in the
    reference's process, where `vggt` is the reference package."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """The peak resident set since the last reset (Linux) or since the process started, in MiB."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_mb() -> float:
    current = _proc_status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()


def reset_peak_rss() -> float:
    """Reset the peak resident set to the current one (Linux); return the current resident set in MiB."""
    _give_back_freed_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mb()


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.mb`: memory the block added at its peak, in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.mb = float("nan")
        self.base_mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) / MIB
        else:
            self._base = reset_peak_rss()
        self.base_mb = self._base
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / MIB - self._base
        else:
            self.mb = peak_rss_mb() - self._base
