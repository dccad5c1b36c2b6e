"""The one model of a demo server, loaded once, and its runs through `vggt.reconstruct` one at a time."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vggt.pipeline.api import reconstruct
from vggt.pipeline.model_choice import load_model
from vggt.pipeline.reconstruction import Reconstruction
from vggt.utils.commands import write_line
from vggt.utils.device import resolve_device, resolve_dtype

# The line each model run prints on the server's stderr (tests count them).
RUN_LINE = "vggt demo: model run {number}: {inputs} on {device}"


@dataclass(frozen=True)
class RunSettings:
    """How every run of this server goes: device, precision, preprocessing (crop or pad), the model input size
    (None: the model's) and the memory check before each run."""

    device: torch.device
    dtype: torch.dtype
    mode: str = "crop"
    resolution: int | None = None
    memory_check: bool = True

    @property
    def device_text(self) -> str:
        return f"{self.device} ({str(self.dtype).removeprefix('torch.')})"


class ModelRunner:
    """Holds the model and reconstructs with it; `runs` counts the model's forward passes."""

    def __init__(self, model: torch.nn.Module, settings: RunSettings) -> None:
        self.model = model
        self.settings = settings
        self.runs = 0
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        checkpoint: str | None,
        preset: str | None,
        device: str,
        dtype: str,
        model_name: str | None = None,
        **settings: object,
    ) -> ModelRunner:
        """Build the model (a registry name, else VGGT: `vggt.pipeline.model_choice.load_model`) on the resolved
        device and precision."""
        resolved = resolve_device(device)
        model = load_model(model_name, checkpoint, preset, resolved)
        return cls(model, RunSettings(resolved, resolve_dtype(resolved, dtype), **settings))

    def reconstruct(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        fps: float | None = None,
        max_frames: int | None = None,
        **cloud: object,
    ) -> Reconstruction:
        """`vggt.reconstruct(inputs, model=...)` with this server's settings and progress bars, one run at a time.

        Args:
            inputs: image files, or one video file (sampled with `fps` and `max_frames`).
            cloud: `points`, `conf_percentile`, `max_points` of the first cloud (`Reconstruction.select` changes it).
        """
        with self._lock:
            self.runs += 1
            count = 1 if isinstance(inputs, (str, os.PathLike)) else len(inputs)
            write_line(RUN_LINE.format(number=self.runs, inputs=f"{count} file(s)", device=self.settings.device_text))
            return reconstruct(
                inputs,
                model=self.model,
                device=self.settings.device,
                dtype=self.settings.dtype,
                mode=self.settings.mode,
                resolution=self.settings.resolution,
                memory_check=self.settings.memory_check,
                fps=fps,
                max_frames=max_frames,
                progress=True,
                **cloud,
            )
