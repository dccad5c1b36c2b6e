"""`build_model`: the one way every command turns a checkpoint and/or a preset into a VGGT.

- a checkpoint (Hub id, folder or weights file): its weights; `preset` names the architecture when the
  checkpoint carries no config.json;
- only a preset: that architecture with RANDOM weights, with a warning (for tests and smoke runs);
- neither: the released `facebook/VGGT-1B`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from vggt.models.config import DEFAULT_CHECKPOINT
from vggt.models.vggt import VGGT

logger = logging.getLogger(__name__)


def build_model(
    checkpoint: str | os.PathLike | None = None,
    preset: str | None = None,
    *,
    device: str | torch.device = "cpu",
    warn_random_weights: bool = True,
    **preset_overrides: Any,
) -> VGGT:
    """A VGGT in eval mode on `device` (see the module docstring for which weights).

    `preset_overrides` are VGGTConfig fields for a random-weight preset (e.g. `enable_track=False`);
    `warn_random_weights=False` silences the warning (training starts from random weights on purpose).
    Raises CheckpointError / CheckpointNotFoundError for a checkpoint that cannot be loaded, InputError for an
    unknown preset.
    """
    if checkpoint is None and preset is not None:
        model = VGGT.from_preset(preset, **preset_overrides)
        if warn_random_weights:
            logger.warning(
                "no checkpoint given: the %r preset runs with RANDOM weights (outputs are meaningless)", preset
            )
    else:
        if preset_overrides:
            raise TypeError(f"config overrides {sorted(preset_overrides)} apply to random-weight presets only")
        model = VGGT.from_pretrained(checkpoint or DEFAULT_CHECKPOINT, preset=preset, device="cpu")
    return model.to(device).eval()
