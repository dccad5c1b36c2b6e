"""Low-rank adapters (LoRA) on VGGT's attention and MLP projections through `peft`.

`apply_lora` wraps the matching `nn.Linear` layers in place and leaves only the adapters trainable;
`merged_state_dict` folds the adapters back into plain weights, giving a state dict with exactly
the keys of an unadapted VGGT (so `VGGT.from_pretrained` loads it); `merge_lora` does the same in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.config import DEFAULT_LORA_TARGET_MODULES

ADAPTER_KEY_MARKER = "lora_"
BASE_LAYER_KEY = ".base_layer."


def apply_lora(
    model: nn.Module,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str = DEFAULT_LORA_TARGET_MODULES,
) -> nn.Module:
    """Inject LoRA adapters into `model` in place; afterwards only adapter weights require gradients.

    Args:
        target_modules: module-name suffixes (e.g. "qkv" matches every `*.qkv`), or one regular
            expression that must match full module names (the default: every block's attention and MLP).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank <= 0:
        raise ValueError(f"lora.rank must be a positive integer, got {rank}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    if not targets:
        raise ValueError("lora.target_modules is empty; name at least one module, e.g. ['qkv', 'proj', 'fc1', 'fc2']")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    try:
        inject_adapter_in_model(config, model)
    except ValueError as err:
        raise ValueError(f"LoRA found no layer to adapt for target_modules={targets!r}: {err}") from err
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_parameter(name))
    return model


def train_fully(model: nn.Module, patterns: list[str]) -> list[str]:
    """Make the parameters matching `patterns` (as `optim.freeze`) trainable next to the adapters, e.g. a head
    trained in full while the trunk is adapted; returns their names."""
    from training.optim import matches_any

    if not patterns:
        return []
    chosen = [
        name for name, _ in model.named_parameters() if not is_adapter_parameter(name) and matches_any(name, patterns)
    ]
    if not chosen:
        raise ValueError(f"lora.train_fully patterns {patterns} match no parameter; names look like 'camera_head.*'")
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(True)
    return chosen


def is_adapter_parameter(name: str) -> bool:
    return ADAPTER_KEY_MARKER in name


def has_lora(model: nn.Module) -> bool:
    return any(is_adapter_parameter(name) for name, _ in model.named_parameters())


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@torch.no_grad()
def merged_state_dict(model: nn.Module, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The weights of `model` with every adapter folded in (W + B A * scale), under plain VGGT keys.

    `state`: the state dict to fold (default `model.state_dict()`), e.g. the full one gathered from an FSDP model
    whose own parameters are shards; `model` only tells which layers are adapted and their scales, and is left
    untouched, so training can continue after saving.
    """
    state = model.state_dict() if state is None else state
    merged: dict[str, Tensor] = {}
    for key, value in state.items():
        if is_adapter_parameter(key):
            continue
        merged[key.replace(BASE_LAYER_KEY, ".")] = value.detach().clone()
    for name, layer in _lora_layers(model).items():
        if layer.merged:
            continue
        weight_key = f"{name}.weight"
        for adapter in layer.active_adapters:
            down, up = state[f"{name}.lora_A.{adapter}.weight"], state[f"{name}.lora_B.{adapter}.weight"]
            delta = (up.float() @ down.float()) * layer.scaling[adapter]
            merged[weight_key] = merged[weight_key] + delta.to(merged[weight_key].dtype)
    return merged


def plain_state_dict(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` (the state dict of `model`) under plain VGGT keys: the adapters folded in when `model` has any."""
    return merged_state_dict(model, state) if has_lora(model) else state


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and put the plain layers back, in place."""
    for name, layer in _lora_layers(model).items():
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, layer.get_base_layer())
    return model
