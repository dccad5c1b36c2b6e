"""Finding, reading, checking and writing VGGT checkpoints.

Sources: a Hugging Face Hub repo id (through huggingface_hub's cache, so `HF_HUB_OFFLINE=1` works
with a cached snapshot), a `save_pretrained` directory (`config.json` + `model.safetensors`), a
`.safetensors` file, or a `.pt`/`.pth` state dict read with `torch.load(weights_only=True)`.
Every failure is a `CheckpointError` (`CheckpointNotFoundError`, also a FileNotFoundError, when nothing is
there) with one message that names the problem and the way out.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vggt.errors import CheckpointError, CheckpointNotFoundError, InputError
from vggt.models.config import HEAD_NAMES, REFERENCE_KWARGS, VGGTConfig, get_preset
from vggt.utils.files import atomic_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Looked for, in order, in a directory or a Hub repo. The released VGGT-1B repo ships model.pt too.
WEIGHT_CANDIDATES = (WEIGHTS_NAME, "model.pt", "pytorch_model.bin", "model.pth")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
MODEL_TYPE = "vggt"
# Keys a state dict may be nested under in training checkpoints.
NESTED_KEYS = ("model", "state_dict", "model_state_dict")
MAX_NAMES_SHOWN = 5


# ---------------------------------------------------------------------------------------- config


def config_to_json(config: VGGTConfig) -> dict[str, Any]:
    return {"model_type": MODEL_TYPE, **config.to_dict()}


def config_from_json(data: Mapping[str, Any], source: str) -> VGGTConfig:
    """Our `config.json` (model_type "vggt") or the reference's (its constructor keywords)."""
    data = dict(data)
    if data.pop("model_type", None) == MODEL_TYPE:
        try:
            return VGGTConfig.from_dict(data)
        except (TypeError, ValueError) as err:
            raise CheckpointError("{source}: invalid VGGT config: {err}", source=source, err=err) from None
    reference = {k: v for k, v in data.items() if k in REFERENCE_KWARGS}
    return VGGTConfig(**reference)


def _read_config_file(path: Path) -> VGGTConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            "{path} is not valid JSON ({err}); fix or delete it, or pass {config} or {preset}", path=path, err=err
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            "{path} must hold a JSON object; fix or delete it, or pass {config} or {preset}", path=path
        )
    return config_from_json(data, str(path))


# ---------------------------------------------------------------------------------------- finding


def is_hub_id(name: str) -> bool:
    """`owner/name` that huggingface_hub accepts (its characters, length and no leading `-`/`.`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or name.startswith((".", "~")) or os.path.splitext(name)[1]:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_reachable(repo_id: str, revision: str | None, token: str | bool | None) -> bool:
    """One HEAD request to the Hub, without huggingface_hub's retries (which take ~25 s and log each try when
    the network is down). False when there is no connection (or HF_HUB_OFFLINE=1); True on any HTTP answer."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, WEIGHTS_NAME, revision=revision), token=token, retry_on_errors=False)
    except HfHubHTTPError:  # the server answered (missing file, gated, unknown repo...): handled below
        return True
    except Exception:  # connection refused, timeout, DNS, offline mode
        return False
    return True


