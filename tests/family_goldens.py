"""Golden data of the VGGT-Omega and Pi3 reference implementations (tests/data/family_goldens, made by
scripts/make_family_goldens.py): the small presets' weights under the references' key names, inputs, outputs, and
the key manifests of the released sizes built from the references' own module definitions."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

GOLDENS = Path(__file__).resolve().parent / "data" / "family_goldens"
# Outputs as large as exp() makes them are compared relative to their size.
ATOL, RTOL = 1e-4, 1e-4


def golden_io(preset: str) -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / preset / "io.safetensors"))


def golden_weights(preset: str) -> Path:
    return GOLDENS / preset / "weights.safetensors"


def released_manifest(preset: str) -> set[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor of the released model, as the reference defines it."""
    lines = (GOLDENS / preset / "keys.txt").read_text().splitlines()
    return {(key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())) for key, shape in
            (line.split("\t") for line in lines)}  # fmt: skip


def manifest(model: nn.Module) -> set[tuple[str, tuple[int, ...]]]:
    return {(key, tuple(t.shape)) for key, t in model.state_dict().items()}


def assert_matches_golden(outputs: dict[str, torch.Tensor], io: dict[str, torch.Tensor], keys: list[str]) -> None:
    for key in keys:
        expected = io[f"output.{key}"]
        assert outputs[key].shape == expected.shape, key
        named = functools.partial(_named, key)
        torch.testing.assert_close(outputs[key].float(), expected, atol=ATOL, rtol=RTOL, msg=named)


def _named(key: str, message: str) -> str:
    return f"{key}: {message}"
