"""Held-out evaluation during training: `vggt.eval.runner.evaluate_scenes` on scene folders every N steps.

The `validation:` section of a training config:

    validation:
      scenes: [data/val_scenes]   # dataset roots (folders of scene folders) and/or scene folders; null: off
      every: 500                  # steps between evaluations (the last step is always evaluated)
      max_frames: 8               # evenly spaced frames per scene (null: all)
      depth_alignment: median     # as `vggt evaluate`

The unwrapped model is evaluated in eval mode, each process of a torchrun job on its share of the scenes (the
whole model gathered on each rank under FSDP), and `val/camera_AUC@30` and `val/depth_abs_rel` of all scenes
(when the scenes and heads allow them) go into that step's record of metrics.jsonl; the random number generators
are left as they were, so evaluating does not change the training run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training import lora
from training.distributed import all_gather_objects

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


def whole_model(model: nn.Module) -> nn.Module:
    """`model` itself, or for an FSDP2-sharded model a plain VGGT with its weights gathered onto this rank (each
    rank then holds the whole model, on the model's device, and runs it without collectives)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    from vggt.models.vggt import VGGT

    if not isinstance(model, FSDPModule):
        return model
    state = lora.plain_state_dict(model, get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))
    with torch.device("meta"):
        local = VGGT(config=model.config)
    local.load_state_dict(state, strict=True, assign=True)
    return local


def validate(model: nn.Module, scene_dirs: list[Path], config: ValidationConfig, device: torch.device,
             dtype: torch.dtype) -> dict[str, float]:  # fmt: skip
    """The LOGGED_METRICS of `model` on `scene_dirs`; leaves the model in training mode.

    Under torchrun every rank calls this: rank r evaluates scenes r, r + world_size, ... on its own (an FSDP
    model gathered whole onto each rank: `whole_model`), and the metrics are those of all scenes together, the same
    as one process evaluating them all."""
    from vggt.eval.runner import EvalSettings, evaluate_scene, summarize

    settings = EvalSettings(
        max_frames=config.max_frames,
        depth_alignment=config.depth_alignment,
        device=device,
        dtype=dtype,
        share_across_ranks=False,
    )
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = range(rank, len(scene_dirs), world_size)
    try:
        with preserved_random_state():
            local = whole_model(model)
            results = [(index, evaluate_scene(local, scene_dirs[index], settings)) for index in mine]
    finally:
        model.train()
    gathered = [pair for ranks_results in all_gather_objects(results) for pair in ranks_results]
    overall = summarize([result for _, result in sorted(gathered, key=itemgetter(0))])  # in scene order
    return {
        name: float(overall[group][metric])
        for (group, metric), name in LOGGED_METRICS.items()
        if metric in overall.get(group, {})
    }


def validation_setup(config: Mapping[str, Any]) -> tuple[ValidationConfig, list[Path]]:
    """The `validation` section of a training config and its scene folders (none when it is off)."""
    validation = ValidationConfig.from_dict(config.get("validation"))
    if not validation.enabled:
        return validation, []
    return validation, find_scene_dirs(validation.scenes)