def resolve_checkpoint(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path | None]:
    """Locate (weights file, config file or None) for a local path or a Hub repo id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for candidate in WEIGHT_CANDIDATES:
            if (path / candidate).is_file():
                config = path / CONFIG_NAME
                return path / candidate, config if config.is_file() else None
        raise CheckpointNotFoundError(
            "No weights in directory {path}: expected one of {names} "
            "(save_pretrained writes config.json + model.safetensors)",
            path=path,
            names=", ".join(WEIGHT_CANDIDATES),
        )
    if path.is_file():
        sibling = path.parent / CONFIG_NAME
        return path, sibling if sibling.is_file() else None
    if path.suffix in (".safetensors", *TORCH_SUFFIXES) or not is_hub_id(str(name_or_path)):
        raise CheckpointNotFoundError(
            "Checkpoint not found: {name} is neither an existing file or directory nor a valid Hub repo id "
            "like 'facebook/VGGT-1B' (letters, digits, '-', '_', '.'; at most 96 characters)",
            name=name_or_path,
        )
    return _download_from_hub(
        str(name_or_path),
        revision=revision,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
        token=token,
    )


def _download_from_hub(repo_id: str, **kwargs: Any) -> tuple[Path, Path | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline_advice = (
        "Could not get {repo_id} from the Hugging Face Hub: no network connection (or HF_HUB_OFFLINE=1) and no "
        "cached copy. Download model.safetensors (and config.json) on a connected machine, then pass the local "
        "path: VGGT.from_pretrained('/path/to/model.safetensors'), or {checkpoint=/path/to/dir}"
    )
    if not kwargs.get("local_files_only") and not hub_reachable(repo_id, kwargs.get("revision"), kwargs.get("token")):
        # Only cached files can be had: without this, each name not cached would be retried over the network.
        kwargs = {**kwargs, "local_files_only": True}
    weights = None
    for candidate in WEIGHT_CANDIDATES:
        try:
            weights = Path(hf_hub_download(repo_id, candidate, **kwargs))
            break
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError, so caught first)
            # No connection (or offline mode) and not cached under this name. Only cached files can be had
            # now: look the other names up in the cache alone instead of retrying the network for each.
            kwargs = {**kwargs, "local_files_only": True}
            continue
        except EntryNotFoundError:  # the repo has no file of this name
            continue
        except GatedRepoError:
            raise CheckpointError(
                "{repo_id} is gated on the Hub: accept its terms on the model page and log in (`hf auth login`)",
                repo_id=repo_id,
            ) from None
        except RepositoryNotFoundError:
            raise CheckpointError(
                "Hub repo {repo_id} not found (or private: log in with `hf auth login` or pass token=)", repo_id=repo_id
            ) from None
        except RevisionNotFoundError:
            raise CheckpointError(
                "Revision {revision!r} not found in Hub repo {repo_id}",
                revision=kwargs.get("revision"),
                repo_id=repo_id,
            ) from None
        except OSError as err:  # network failures surface as OSError subclasses
            raise CheckpointError(offline_advice + " ({kind})", repo_id=repo_id, kind=type(err).__name__) from None
    if weights is None:
        raise CheckpointError(offline_advice, repo_id=repo_id)
    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, **kwargs))
    except Exception:  # a repo without config.json (or not cached) falls back to the preset
        config = None
    return weights, config


# ---------------------------------------------------------------------------------------- reading


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a `.pt`/`.pth`/`.bin` state dict (never unpickles objects)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        if path.suffix != ".safetensors" and "weights_only" in str(err):
            raise CheckpointError(
                "{path} holds Python objects besides tensors and is not loaded, since unpickling them could run "
                "arbitrary code; save a plain state dict (torch.save(model.state_dict(), ...)) or safetensors",
                path=path,
            ) from None
        raise CheckpointError(
            "{path} is truncated or corrupt and cannot be read ({kind}: {detail}); download it again",
            path=path,
            kind=type(err).__name__,
            detail=str(err)[:120],
        ) from None
    if isinstance(state, Mapping):
        for key in NESTED_KEYS:
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("{path} does not hold a state dict of tensors", path=path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    return shown + (f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else "")


VGGT_ADVICE = "pass the matching {config} or {preset} (e.g. {preset=tiny}), or check that this is a VGGT checkpoint"


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, advice: str = VGGT_ADVICE
) -> None:
    """Raise a CheckpointError naming missing/unexpected keys or the first mismatched shape, then `advice`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
        raise CheckpointError(
            "{source} does not match the model: {parts}; " + advice, source=source, parts="; ".join(parts)
        )
    _check_shapes(state, expected, source, advice)


def _check_shapes(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str, advice: str = VGGT_ADVICE
) -> None:
    """Raise a CheckpointError at the first tensor of `state` whose shape or kind differs from `expected`'s."""
    for key, tensor in expected.items():
        if key not in state:
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                "{source}: tensor {key} has shape {shape}, the model expects {expected}; " + advice,
                source=source,
                key=key,
                shape=tuple(state[key].shape),
                expected=tuple(tensor.shape),
            )
        if tensor.is_floating_point() and not state[key].is_floating_point():
            raise CheckpointError(
                "{source}: tensor {key} holds {dtype} values, the model expects floating-point weights; the file is "
                "not a VGGT checkpoint or was converted wrongly (save it with float32/bfloat16 tensors)",
                source=source,
                key=key,
                dtype=str(state[key].dtype).removeprefix("torch."),
            )


# ---------------------------------------------------------------------------------------- loading


