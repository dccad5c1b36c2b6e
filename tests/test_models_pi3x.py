"""Pi3X reproduces yyfz/Pi3's Pi3X: golden outputs of the reference on a small configuration without conditions,
with known intrinsics and with known depth, the released key manifest, and the refusal of pose conditioning."""

from __future__ import annotations

import pytest
import torch
from family_goldens import assert_matches_golden, golden_io, golden_weights, manifest, released_manifest

from vggt.errors import InputError
from vggt.models.family_outputs import to_geometry
from vggt.models.pi3x import Pi3X
from vggt.models.registry import create_model

OUTPUTS = ["points", "local_points", "rays", "conf", "camera_poses", "metric"]


@pytest.fixture(scope="module")
def golden():
    return create_model("pi3x-tiny", checkpoint=golden_weights("pi3x-tiny")), golden_io("pi3x-tiny")


@pytest.mark.parametrize("run", ["plain", "intrinsics", "depth"])
def test_reproduces_reference_outputs(golden, run):
    model, io = golden
    conditions = {run: io[f"input.{run}"]} if run != "plain" else {}
    with torch.no_grad():
        outputs = model(io["input.images"], **conditions)
    assert_matches_golden({f"{run}.{k}": v for k, v in outputs.items()}, io, [f"{run}.{k}" for k in OUTPUTS])


def test_conditions_change_the_prediction(golden):
    _, io = golden
    plain = io["output.plain.local_points"]
    for run in ("intrinsics", "depth"):
        assert (io[f"output.{run}.local_points"] - plain).abs().max() > 1e-3


def test_metric_scale_is_applied_to_translations_and_points(golden):
    model, io = golden
    with torch.no_grad():
        outputs = model(io["input.images"])
    geometry = to_geometry(outputs, io["input.images"].shape[-2:])
    torch.testing.assert_close(geometry["depth"], outputs["local_points"][..., 2])
    assert outputs["metric"].shape == (1,) and (outputs["metric"] > 0).all()


def test_pose_conditioning_is_refused_with_a_clear_error(golden):
    model, io = golden
    with pytest.raises(InputError, match="pose conditioning"):
        model(io["input.images"], poses=torch.eye(4).expand(1, 3, 4, 4))


def test_released_key_manifest():
    with torch.device("meta"):
        model = Pi3X()
    assert manifest(model) == released_manifest("pi3x-tiny")
