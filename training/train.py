"""Command-line entry point of training.

    python -m training.train --config configs/tiny_synthetic.yaml run_dir=runs/demo optim.max_steps=50
    torchrun --nproc_per_node=8 -m training.train --config configs/finetune_custom.yaml
    python -m training.train --config configs/tiny_synthetic.yaml --resume      # continue the latest checkpoint

A config is YAML; every key has a default below (DEFAULT_CONFIG) and `dotted.key=value` arguments override
keys after the file is read (values are parsed as YAML: `optim.freeze=[aggregator.*]`, `lora.enabled=true`).
The `data` section is passed to `training.data`, `loss` to `training.losses.LossConfig` and `validation` to
`training.validation`.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.lora import DEFAULT_TARGET_MODULES

DEFAULT_CONFIG: dict[str, Any] = {
    "run_dir": "runs/default",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "threads": None,  # CPU threads per process (torch.set_num_threads); None keeps torch's default
    "precision": "auto",  # auto (bf16 autocast on capable GPUs) | bf16 (also on CPU) | fp32
    "model": {
        "preset": None,  # tiny | vggt-1b: random initial weights ...
        "pretrained": None,  # ... or a save_pretrained dir, a weights file or a Hub id such as facebook/VGGT-1B
        "heads": ["camera", "depth", "point", "track"],
        "overrides": {},  # VGGTConfig fields for presets, e.g. {frames_chunk_size: null}
        "gradient_checkpointing": True,
    },
    "data": {},
    "loss": {},
    "optim": {
        "lr": 2e-4,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.05,
        "warmup_steps": 0,
        "max_steps": 1000,
        "min_lr_ratio": 0.0,
        "grad_clip": 1.0,
        "accum_steps": 1,
        "freeze": [],  # parameter-name patterns (fnmatch, or "re:<regex>"), e.g. ["aggregator.*"]
    },
    "lora": {
        "enabled": False,
        "rank": 16,
        "alpha": 32.0,
        "dropout": 0.0,
        "target_modules": DEFAULT_TARGET_MODULES,  # a regex on module names, or a list of name suffixes
    },
    "distributed": {
        "strategy": "ddp",  # ddp | fsdp
        "backend": "auto",  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
        "find_unused_parameters": True,  # DDP; needed when some steps leave a head without a loss
        "expected_world_size": None,  # the recipe's process count; a different one only triggers a warning
    },
    "logging": {"log_every": 10, "tensorboard": True, "progress": True, "curves": True},  # curves: curves.png
    "checkpoint": {"every": 1000, "keep_last": 3},
    "validation": {  # held-out scene folders evaluated every `every` steps (training.validation)
        "scenes": None,
        "every": 500,
        "max_frames": 8,
        "depth_alignment": "median",
    },
}
# Sections whose keys are checked by the code they are handed to, not against DEFAULT_CONFIG.
FREE_FORM = ("data", "loss", "model.overrides")


def yaml_load(text: str) -> Any:
    """yaml.safe_load, except that `1e-4` is a float (YAML 1.1 wants `1.0e-4` and would give a string)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    float_pattern = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float_pattern, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


def _merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = "", checked: bool = True) -> dict[str, Any]:
    """Deep-update `base` with `update`; outside FREE_FORM sections every key must already exist."""
    for key, value in update.items():
        path = f"{prefix}{key}"
        if checked and key not in base:
            known = ", ".join(sorted(base))
            raise ValueError(f"unknown config key {path!r}; known keys here: {known}")
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            _merge(base[key], value, prefix=f"{path}.", checked=checked and path not in FREE_FORM)
        elif checked and isinstance(base.get(key), dict) and path not in FREE_FORM:
            raise ValueError(f"config key {path!r} must be a mapping, got {value!r}")
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, value parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like dotted.key=value, e.g. optim.lr=1e-4")
    value = yaml_load(raw) if raw != "" else None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """DEFAULT_CONFIG, updated by the YAML file at `path`, then by `key=value` overrides."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist; configs live in configs/, e.g. tiny_synthetic.yaml")
        loaded = yaml_load(path.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"config file {path} must hold a YAML mapping at the top level")
        _merge(config, loaded)
    for text in overrides:
        _merge(config, parse_override(text))
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/tiny_synthetic.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run_dir")
    parser.add_argument("--resume-from", type=Path, default=None, help="continue from this checkpoint directory")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    args = parser.parse_args(argv)

    from training.distributed import cleanup_distributed
    from training.trainer import Trainer

    try:
        config = load_config(args.config, args.overrides)
        trainer = Trainer(config, resume=args.resume_from or args.resume)
        expected = config["distributed"]["expected_world_size"]
        if expected and expected != trainer.ctx.world_size and trainer.ctx.is_main:
            print(
                f"[train] warning: this recipe expects {expected} processes, running with {trainer.ctx.world_size}: "
                "the global batch differs from the recipe's",
                file=sys.stderr,
            )
        summary = trainer.train()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        cleanup_distributed()
        return 2
    if trainer.ctx.is_main and summary:
        print(f"[train] done: step {summary['step']} loss {summary['loss']:.4f} -> {trainer.run_dir}")
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
