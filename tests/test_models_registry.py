"""The model registry: names, strict and safe loading under the published key names, Hub resolution."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from family_goldens import golden_weights
from safetensors.torch import load_file

from vggt.errors import CheckpointError, InputError
from vggt.models.registry import create_model, list_models, locate_weights

RELEASED = ["vggt-1b", "vggt-omega-1b-512", "vggt-omega-1b-256-text", "pi3", "pi3x"]
OMEGA_FILE = "vggt_omega_1b_512.pt"
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_list_models_names_the_released_models_and_the_presets():
    assert list_models() == RELEASED
    everything = list_models(include_presets=True)
    assert set(RELEASED) < set(everything)
    assert {"vggt-tiny", "vggt-omega-tiny", "vggt-omega-text-tiny", "pi3-tiny", "pi3x-tiny"} <= set(everything)


def test_unknown_name_lists_the_choices():
    with pytest.raises(InputError, match="Unknown model 'pi4'.*vggt-omega-1b-512"):
        create_model("pi4")


def test_unknown_override_is_an_input_error():
    with pytest.raises(InputError, match="not settings of model"):
        create_model("pi3-tiny", decoder_widht=3)


def test_random_preset_warns(caplog):
    with caplog.at_level(logging.WARNING):
        model = create_model("vggt-omega-tiny")
    assert "RANDOM weights" in caplog.text and not model.training


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    images = torch.rand(1, 2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(a(images)["depth"], b(images)["depth"], atol=0, rtol=0)


def test_raw_pt_state_dict_loads_through_weights_only(tmp_path):
    state = load_file(str(golden_weights("vggt-omega-tiny")))
    torch.save(state, tmp_path / OMEGA_FILE)
    _same(create_model("vggt-omega-tiny", golden_weights("vggt-omega-tiny")),
          create_model("vggt-omega-tiny", tmp_path / OMEGA_FILE))  # fmt: skip


def test_pt_holding_python_objects_is_refused(tmp_path):
    state = load_file(str(golden_weights("vggt-omega-tiny")))
    torch.save({"model": state, "optimizer_factory": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        create_model("vggt-omega-tiny", tmp_path / "pickled.pt")


def test_loading_is_strict_about_names_and_shapes(tmp_path):
    from safetensors.torch import save_file

    state = load_file(str(golden_weights("pi3-tiny")))
    renamed = {k.replace("camera_head.fc_t", "camera_head.fc_trans"): v for k, v in state.items()}
    save_file(renamed, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(camera_head.fc_t.weight.*unexpected keys"):
        create_model("pi3-tiny", tmp_path / "renamed.safetensors")
    state["camera_head.fc_t.bias"] = torch.zeros(4)
    save_file(state, str(tmp_path / "reshaped.safetensors"))
    with pytest.raises(CheckpointError, match=r"camera_head.fc_t.bias has shape \(4,\), the model expects \(3,\)"):
        create_model("pi3-tiny", tmp_path / "reshaped.safetensors")
    with pytest.raises(CheckpointError, match="992 missing keys"):
        create_model("pi3", golden_weights("pi3-tiny"))  # the released size does not take the small weights


def _hub_cache(cache: Path) -> Path:
    """huggingface_hub's cache layout for facebook/VGGT-Omega at revision main, holding the raw .pt file."""
    repo = cache / "models--facebook--VGGT-Omega"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    torch.save(load_file(str(golden_weights("vggt-omega-tiny"))), snapshot / OMEGA_FILE)
    return snapshot / OMEGA_FILE


def _offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_hub_id_resolves_the_published_file_from_the_cache(tmp_path):
    expected = _hub_cache(tmp_path / "cache")
    code = (
        "from vggt.models.registry import create_model, locate_weights\n"
        f"print(locate_weights('facebook/VGGT-Omega', {OMEGA_FILE!r}))\n"
        "print(type(create_model('vggt-omega-tiny', locate_weights('facebook/VGGT-Omega', "
        f"{OMEGA_FILE!r}))).__name__)\n"
    )
    result = _offline(code, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    path, name = result.stdout.split()
    assert Path(path).resolve() == expected.resolve() and name == "VGGTOmega"


def test_uncached_hub_file_offline_says_what_to_do(tmp_path):
    _hub_cache(tmp_path / "cache")
    code = "from vggt.models.registry import locate_weights\nlocate_weights('facebook/VGGT-Omega', 'missing.pt')\n"
    result = _offline(code, tmp_path / "cache")
    assert result.returncode != 0
    assert "CheckpointError" in result.stderr and "checkpoint=/path/to/file" in result.stderr


def test_folder_holding_the_published_file_name(tmp_path):
    torch.save(load_file(str(golden_weights("vggt-omega-tiny"))), tmp_path / OMEGA_FILE)
    assert locate_weights(tmp_path, OMEGA_FILE) == tmp_path / OMEGA_FILE
