"""The reference's training YAML (facebookresearch/vggt `training/config/*.yaml`, Hydra style) read as one of ours.

`load_config` hands a file here when its top level has keys only the reference uses (`defaults`, `exp_name`,
`max_img_per_gpu`, ...). `defaults: [other.yaml]` files are read from the same folder and merged underneath, and
`${dotted.key}` interpolations are resolved; then every key, in document order, is translated into our keys
(TRANSLATIONS), skipped when it cannot change the training (IGNORED, reported in one warning), or refused: the
first key we cannot honour raises one InputError naming it, its line and what to do instead.
docs/training.md lists the mapping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vggt.errors import InputError

logger = logging.getLogger(__name__)

# Top-level keys that only the reference's configs have.
REFERENCE_MARKERS = frozenset({"defaults", "exp_name", "max_img_per_gpu", "seed_value", "max_epochs", "img_size"})
INTERPOLATION = re.compile(r"\$\{([^}]+)\}")
AMP_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}
HEAD_KEYS = {f"model.enable_{name}": name for name in ("camera", "depth", "point", "track")}

# Reference key -> (our key, value conversion). A prefix ending in "." covers the keys one level below it.
TRANSLATIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "exp_name": ("run_dir", lambda name: f"runs/{name}"),
    "logging.log_dir": ("run_dir", str),
    "img_size": ("data.image.max_size", int),
    "patch_size": ("data.image.patch_size", int),
    "num_workers": ("data.num_workers", int),
    "seed_value": ("seed", int),
    "accum_steps": ("optim.accum_steps", int),
    "max_img_per_gpu": ("data.frames_per_gpu", int),
    "data.train.num_workers": ("data.num_workers", int),
    "data.train.max_img_per_gpu": ("data.frames_per_gpu", int),
    "data.train.common_config.img_size": ("data.image.max_size", int),
    "data.train.common_config.patch_size": ("data.image.patch_size", int),
    "data.train.common_config.img_nums": ("data.num_frames", list),
    "data.train.common_config.load_depth": ("data.use_depth", bool),
    "data.train.common_config.augs.aspects": ("data.image.aspect_range", list),
    "data.train.common_config.augs.color_jitter.brightness": ("data.image.brightness", float),
    "data.train.common_config.augs.color_jitter.contrast": ("data.image.contrast", float),
    "data.train.common_config.augs.color_jitter.saturation": ("data.image.saturation", float),
    "data.train.common_config.augs.color_jitter.hue": ("data.image.hue", float),
    "data.train.common_config.augs.color_jitter.p": ("data.image.color_jitter_prob", float),
    "data.train.common_config.augs.cojitter_ratio": ("data.image.shared_color_jitter_prob", float),
    "logging.log_freq": ("logging.log_every", int),
    "checkpoint.resume_checkpoint_path": ("model.pretrained", str),
    "optim.optimizer.lr": ("optim.lr", float),
    "optim.optimizer.weight_decay": ("optim.weight_decay", float),
    "optim.frozen_module_names": ("optim.freeze", lambda names: [f"*{n.strip('*')}*" for n in names or []]),
    "distributed.backend": ("distributed.backend", str),
    "distributed.find_unused_parameters": ("distributed.find_unused_parameters", bool),
    "loss.camera.": ("loss.camera.", lambda value: value),
    "loss.depth.": ("loss.depth.", lambda value: value),
    "loss.point.": ("loss.point.", lambda value: value),
    "loss.camera": ("loss.camera", lambda value: value),  # null: the term is off
    "loss.depth": ("loss.depth", lambda value: value),
    "loss.point": ("loss.point", lambda value: value),
    "loss.track": ("loss.track", lambda value: value),
}
# Keys that do not change what is trained (logging detail, loader plumbing, class paths we build ourselves, the
# held-out loss the reference computes), as prefixes; reported in one warning.
IGNORED = (
    "model._target_", "loss._target_", "data.train._target_", "data.train.dataset._target_", "data.val",
    "logging.log_level_primary", "logging.log_level_secondary", "logging.all_ranks", "logging.scalar_keys_to_log",
    "logging.log_visuals", "checkpoint.save_dir", "checkpoint.strict", "optim.gradient_clip._target_",
    "data.train.common_config.debug", "mode", "device", "limit_val_batches", "distributed.timeout_mins",
    "distributed.comms_dtype", "distributed.gradient_as_bucket_view", "distributed.bucket_cap_mb",
    "distributed.broadcast_buffers", "cuda.",
)  # fmt: skip
# Keys that need a value of ours before they can be converted (epochs -> steps).
EPOCH_KEYS = ("max_epochs", "limit_train_batches", "val_epoch_freq", "checkpoint.save_freq")
ADAMW = "torch.optim.AdamW"
ADAMW_KEY = "optim.optimizer._target_"
LINEAR, COSINE = (
    "fvcore.common.param_scheduler.LinearParamScheduler",
    "fvcore.common.param_scheduler.CosineParamScheduler",
)


def is_reference_config(loaded: Mapping[str, Any]) -> bool:
    return bool(REFERENCE_MARKERS & set(loaded))


def translate_reference_config(
    loaded: Mapping[str, Any], folder: Path, lines: Mapping[str, int], read_yaml: Callable[[Path], Any]
) -> dict[str, Any]:
    """Our nested config keys for the reference config `loaded`, read from `folder` (where `read_yaml` reads its
    defaults files) with `lines` the line of every dotted key; see the module docstring."""
    merged = _with_defaults(loaded, folder, read_yaml)
    ours: dict[str, Any] = {}
    epochs: dict[str, Any] = {}
    ignored = []
    amp: dict[str, Any] = {}
    schedule: tuple[float, float] | None = None
    for key, value in _leaves(merged):
        where = f"line {lines[key]}" if key in lines else "from its defaults"
        value = _interpolate(value, merged, key)
        if key in EPOCH_KEYS:
            epochs[key] = value
        elif key in HEAD_KEYS:
            ours.setdefault("model.heads", [])
            if value:
                ours["model.heads"].append(HEAD_KEYS[key])
        elif key.startswith("optim.amp."):
            amp[key.rsplit(".", 1)[1]] = value
        elif key == "optim.gradient_clip.configs":
            ours["optim.clip_groups"] = _clip_groups(value, key, where)
        elif key == "optim.options.lr":
            schedule = _lr_schedule(value, key, where)
        elif key.startswith("logging.tensorboard_writer"):
            ours["logging.tensorboard"] = True
        elif key.startswith(IGNORED) or (key, value) in (("optim.param_group_modifiers", False), (ADAMW_KEY, ADAMW)):
            ignored.append(key)
        elif key == "optim.options.weight_decay" and _constant(value) is not None:
            ours["optim.weight_decay"] = _constant(value)
        else:
            target, convert = _translation(key, where)
            ours[target + key.rsplit(".", 1)[1] if target.endswith(".") else target] = convert(value)
    ours.update(_steps_from_epochs(epochs))
    if schedule is not None:  # (warmup fraction, end lr / peak lr)
        ours["optim.warmup_steps"] = round(schedule[0] * ours.get("optim.max_steps", 0))
        ours["optim.min_lr_ratio"] = schedule[1]
    if amp:  # optim.amp: {enabled, amp_dtype}
        enabled = amp.get("enabled", True)
        ours["precision"] = AMP_PRECISION.get(str(amp.get("amp_dtype", "bfloat16")), "bf16") if enabled else "fp32"
    if ignored:
        logger.warning("reference config: ignored keys that do not change training: %s", ", ".join(ignored))
    return _nest(ours)


def _translation(key: str, where: str) -> tuple[str, Callable[[Any], Any]]:
    if key in TRANSLATIONS:
        return TRANSLATIONS[key]
    for prefix, rule in TRANSLATIONS.items():
        if prefix.endswith(".") and key.startswith(prefix) and key.count(".") == prefix.count("."):
            return rule
    raise InputError(
        "reference config key {key!r} ({where}) cannot be honoured here; write the run as one of our configs "
        "(docs/training.md maps every reference key)",
        key=key,
        where=where,
    )


def _lr_schedule(schedulers: Any, key: str, where: str) -> tuple[float, float]:
    """The reference's lr option (fvcore: linear warmup then cosine, lengths [w, 1 - w]) as (w, end / peak)."""
    try:
        (entry,) = schedulers
        composite = entry["scheduler"]
        linear, cosine = composite["schedulers"]
        warmup_fraction = float(composite["lengths"][0])
        if (linear["_target_"], cosine["_target_"]) == (LINEAR, COSINE):
            return warmup_fraction, float(cosine["end_value"]) / float(cosine["start_value"])
    except (TypeError, KeyError, ValueError):
        pass
    raise InputError(
        "reference config key {key!r} ({where}): only a linear warmup then a cosine decay translates "
        "(to optim.warmup_steps and optim.min_lr_ratio)",
        key=key,
        where=where,
    )