def apply_model_kwargs(config: VGGTConfig, model_kwargs: Mapping[str, Any], source: str) -> VGGTConfig:
    """The checkpoint's config with the reference constructor's keywords applied, as the Hub mixin passes them.

    Switching a head off (`enable_track=False`) is applied; a size that differs from the checkpoint's, or a head
    the checkpoint lacks, contradicts it and is refused.
    """
    unknown = sorted(set(model_kwargs) - set(REFERENCE_KWARGS))
    if unknown:
        raise InputError(
            "from_pretrained got unknown keywords {unknown}; it takes {accepted}, config, preset, device, dtype, "
            "map_location, strict and the Hub's download options",
            unknown=", ".join(unknown),
            accepted=", ".join(REFERENCE_KWARGS),
        )
    contradictions = [
        f"{name}={value!r} (checkpoint: {getattr(config, name)!r})"
        for name, value in model_kwargs.items()
        if value != getattr(config, name) and not (name.startswith("enable_") and value is False)
    ]
    if contradictions:
        raise CheckpointError(
            "{source}: {contradictions} contradicts the checkpoint; leave these keywords out, or pass a matching "
            "checkpoint",
            source=source,
            contradictions=", ".join(contradictions),
        )
    return dataclasses.replace(config, **model_kwargs)


def _without_disabled_heads(state: dict[str, torch.Tensor], config: VGGTConfig) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors less those of the heads `config` switches off."""
    dropped = tuple(f"{name}_head." for name in HEAD_NAMES if not getattr(config, f"enable_{name}"))
    return {k: v for k, v in state.items() if not k.startswith(dropped)} if dropped else state


def _resolve_device(device: str | torch.device | None, map_location: str | torch.device | None) -> torch.device:
    if device is not None and map_location is not None and torch.device(device) != torch.device(map_location):
        raise InputError(
            "device={device} and map_location={map_location} disagree; pass one of them",
            device=device,
            map_location=map_location,
        )
    return torch.device(device if device is not None else (map_location or "cpu"))


def load_pretrained(
    cls: type[nn.Module],
    name_or_path: str | Path,
    *,
    config: VGGTConfig | None = None,
    preset: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    map_location: str | torch.device | None = None,
    strict: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    **hub_kwargs: Any,
) -> nn.Module:
    """A `cls(config=...)` model (VGGT) holding the checkpoint's weights, in eval mode on `device`.

    The architecture comes from `config`, else `preset`, else the checkpoint's `config.json`, else VGGT-1B, with
    `model_kwargs` (the reference constructor's keywords) applied (`apply_model_kwargs`). `map_location` is
    where the model goes (`device` is its other name). `strict=False` loads what matches and keeps the freshly
    initialised tensors for the rest; shapes must still agree.
    """
    weights_path, config_path = resolve_checkpoint(name_or_path, **hub_kwargs)
    target = _resolve_device(device, map_location)
    if config is None:
        if preset is not None:
            config = get_preset(preset)
        elif config_path is not None:
            config = _read_config_file(config_path)
        else:
            config = VGGTConfig()
    config = apply_model_kwargs(config, model_kwargs or {}, str(weights_path))
    state = _without_disabled_heads(read_state_dict(weights_path), config)

    if strict:
        # Build without allocating or initialising parameters, then adopt the checkpoint's tensors.
        with torch.device("meta"):
            model = cls(config=config)
        check_state_dict(model, state, str(weights_path))
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model = cls(config=config)
        expected = model.state_dict()
        _check_shapes({k: v for k, v in state.items() if k in expected}, expected, str(weights_path))
        model.load_state_dict(state, strict=False)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(
            "internal error: tensors {names} were not materialised by the checkpoint", names=_few(leftover)
        )
    model.to(device=target, dtype=dtype or torch.float32)
    model.eval()
    return model


def save_model_dir(directory: str | Path, state_dict: Mapping[str, torch.Tensor], config: VGGTConfig) -> Path:
    """Write `config.json` and `model.safetensors` (each atomically) into `directory`: the layout
    `VGGT.from_pretrained(directory)` reads, for `VGGT.save_pretrained` and for training checkpoints alike."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_file(directory / WEIGHTS_NAME) as staging:
        save_file(tensors, str(staging), metadata={"format": "pt"})
    with atomic_file(directory / CONFIG_NAME) as staging:
        staging.write_text(json.dumps(config_to_json(config), indent=2, sort_keys=True))
    return directory
