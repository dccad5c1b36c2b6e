"""The model registry: every model of the VGGT family by name (timm's `create_model` / `list_models` pattern).

    create_model("pi3")                                   # the released weights from the Hub (or its cache)
    create_model("vggt-omega-1b-512", checkpoint="/models/vggt_omega_1b_512.pt")   # offline: a local file or folder
    create_model("pi3-tiny")                              # a small preset with RANDOM weights, for tests

Each released model loads its published checkpoint strictly under the published key names: safetensors, or a
raw `.pt` state dict read with `torch.load(weights_only=True)` (tensors only, never arbitrary pickles).
`overrides` are fields of the model's config (e.g. `enable_alignment=True`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vggt.errors import CheckpointError, CheckpointNotFoundError, InputError
from vggt.models.checkpoint import check_state_dict, hub_reachable, is_hub_id, read_state_dict, resolve_checkpoint
from vggt.models.pi3 import Pi3, Pi3Config
from vggt.models.pi3x import Pi3X, Pi3XConfig
from vggt.models.vggt_omega import OmegaConfig, VGGTOmega

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model: how to build it and where its released weights are.

    `hub_id` / `hub_filename`: the Hugging Face repo and file of the released weights (None: a random preset).
    `resolution`: the longest image side (or, for Pi3, the side of a square of the same pixel count) it was
    trained at; `patch_size`: image sides must be multiples of it. `metric`: whether outputs are in metres.
    """

    name: str
    family: str
    config: Any
    hub_id: str | None = None
    hub_filename: str | None = None
    resolution: int = 518
    patch_size: int = 14
    metric: bool = False
    reference_frame: str = "first camera"
    outputs: tuple[str, ...] = ()
    conditioning: tuple[str, ...] = ()
    weights_licence: str = ""

    @property
    def released(self) -> bool:
        return self.hub_id is not None


def _build_vggt(entry: ModelEntry, checkpoint: str | os.PathLike | None, overrides: dict[str, Any]) -> nn.Module:
    from vggt.models.build import build_model

    if entry.released or checkpoint is not None:
        return build_model(checkpoint or entry.hub_id, preset=entry.config)
    return build_model(None, preset=entry.config, **overrides)


_VGGT_OUTPUTS = ("cameras", "depth", "points", "tracks")
_OMEGA_OUTPUTS = ("cameras", "depth")
_PI3_OUTPUTS = ("camera poses", "local points (depth)", "points")
_OMEGA_LICENCE = "FAIR Noncommercial Research License (gated)"
_PI3_LICENCE = "CC BY-NC 4.0"
_OMEGA_TINY = OmegaConfig(
    embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=4,
    depth=4,
    num_heads=4,
    num_register_tokens=3,
    register_attention_blocks=(1,),
    dense_features=16,
    dense_out_channels=(8, 16, 32, 32),
    dense_layers=(0, 1, 2, 3),
)
_PI3_TINY = Pi3Config(
    encoder_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    decoder_dim=32,
    decoder_depth=4,
    decoder_num_heads=2,
    head_dim=32,
    head_depth=2,
    head_num_heads=2,
    camera_dim=16,
)
_PI3X_TINY = Pi3XConfig(
    **dataclasses.asdict(_PI3_TINY), conv_channels=(32, 16, 16), conv_last_channels=8, metric_dim=16, metric_depth=2,
    metric_num_heads=2,
)  # fmt: skip

_ENTRIES = (
    ModelEntry(
        "vggt-1b", "vggt", "vggt-1b", "facebook/VGGT-1B", "model.safetensors", 518, 14, False, "first camera",
        _VGGT_OUTPUTS, ("intrinsics", "poses", "depth (replace predictions, constrain BA)"),
        "VGGT licence (non-commercial); VGGT-1B-Commercial under its own terms",
    ),
    ModelEntry(
        "vggt-omega-1b-512", "vggt-omega", OmegaConfig(), "facebook/VGGT-Omega", "vggt_omega_1b_512.pt", 512, 16,
        False, "first camera", _OMEGA_OUTPUTS, ("intrinsics", "poses", "depth (replace predictions, constrain BA)"),
        _OMEGA_LICENCE,
    ),
    ModelEntry(
        "vggt-omega-1b-256-text", "vggt-omega", OmegaConfig(enable_alignment=True), "facebook/VGGT-Omega",
        "vggt_omega_1b_256_text.pt", 256, 16, False, "first camera", (*_OMEGA_OUTPUTS, "text embedding"),
        ("intrinsics", "poses", "depth (replace predictions, constrain BA)"), _OMEGA_LICENCE,
    ),
    ModelEntry(
        "pi3", "pi3", Pi3Config(), "yyfz233/Pi3", "model.safetensors", 504, 14, False, "none (aligned to the first "
        "camera on output)", _PI3_OUTPUTS, (), _PI3_LICENCE,
    ),
    ModelEntry(
        "pi3x", "pi3x", Pi3XConfig(), "yyfz233/Pi3X", "model.safetensors", 504, 14, True, "none (aligned to the "
        "first camera on output)", (*_PI3_OUTPUTS, "rays", "metric scale"), ("intrinsics", "depth"), _PI3_LICENCE,
    ),
    ModelEntry("vggt-tiny", "vggt", "tiny", resolution=518),
    ModelEntry("vggt-omega-tiny", "vggt-omega", _OMEGA_TINY, resolution=64, patch_size=16),
    ModelEntry(
        "vggt-omega-text-tiny", "vggt-omega", dataclasses.replace(_OMEGA_TINY, enable_alignment=True),
        resolution=64, patch_size=16,
    ),
    ModelEntry("pi3-tiny", "pi3", _PI3_TINY, resolution=56, reference_frame="none"),
    ModelEntry("pi3x-tiny", "pi3x", _PI3X_TINY, resolution=56, metric=True, reference_frame="none"),
)  # fmt: skip
REGISTRY: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}

