"""The training configuration: every key with its default (DEFAULT_CONFIG), YAML files and dotted overrides.

A config is YAML; every key has a default below and `dotted.key=value` arguments override keys after the file is
read (values are parsed as YAML: `optim.freeze=[aggregator.*]`, `lora.enabled=true`). The `data` section is
passed to `training.data`, `loss` to `training.losses.LossConfig` and `validation` to `training.validation`.
Importable without torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.reference_config import is_reference_config, translate_reference_config
from vggt.errors import InputError

# Attention input/output projections and the two MLP layers of every transformer block (a regular
# expression on full module names; the bare suffixes "qkv", "proj", "fc1", "fc2" would also catch the
# patch-embedding convolution and the heads' output MLPs).
DEFAULT_LORA_TARGET_MODULES = r".*\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"

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
        "param_groups": [],  # [{params: [patterns], lr, weight_decay}]: their own lr / weight decay (training.optim)
        "clip_groups": [],  # [{name, params: [patterns], max_norm}]: clipped on their own norm; the rest at grad_clip
    },
    "lora": {
        "enabled": False,
        "rank": 16,
        "alpha": 32.0,
        "dropout": 0.0,
        "target_modules": DEFAULT_LORA_TARGET_MODULES,  # a regex on module names, or a list of name suffixes
        "train_fully": [],  # parameter-name patterns trained in full next to the adapters, e.g. ["camera_head.*"]
    },
    "distributed": {
        "strategy": "ddp",  # ddp | fsdp
        "backend": "auto",  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
        "find_unused_parameters": True,  # DDP; needed when some steps leave a head without a loss
        "expected_world_size": None,  # the recipe's process count; a different one only triggers a warning
    },
    "logging": {
        "log_every": 10,
        "tensorboard": True,
        "progress": True,
        "curves": True,  # curves.png
        "profile": None,  # {start: N, steps: K}: a torch.profiler trace of steps N+1..N+K (training.observe)
        "wandb": False,  # also log to Weights & Biases (the `wandb` extra; WANDB_MODE=offline writes only locally)
        "wandb_project": "vggt",
    },
    # plain_weights: each checkpoint also holds config.json + model.safetensors (rank 0 gathers the model)
    # async_save: shards are copied to host memory and written by a background thread while training goes on
    "checkpoint": {"every": 1000, "keep_last": 3, "plain_weights": True, "async_save": False},
    # repo_id: at the end of the run, rank 0 pushes <run_dir>/final to this Hub model repo (created if missing);
    # endpoint: another Hub than huggingface.co (null: HF_ENDPOINT or the default); the token is huggingface_hub's
    "hub": {"repo_id": None, "private": False, "endpoint": None},
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


# What a config value must be, by the type of its default (a default of None accepts anything).
_EXPECTED_TYPES = {bool: ("true or false", (bool,)), int: ("an integer", (int,)), float: ("a number", (int, float))}
_EXPECTED_TYPES.update({str: ("a string", (str,)), list: ("a list", (list, tuple))})


def _check_type(path: str, default: Any, value: Any, where: str) -> None:
    """Raise InputError naming the key and where it was set when `value` cannot stand for `default`."""
    if value is None or default is None or type(default) not in _EXPECTED_TYPES:
        return
    label, accepted = _EXPECTED_TYPES[type(default)]
    if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
        raise InputError(
            "config key {key!r} must be {label}, got {value!r} ({where})",
            key=path,
            label=label,
            value=value,
            where=where,
        )


def _merge(
    base: dict[str, Any],
    update: Mapping[str, Any],
    prefix: str = "",
    checked: bool = True,
    locate: Callable[[str], str] = lambda key: "a default",
) -> dict[str, Any]:
    """Deep-update `base` with `update`; outside FREE_FORM sections every key must already exist and have a value
    of its default's type. `locate(key)` says where a key was set, for the error messages."""
    for key, value in update.items():
        path = f"{prefix}{key}"
        if checked and key not in base:
            known = ", ".join(sorted(base))
            raise InputError(
                "unknown config key {key!r} ({where}); known keys here: {known}",
                key=path,
                where=locate(path),
                known=known,
            )
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            _merge(base[key], value, prefix=f"{path}.", checked=checked and path not in FREE_FORM, locate=locate)
        elif checked and isinstance(base.get(key), dict) and path not in FREE_FORM:
            raise InputError(
                "config key {key!r} must be a mapping, got {value!r} ({where})",
                key=path,
                value=value,
                where=locate(path),
            )
        else:
            if checked:
                _check_type(path, base.get(key), value, locate(path))
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, value parsed as YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InputError("override {text!r} must look like dotted.key=value, e.g. optim.lr=1e-4", text=text)
    try:
        value = yaml_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise InputError("override {text!r}: the value is not valid YAML ({error})", text=text, error=err) from None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line where the YAML document sets it (mappings only)."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = f"{prefix}{key_node.value}"
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, f"{path}.")

    walk(yaml.compose(text), "")
    return lines


def _read_config_file(path: Path) -> tuple[Mapping[str, Any], dict[str, int]]:
    import yaml

    if not path.is_file():
        raise InputError(
            "config file {path} does not exist; configs live in configs/, e.g. tiny_synthetic.yaml", path=path
        )
    text = path.read_text()
    try:
        loaded = yaml_load(text) or {}
        lines = _key_lines(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(
            "config file {path} is not valid YAML: {problem} at {where}", path=path, problem=problem, where=where
        ) from None
    if not isinstance(loaded, Mapping):
        raise InputError("config file {path} must hold a YAML mapping at the top level", path=path)
    return loaded, lines


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """DEFAULT_CONFIG, updated by the YAML file at `path`, then by `key=value` overrides."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        loaded, lines = _read_config_file(path)
        if is_reference_config(loaded):  # the reference's Hydra-style YAML: translated, or refused in one line
            loaded = translate_reference_config(loaded, path.parent, lines, lambda other: yaml_load(other.read_text()))
        _merge(config, loaded, locate=lambda key: f"{path}, line {lines.get(key, '?')}")
    for text in overrides:
        _merge(config, parse_override(text), locate=lambda key, text=text: f"override {text!r}")
    return config
