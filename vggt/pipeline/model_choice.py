"""Which model a run uses: a registry name (`model`, `vggt.models.registry`), a `checkpoint`, or VGGT's `preset`.

`model=None` keeps the VGGT path of before the registry (`checkpoint` / `preset`, default facebook/VGGT-1B);
a name builds that model with the released weights of its Hub id, or `checkpoint`'s (a local file or folder),
or random weights for a small preset (`pi3-tiny` etc.). The pipeline asks `is_vggt` whether the streaming engine,
the track head and bundle adjustment apply; the other families run their reference forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vggt.errors import InputError
from vggt.models.build import build_model
from vggt.models.config import DEFAULT_CHECKPOINT, VGGTConfig, get_preset


def check_model_choice(model: str | None, preset: str | None) -> None:
    """One line for an unknown name (listing `list_models()`) or a name given together with VGGT's `preset`."""
    if model is None:
        return
    from vggt.models.registry import get_entry

    get_entry(model)  # an unknown name: one line naming the choices
    if preset is not None:
        raise InputError(
            "{preset} chooses a VGGT architecture and {model} a model: give one of them (small random models "
            "are names too, e.g. pi3-tiny, vggt-tiny)"
        )


def expected_config(model: str | None, preset: str | None) -> Any:
    """The configuration the run's model will have, before it is loaded (its `default_resolution` and
    `patch_size` size the photos): the named model's, else the preset's, else VGGT-1B's."""
    check_model_choice(model, preset)
    if model is not None:
        from vggt.models.registry import expected_config as registry_config

        return registry_config(model)
    return get_preset(preset) if preset is not None else VGGTConfig()


def load_model(model: str | None, checkpoint: str | None, preset: str | None, device: torch.device) -> nn.Module:
    """The run's model on `device` (see the module docstring)."""
    check_model_choice(model, preset)
    if model is None:
        return build_model(checkpoint, preset, device=device)
    from vggt.models.registry import create_model

    return create_model(model, checkpoint, device=device)


def is_vggt(model_or_config: Any) -> bool:
    """Whether a model (or its configuration) is a VGGT, which the streaming engine and the track head serve."""
    from vggt.models.vggt import VGGT

    return isinstance(model_or_config, (VGGT, VGGTConfig))


def model_label(model: nn.Module | None, checkpoint: str | None, preset: str | None, name: str | None = None) -> str:
    """How to name the model in messages: its checkpoint, else its random-weight preset or registry name."""
    name = name or getattr(model, "registry_name", None)
    if checkpoint is not None:
        return f"{name} from {checkpoint}" if name else str(checkpoint)
    if preset is not None:
        return f"random weights of preset {preset}"
    if name is not None:
        from vggt.models.registry import REGISTRY

        entry = REGISTRY.get(name)
        if entry is None:  # a model built outside the registry: its class name
            return name
        return f"{name} ({entry.hub_id})" if entry.released else f"random weights of {name}"
    return getattr(model, "name_or_path", None) or DEFAULT_CHECKPOINT