_MODEL_CLASSES: dict[str, Callable[[Any], nn.Module]] = {"vggt-omega": VGGTOmega, "pi3": Pi3, "pi3x": Pi3X}


def list_models(include_presets: bool = False) -> list[str]:
    """Names of the released models (and, with `include_presets`, of the small random-weight presets)."""
    return [name for name, entry in REGISTRY.items() if include_presets or entry.released]


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; InputError naming the choices for an unknown name."""
    if name not in REGISTRY:
        raise InputError(
            "Unknown model {model!r}; choose one of {choices} (small presets with random weights: {presets})",
            model=name,
            choices=", ".join(list_models()),
            presets=", ".join(sorted(set(REGISTRY) - set(list_models()))),
        )
    return REGISTRY[name]


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Model `name` in eval mode on `device`, holding `checkpoint`'s weights.

    `checkpoint`: a Hub repo id, a folder, or a `.safetensors` / `.pt` file; None: the released weights (from the
    Hub or its cache), or RANDOM weights for a small preset or with `pretrained=False` (with a warning). Raises
    InputError for an unknown name, CheckpointError for weights that do not match the model's published keys and
    shapes.
    """
    entry = get_entry(name)
    if checkpoint is None and not pretrained:
        entry = dataclasses.replace(entry, hub_id=None)
    if entry.family == "vggt":
        model = _build_vggt(entry, checkpoint, overrides).to(device).eval()
    else:
        model = _build_family_model(entry, checkpoint, overrides, device)
    model.registry_name = name  # how the pipeline names the model in messages and outputs
    return model


def expected_config(name: str) -> Any:
    """The configuration `create_model(name)` builds, without building it (VGGTConfig for the VGGT family)."""
    entry = get_entry(name)
    if entry.family == "vggt":
        from vggt.models.config import get_preset

        return get_preset(entry.config)
    return dataclasses.replace(entry.config, default_resolution=entry.resolution)


def _build_family_model(
    entry: ModelEntry, checkpoint: str | os.PathLike | None, overrides: dict[str, Any], device: str | torch.device
) -> nn.Module:
    name = entry.name
    try:
        config = dataclasses.replace(entry.config, **{"default_resolution": entry.resolution, **overrides})
    except TypeError as err:
        raise InputError("{overrides} are not settings of model {model!r}: {err}", overrides=overrides,
                         model=name, err=err) from None  # fmt: skip
    model_class = _MODEL_CLASSES[entry.family]
    source = checkpoint if checkpoint is not None else entry.hub_id
    if source is None:
        logger.warning("model %r has no released weights: it runs with RANDOM weights (outputs are meaningless)", name)
        return model_class(config).to(device).eval()
    weights = locate_weights(source, entry.hub_filename)
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = model_class(config)
    advice = f"check that it holds the weights of model {name} (or choose the model it is for)"
    check_state_dict(model, state, str(weights), advice)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=torch.float32).eval()


def locate_weights(source: str | os.PathLike, hub_filename: str | None = None) -> Path:
    """The weights file of a checkpoint: a file, a folder (holding `hub_filename` or the usual names) or a Hub
    repo id (its `hub_filename`, through huggingface_hub's cache, so `HF_HUB_OFFLINE=1` works when cached)."""
    path = Path(source).expanduser()
    if hub_filename and path.is_dir() and (path / hub_filename).is_file():
        return path / hub_filename
    if path.exists() or not hub_filename or hub_filename == "model.safetensors":
        return resolve_checkpoint(source)[0]
    return _download(str(source), hub_filename)


def _download(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if not is_hub_id(repo_id):
        raise CheckpointNotFoundError(
            "Checkpoint not found: {name} is neither an existing file or directory nor a valid Hub repo id "
            "like 'facebook/VGGT-1B'",
            name=repo_id,
        )
    try:  # without a connection only the cache is looked at (no retries for ~25 s)
        return Path(hf_hub_download(repo_id, filename, local_files_only=not hub_reachable(repo_id, None, None)))
    except GatedRepoError:
        raise CheckpointError(
            "{repo_id} is gated on the Hub: request access on its model page, log in (`hf auth login`), or pass "
            "{checkpoint=/path/to/file} with a copy you downloaded",
            repo_id=repo_id,
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError("Hub repo {repo_id} not found (or private: log in with `hf auth login`)",
                              repo_id=repo_id) from None  # fmt: skip
    except (LocalEntryNotFoundError, OSError) as err:
        raise CheckpointError(
            "Could not get {filename} of {repo_id}: no network connection (or HF_HUB_OFFLINE=1) and no cached copy "
            "({kind}); download it on a connected machine and pass {checkpoint=/path/to/file}",
            filename=filename,
            repo_id=repo_id,
            kind=type(err).__name__,
        ) from None
