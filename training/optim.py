"""The optimizer side of a run: which parameters train (freezing), AdamW, the learning-rate schedule and
gradient clipping.

    frozen = freeze_parameters(model, ["aggregator.*"])
    optimizer, scheduler = build_optimizer(model, config["optim"])
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

REGEX_PREFIX = "re:"


def warmup_cosine_schedule(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup from 1/warmup to 1 over `warmup_steps`, then cosine down to `min_ratio`.

    A plain function (not a callable object), so LambdaLR checkpoints keep no copy of these constants and
    a resumed run follows its current config (e.g. a longer `max_steps`).
    """
    if total_steps <= 0:
        raise ValueError(f"optim.max_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"optim.warmup_steps must be in [0, max_steps={total_steps}], got {warmup_steps}")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def matches_any(name: str, patterns: list[str]) -> bool:
    """fnmatch patterns on parameter names; a pattern starting with "re:" is a regular expression (re.search)."""
    for pattern in patterns:
        if pattern.startswith(REGEX_PREFIX):
            if re.search(pattern[len(REGEX_PREFIX) :], name):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def freeze_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    """Stop gradients for every parameter whose name matches; returns the frozen names."""
    if not patterns:
        return []
    frozen = [name for name, param in model.named_parameters() if matches_any(name, patterns)]
    if not frozen:
        raise ValueError(
            f"optim.freeze patterns {patterns} match no parameter; "
            "names look like 'aggregator.frame_blocks.0.attn.qkv.weight'"
        )
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def build_optimizer(
    model: nn.Module, optim_cfg: Mapping[str, Any]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters of `model`, with linear warmup then cosine decay (the `optim` section)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("every parameter is frozen: loosen optim.freeze or enable lora")
    optimizer = torch.optim.AdamW(
        trainable,
        lr=float(optim_cfg["lr"]),
        betas=tuple(float(b) for b in optim_cfg["betas"]),
        eps=float(optim_cfg["eps"]),
        weight_decay=float(optim_cfg["weight_decay"]),
    )
    schedule = warmup_cosine_schedule(
        int(optim_cfg["warmup_steps"]), int(optim_cfg["max_steps"]), float(optim_cfg["min_lr_ratio"])
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm of the trainable parameters to `max_norm`; returns the norm before clipping."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
        grad_norm = grad_norm.full_tensor()
    return float(grad_norm)


@torch.no_grad()
def fill_missing_adamw_state(optimizer: torch.optim.Optimizer) -> int:
    """Give every trainable parameter that has no optimizer state yet the state AdamW would create at its first
    gradient (step 0, zero moments); returns how many were filled.

    A parameter that never received a gradient (an output no loss reads, such as the tracker's confidence, or a
    head a camera-only batch never reaches) has no state, and a checkpoint without it cannot be loaded into an
    optimizer that expects one per parameter. The filled state is exactly what AdamW would start from, so
    training continues bitwise as if nothing was filled.
    """
    if not isinstance(optimizer, torch.optim.AdamW):
        raise TypeError(f"fill_missing_adamw_state expects torch.optim.AdamW, got {type(optimizer).__name__}")
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    filled = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            if not param.requires_grad or optimizer.state.get(param):
                continue
            on_device = group.get("capturable") or group.get("fused")
            state = {
                "step": torch.zeros((), dtype=step_dtype, device=param.device if on_device else "cpu"),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            optimizer.state[param] = state
            filled += 1
    return filled
