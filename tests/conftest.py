"""Shared test fixtures: the read-only `../shared` folder (golden outputs, example photos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
EXAMPLES = SHARED / "data" / "examples"


# Overrides of configs/tiny_synthetic.yaml for quick CPU training runs: 2-frame samples of 56 x 70 scenes,
# without the (slow) track head unless a test adds it; frames per GPU and steps are up to each test.
TINY_TRAINING_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_synthetic.yaml"
SMALL_TRAINING_RUN = [
    "threads=1",
    "model.heads=[camera,depth,point]",
    "data.num_frames=[2,2]",
    "data.num_scenes=8",
    "data.batches_per_epoch=5",
    "logging.progress=false",
    "logging.tensorboard=false",
    "logging.log_every=1",
    "optim.warmup_steps=0",
]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the project's ../shared folder (golden files, photos)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return _require(EXAMPLES)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN)


@pytest.fixture(scope="session")
def golden_io(golden_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden_dir / "tiny_io.safetensors"))


@pytest.fixture(scope="session")
def golden_state_dict(golden_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden_dir / "tiny_state_dict.safetensors"))


@pytest.fixture(scope="session")
def golden_config(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "tiny_config.json").read_text())


@pytest.fixture(scope="session")
def tolerances(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "tolerances.json").read_text())


def assert_close_golden(name: str, actual: torch.Tensor, expected: torch.Tensor, tolerances: dict) -> None:
    """Compare with the tolerance golden/tolerances.json gives `name` (or its default)."""
    tol = tolerances.get(name, tolerances["default"])
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        actual.detach().float(), expected.float(), atol=tol["atol"], rtol=tol["rtol"], msg=lambda m: f"{name}: {m}"
    )
