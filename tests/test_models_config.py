"""VGGTConfig refuses hostile values (a config.json is data) in one line naming the key, before any allocation."""

from __future__ import annotations

import time

import pytest

from vggt.errors import CheckpointError, InputError
from vggt.models.config import PRESETS, VGGTConfig, approximate_parameters, get_preset


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("depth", 100_000_000, "depth must be an integer in [1, 1024], got 100000000"),
        ("num_heads", 0, "num_heads must be an integer in [1, 65536], got 0"),
        ("patch_size", 0, "patch_size must be an integer in [1, 65536], got 0"),
        ("embed_dim", 2**40, "embed_dim must be an integer in [1, 65536], got 1099511627776"),
        ("mlp_ratio", -4, "mlp_ratio must be a number in (0, 64], got -4"),
        ("mlp_ratio", float("nan"), "mlp_ratio must be a number in (0, 64], got nan"),
        ("img_size", -518, "img_size must be an integer in [1, 65536], got -518"),
        ("camera_num_heads", 3, "2 * embed_dim (128) must be divisible by camera_num_heads"),
        ("enable_track", "yes", "enable_track must be true or false"),
        ("dpt_layers", [0, 1, 2, 30], "dpt_layers (0, 1, 2, 30) must name 4 aggregator blocks below depth 4"),
        ("train_resolution", 0, "train_resolution must be an integer in [1, 65536], got 0"),
    ],
)
def test_hostile_values_are_one_line_naming_the_key(key, value, expected):
    data = {**get_preset("tiny").to_dict(), key: value}
    start = time.perf_counter()
    with pytest.raises(InputError) as error:
        VGGTConfig.from_dict(data)
    assert str(error.value) == "model config " + expected
    assert time.perf_counter() - start < 1


def test_sizes_that_cannot_fit_are_refused_by_their_parameter_count():
    with pytest.raises(InputError, match=r"about \d\.\d+e\+10 parameters, more than the 2e\+10"):
        VGGTConfig(embed_dim=8192, depth=24, num_heads=16, patch_embed_num_heads=16)
    assert 1e9 < approximate_parameters(PRESETS["vggt-1b"]) < 1.5e9  # VGGT-1B has 1.26e9 (with the track head)


def test_a_checkpoint_config_with_hostile_values_names_the_file_and_key(tmp_path):
    from vggt.models.checkpoint import config_from_json

    with pytest.raises(CheckpointError, match=r"^ckpt/config.json: invalid VGGT config: model config depth must be"):
        config_from_json({"model_type": "vggt", "depth": 100_000_000}, "ckpt/config.json")
    with pytest.raises(InputError, match="img_size must be an integer"):
        config_from_json({"img_size": -518}, "reference/config.json")  # the reference's keywords