def _constant(schedulers: Any) -> float | None:
    """The value of the reference's constant scheduler option ([{scheduler: {value: x}}]), else None."""
    try:
        (entry,) = schedulers
        return float(entry["scheduler"]["value"])
    except (TypeError, KeyError, ValueError):
        return None


def _clip_groups(configs: Any, key: str, where: str) -> list[dict[str, Any]]:
    """The reference's gradient_clip.configs ([{module_name: [...], max_norm, norm_type}]) as optim.clip_groups."""
    groups = []
    for config in configs:
        if float(config.get("norm_type", 2)) != 2:
            raise InputError(
                "reference config key {key!r} ({where}): only norm_type 2 is supported", key=key, where=where
            )
        names = config["module_name"] if isinstance(config["module_name"], list) else [config["module_name"]]
        groups.append({"name": "_".join(names), "params": [f"*{n}*" for n in names], "max_norm": config["max_norm"]})
    return groups


def _steps_from_epochs(epochs: Mapping[str, Any]) -> dict[str, Any]:
    """Epoch counts become steps: max_steps = max_epochs x limit_train_batches, and so on."""
    if not epochs:
        return {}
    if "limit_train_batches" not in epochs:
        raise InputError(
            "reference config sets {keys} without limit_train_batches (steps per epoch)", keys=sorted(epochs)
        )
    per_epoch = int(epochs["limit_train_batches"])
    ours: dict[str, Any] = {"data.batches_per_epoch": per_epoch}
    if "max_epochs" in epochs:
        ours["optim.max_steps"] = int(epochs["max_epochs"]) * per_epoch
    if "val_epoch_freq" in epochs:
        ours["validation.every"] = int(epochs["val_epoch_freq"]) * per_epoch
    if "checkpoint.save_freq" in epochs:
        ours["checkpoint.every"] = int(epochs["checkpoint.save_freq"]) * per_epoch
    return ours


