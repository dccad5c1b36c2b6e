"""Every way of loading weights, and every way it can fail, with the message users see."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vggt.models.checkpoint import CheckpointError, config_from_json
from vggt.models.config import VGGTConfig, get_preset
from vggt.models.vggt import VGGT

REPO_ID = "facebook/VGGT-1B"
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny() -> VGGT:
    torch.manual_seed(0)
    return VGGT.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(1))


def _same_outputs(a: VGGT, b: VGGT, images: torch.Tensor) -> None:
    with torch.no_grad():
        out_a, out_b = a(images), b(images)
    for key in ("pose_enc", "depth", "world_points"):
        torch.testing.assert_close(out_a[key], out_b[key], atol=0, rtol=0)


def _populate_hub_cache(cache: Path, source_dir: Path) -> None:
    """Lay files out exactly as huggingface_hub's cache does for `REPO_ID` at revision main."""
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((source_dir / name).read_bytes())


def test_save_pretrained_round_trip(tiny, images, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "vggt" and config["embed_dim"] == 64
    loaded = VGGT.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == tiny.config and not loaded.training
    assert not loaded.aggregator.patch_embed.mask_token.requires_grad
    _same_outputs(tiny, loaded, images)


def test_golden_safetensors_file_with_preset(golden_dir, golden_io):
    model = VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny")
    with torch.no_grad():
        out = model(golden_io["input.images"])
    torch.testing.assert_close(out["depth"], golden_io["forward.depth"], atol=1e-4, rtol=1e-4)


def test_pt_state_dicts(tiny, images, tmp_path):
    torch.save(tiny.state_dict(), tmp_path / "plain.pt")
    _same_outputs(tiny, VGGT.from_pretrained(tmp_path / "plain.pt", preset="tiny"), images)
    torch.save({"model": tiny.state_dict(), "step": 3}, tmp_path / "nested.pth")
    _same_outputs(tiny, VGGT.from_pretrained(tmp_path / "nested.pth", config=get_preset("tiny")), images)


def test_pt_with_python_objects_is_refused(tiny, tmp_path):
    torch.save({"model": tiny.state_dict(), "optimizer_factory": VGGTConfig()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        VGGT.from_pretrained(tmp_path / "pickled.pt", preset="tiny")


def test_hub_repo_id_from_cache(tiny, images, tmp_path):
    tiny.save_pretrained(tmp_path / "src")
    _populate_hub_cache(tmp_path / "cache", tmp_path / "src")
    loaded = VGGT.from_pretrained(REPO_ID, cache_dir=tmp_path / "cache", local_files_only=True)
    assert loaded.config == tiny.config
    _same_outputs(tiny, loaded, images)


def _run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_hub_offline_env_uses_cached_snapshot(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "src")
    _populate_hub_cache(tmp_path / "cache", tmp_path / "src")
    code = f"from vggt.models.vggt import VGGT; m = VGGT.from_pretrained('{REPO_ID}'); print(m.config.embed_dim)"
    result = _run_offline(code, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "64"


def test_hub_offline_nothing_cached_says_how_to_pass_a_path(tmp_path):
    (tmp_path / "cache").mkdir()
    code = (
        "from vggt.models.vggt import VGGT\n"
        "from vggt.models.checkpoint import CheckpointError\n"
        f"try:\n    VGGT.from_pretrained('{REPO_ID}')\nexcept CheckpointError as e:\n    print(e)\n"
    )
    result = _run_offline(code, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "no cached copy" in result.stdout and "VGGT.from_pretrained('/path/to/model.safetensors')" in result.stdout


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        VGGT.from_pretrained(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No weights in directory"):
        VGGT.from_pretrained(tmp_path / "empty")


def test_truncated_and_corrupt_files(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    data = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        VGGT.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        VGGT.from_pretrained(tmp_path / "junk.pt", preset="tiny")


def test_missing_and_unexpected_keys_are_named(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state.pop("camera_head.trunk_norm.weight")
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "keys.safetensors")
    with pytest.raises(CheckpointError) as err:
        VGGT.from_pretrained(tmp_path / "keys.safetensors", preset="tiny")
    message = str(err.value)
    assert "1 missing keys (camera_head.trunk_norm.weight)" in message
    assert "1 unexpected keys (decoder.extra.weight)" in message


def test_wrong_architecture_is_a_shape_mismatch_naming_the_tensor(tiny, tmp_path):
    save_file(tiny.state_dict(), tmp_path / "tiny.safetensors")
    wider = dataclasses.replace(get_preset("tiny"), embed_dim=128)
    with pytest.raises(CheckpointError, match=r"tensor aggregator.camera_token has shape \(1, 2, 1, 64\)"):
        VGGT.from_pretrained(tmp_path / "tiny.safetensors", config=wider)


def test_reference_style_config_json():
    config = config_from_json({"img_size": 518, "patch_size": 14, "embed_dim": 1024, "enable_track": False}, "x")
    assert config == VGGTConfig(enable_track=False)


def test_hub_snapshot_with_only_model_pt(tiny, images, tmp_path):
    """The released repo also ships model.pt; a cache holding only that file still loads."""
    snapshot = tmp_path / "cache" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(FAKE_COMMIT)
    torch.save(tiny.state_dict(), snapshot / "model.pt")
    loaded = VGGT.from_pretrained(REPO_ID, cache_dir=tmp_path / "cache", local_files_only=True, preset="tiny")
    _same_outputs(tiny, loaded, images)
