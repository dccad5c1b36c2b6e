"""What a step cost: data and compute time, throughput, peak memory, and a torch.profiler trace on request.

Per logged step the trainer adds to metrics.jsonl and TensorBoard (averaged over ranks):

    data_time      seconds spent waiting for batches           compute_time   the rest of the step
    step_time      wall-clock seconds of the step              frames_per_s   frames of the global batch per second
    mem_peak_gb    peak accelerator memory allocated since the previous logged step (GPU)
    host_peak_gb   peak resident host memory of the process so far

The `logging.profile` section ({start: N, steps: K}, null: off) records steps N+1 .. N+K with torch.profiler and
writes `<run_dir>/profile/trace_rank<r>.json` (chrome://tracing, Perfetto or TensorBoard's profiler read it).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

PROFILE_DIR = "profile"
# The metrics whose values depend on the machine's load, not on the run's arithmetic.
TIMING_METRICS = ("data_time", "compute_time", "step_time", "frames_per_s", "mem_peak_gb", "host_peak_gb")
GIB = 2**30


def step_costs(step_time: float, data_time: float, frames: int, world_size: int) -> dict[str, float]:
    """Timing metrics of one step from its wall-clock and data-wait seconds and this rank's frame count."""
    return {
        "step_time": step_time,
        "data_time": data_time,
        "compute_time": step_time - data_time,
        "frames_per_s": frames * world_size / step_time if step_time > 0 else 0.0,
    }


def memory_peaks(device: torch.device) -> dict[str, float]:
    """Peak accelerator memory since the previous call (CUDA; the counter is reset) and the process's peak RSS, GiB."""
    peaks = {}
    if device.type == "cuda":
        peaks["mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / GIB
        torch.cuda.reset_peak_memory_stats(device)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peaks["host_peak_gb"] = max_rss / GIB if sys.platform == "darwin" else max_rss * 1024 / GIB
    return peaks


class StepProfiler:
    """torch.profiler over steps `start`+1 .. `start`+`steps` of a run (`logging.profile`); idle when not set."""

    def __init__(self, run_dir: Path, profile_cfg: Mapping[str, Any] | None, rank: int) -> None:
        profile_cfg = dict(profile_cfg or {})
        unknown = sorted(set(profile_cfg) - {"start", "steps"})
        if unknown:
            raise ValueError(f"logging.profile: unknown keys {unknown}; set {{start: N, steps: K}} or null")
        self.enabled = bool(profile_cfg)
        self.start = int(profile_cfg.get("start", 0))
        self.stop = self.start + int(profile_cfg.get("steps", 2))
        if self.enabled and not 0 <= self.start < self.stop:
            raise ValueError(f"logging.profile needs start >= 0 and steps >= 1, got {profile_cfg}")
        self.path = run_dir / PROFILE_DIR / f"trace_rank{rank}.json"
        self._profiler: torch.profiler.profile | None = None

    def before_step(self, step: int) -> None:
        """Call with the number of steps done so far, before the next one."""
        if self.enabled and step == self.start and self._profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities, record_shapes=True)
            self._profiler.__enter__()

    def after_step(self, step: int) -> Path | None:
        """Call with the number of steps done after one; writes the trace after the last profiled step."""
        if self._profiler is None or step < self.stop:
            return None
        self._profiler.__exit__(None, None, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._profiler.export_chrome_trace(str(self.path))
        self._profiler = None
        self.enabled = False
        return self.path