def _with_defaults(loaded: Mapping[str, Any], folder: Path, read_yaml: Callable[[Path], Any]) -> dict[str, Any]:
    """Hydra's `defaults: [a.yaml, ...]`: those files (from `folder`) first, `loaded` merged over them."""
    merged: dict[str, Any] = {}
    for name in loaded.get("defaults") or []:
        name = name if isinstance(name, str) else next(iter(name.values()))
        path = folder / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not path.is_file():
            raise InputError("reference config: defaults file {path} does not exist", path=path)
        _deep_update(merged, _with_defaults(read_yaml(path) or {}, folder, read_yaml))
    _deep_update(merged, {key: value for key, value in loaded.items() if key != "defaults"})
    return merged


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value, in document order."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _interpolate(value: Any, tree: Mapping[str, Any], key: str) -> Any:
    """Resolve `${a.b}` references to other keys of `tree` (a string that is one reference takes its type)."""
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(path: str) -> Any:
        node: Any = tree
        for part in path.strip().split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise InputError("reference config key {key!r}: ${{{path}}} names no key", key=key, path=path)
            node = node[part]
        return _interpolate(node, tree, path)

    whole = INTERPOLATION.fullmatch(value)
    return lookup(whole.group(1)) if whole else INTERPOLATION.sub(lambda m: str(lookup(m.group(1))), value)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        cursor = nested
        *parents, last = dotted.split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[last] = value
    return nested
