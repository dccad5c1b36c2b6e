"""The optimizer side of a run: which parameters train (freezing), AdamW with parameter groups, the
learning-rate schedule and gradient clipping per module group.

    frozen = freeze_parameters(model, ["aggregator.*"])
    optimizer, scheduler = build_optimizer(model, config["optim"])
    clipper = GradientClipper(model, config["optim"])

The `optim` keys for groups (patterns as `optim.freeze`: fnmatch on parameter names, or "re:<regex>"):

    param_groups: [{params: ["aggregator.*"], lr: 1.0e-5, weight_decay: 0.0}]   # first match wins
    clip_groups: [{name: aggregator, params: ["aggregator.*"], max_norm: 1.0}, ...]
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


def _match_groups(
    module: nn.Module, specs: list[Mapping[str, Any]], section: str
) -> tuple[list[list[nn.Parameter]], list[nn.Parameter]]:
    """Trainable parameters of `module` split by the `params` patterns of `specs` (the first matching spec
    wins), and those no spec matches. A spec that matches nothing is an error naming `section`."""
    matched: list[list[nn.Parameter]] = [[] for _ in specs]
    rest: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, spec in enumerate(specs) if matches_any(name, list(spec["params"]))), None)
        (rest if index is None else matched[index]).append(param)
    for index, (spec, params) in enumerate(zip(specs, matched)):
        if not params:
            raise ValueError(
                f"{section}[{index}].params {list(spec['params'])} match no trainable parameter; "
                "names look like 'aggregator.frame_blocks.0.attn.qkv.weight'"
            )
    return matched, rest


def _check_specs(specs: list[Mapping[str, Any]], section: str, allowed: set[str]) -> None:
    for index, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("params"), (list, tuple)) or set(spec) - allowed:
            raise ValueError(
                f"{section}[{index}] must be a mapping with `params: [patterns]` and keys {sorted(allowed)}, got {spec}"
            )


def build_optimizer(
    module: nn.Module, optim_cfg: Mapping[str, Any]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters of `module` (unwrapped: names without DDP's prefix), with linear warmup
    then cosine decay (the `optim` section). `optim.param_groups` gives parameters matching its patterns their own
    `lr` and `weight_decay`; the others use `optim.lr` and `optim.weight_decay`."""
    specs = list(optim_cfg.get("param_groups") or [])
    _check_specs(specs, "optim.param_groups", {"params", "lr", "weight_decay"})
    matched, rest = _match_groups(module, specs, "optim.param_groups")
    groups = [
        {"params": params, **{key: float(spec[key]) for key in ("lr", "weight_decay") if key in spec}}
        for spec, params in zip(specs, matched)
    ]
    if rest:
        groups.append({"params": rest})
    if not groups:
        raise ValueError("every parameter is frozen: loosen optim.freeze or enable lora")
    optimizer = torch.optim.AdamW(
        groups,
        lr=float(optim_cfg["lr"]),
        betas=tuple(float(b) for b in optim_cfg["betas"]),
        eps=float(optim_cfg["eps"]),
        weight_decay=float(optim_cfg["weight_decay"]),
    )
    schedule = warmup_cosine_schedule(
        int(optim_cfg["warmup_steps"]), int(optim_cfg["max_steps"]), float(optim_cfg["min_lr_ratio"])
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class GradientClipper:
    """Gradient-norm clipping as the reference does it: each `optim.clip_groups` entry ({name, params, max_norm})
    clips the parameters matching its patterns on their own norm; the remaining trainable parameters are clipped
    together at `optim.grad_clip`."""

    def __init__(self, module: nn.Module, optim_cfg: Mapping[str, Any]) -> None:
        specs = list(optim_cfg.get("clip_groups") or [])
        _check_specs(specs, "optim.clip_groups", {"name", "params", "max_norm"})
        matched, rest = _match_groups(module, specs, "optim.clip_groups")
        self.groups = [
            (str(spec.get("name") or f"group{index}"), params, float(spec.get("max_norm", optim_cfg["grad_clip"])))
            for index, (spec, params) in enumerate(zip(specs, matched))
        ]
        if rest:
            self.groups.append(("rest" if specs else "", rest, float(optim_cfg["grad_clip"])))

    def clip(self) -> dict[str, float]:
        """Clip every group; returns `grad_norm` (over all groups, before clipping) and `grad_norm/<name>` per
        named group."""
        norms = {}
        for name, params, max_norm in self.groups:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
                norm = norm.full_tensor()
            norms[name] = float(norm)
        metrics = {f"grad_norm/{name}": value for name, value in norms.items() if name}
        metrics["grad_norm"] = math.sqrt(sum(value**2 for value in norms.values()))
        return metrics


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
