"""Held-out evaluation during training: `vggt.eval.runner.evaluate_scenes` on scene folders every N steps.

The `validation:` section of a training config:

    validation:
      scenes: [data/val_scenes]   # dataset roots (folders of scene folders) and/or scene folders; null: off
      every: 500                  # steps between evaluations (the last step is always evaluated)
      max_frames: 8               # evenly spaced frames per scene (null: all)
      depth_alignment: median     # as `vggt evaluate`

The run's only process evaluates the unwrapped model in eval mode and logs `val/camera_AUC@30` and
`val/depth_abs_rel` (when the scenes and heads allow them) into that step's record of metrics.jsonl; the random
number generators are left as they were, so evaluating does not change the training run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# (report group, metric) -> name in metrics.jsonl
LOGGED_METRICS = {("camera", "AUC@30"): "val/camera_AUC@30", ("depth", "abs_rel"): "val/depth_abs_rel"}


@dataclass
class ValidationConfig:
    scenes: list[str] = field(default_factory=list)
    every: int = 500
    max_frames: int | None = 8
    depth_alignment: str = "median"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ValidationConfig:
        values = dict(values or {})
        scenes = values.pop("scenes", None) or []
        try:
            config = cls(scenes=[scenes] if isinstance(scenes, (str, Path)) else [str(s) for s in scenes], **values)
        except TypeError as err:
            raise ValueError(f"validation: {err}") from None
        if config.enabled and config.every < 1:
            raise ValueError(f"validation.every must be a positive number of steps, got {config.every}")
        return config

    @property
    def enabled(self) -> bool:
        return bool(self.scenes)

    def due(self, step: int, max_steps: int) -> bool:
        return self.enabled and (step % self.every == 0 or step == max_steps)


def find_scene_dirs(roots: list[str]) -> list[Path]:
    """Scene folders among `roots` (a folder with cameras.json is a scene, any other a dataset root)."""
    from vggt.data.scene import CAMERAS_FILE, list_scenes

    scene_dirs: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"validation.scenes: {root} is not a folder; list dataset roots or scene folders")
        scene_dirs.extend([root] if (root / CAMERAS_FILE).is_file() else list_scenes(root))
    if not scene_dirs:
        raise ValueError(f"validation.scenes {roots} hold no scene folder (a folder with a cameras.json)")
    return scene_dirs


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore python's, numpy's and torch's (CPU and CUDA) random state on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def validate(model: nn.Module, scene_dirs: list[Path], config: ValidationConfig, device: torch.device,
             dtype: torch.dtype) -> dict[str, float]:  # fmt: skip
    """The LOGGED_METRICS of `model` on `scene_dirs`; leaves the model in training mode."""
    from vggt.eval.runner import EvalSettings, evaluate_scenes

    settings = EvalSettings(
        max_frames=config.max_frames, depth_alignment=config.depth_alignment, device=device, dtype=dtype
    )
    try:
        with preserved_random_state():
            report = evaluate_scenes(model, scene_dirs, settings, progress=False)
    finally:
        model.train()
    overall = report["overall"]
    return {
        name: float(overall[group][metric])
        for (group, metric), name in LOGGED_METRICS.items()
        if metric in overall.get(group, {})
    }


def validation_setup(config: Mapping[str, Any], world_size: int = 1) -> tuple[ValidationConfig, list[Path]]:
    """The `validation` section of a training config and its scene folders (none when it is off).

    Runs of several processes are refused: with a process group, the inference pipeline that evaluation runs
    shares every scene's frames among all processes and returns the prediction on rank 0 only
    (vggt.pipeline.inference), which neither a rank-0-only nor an every-rank evaluation fits.
    """
    validation = ValidationConfig.from_dict(config.get("validation"))
    if not validation.enabled:
        return validation, []
    if world_size > 1:
        raise ValueError(
            f"validation.scenes with {world_size} processes is not supported (evaluation shares frames among all "
            "processes); drop validation.scenes and `vggt evaluate` exported checkpoints, or train in one process"
        )
    return validation, find_scene_dirs(validation.scenes)
