"""Pi3X reproduces yyfz/Pi3's Pi3X: golden outputs of the reference on a small configuration without conditions,
with known intrinsics, with known depth, with known poses (all frames, and two of three with depth), and the
released key manifest."""

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
    # Poses change the prediction beyond what the other conditions do.
    assert (io["output.poses.local_points"] - io["output.intrinsics.local_points"]).abs().max() > 1e-3


def test_metric_scale_is_applied_to_translations_and_points(golden):
    model, io = golden
    with torch.no_grad():
        outputs = model(io["input.images"])
    geometry = to_geometry(outputs, io["input.images"].shape[-2:])
    torch.testing.assert_close(geometry["depth"], outputs["local_points"][..., 2])
    assert outputs["metric"].shape == (1,) and (outputs["metric"] > 0).all()


POSE_OUTPUTS = ["local_points", "conf", "camera_poses", "metric"]


def pose_conditions(io: dict, run: str) -> dict:
    """The golden's pose runs as our keywords: every frame posed, or the first two posed (NaN for the third)."""
    if run == "poses":
        return {"intrinsics": io["input.intrinsics"], "poses": io["input.poses"]}
    poses = io["input.poses"].clone()
    poses[~io["input.pose_mask"].bool()] = torch.nan
    return {"intrinsics": io["input.intrinsics"], "depth": io["input.depth"], "poses": poses}


@pytest.mark.parametrize("run", ["poses", "depth_poses"])
def test_reproduces_reference_outputs_with_poses(golden, run):
    model, io = golden
    with torch.no_grad():
        outputs = model(io["input.images"], **pose_conditions(io, run))
    assert_matches_golden({f"{run}.{k}": v for k, v in outputs.items()}, io, [f"{run}.{k}" for k in POSE_OUTPUTS])


def test_pose_mask_equals_nan_poses(golden):
    model, io = golden
    conditions = pose_conditions(io, "depth_poses")
    with torch.no_grad():
        by_nan = model(io["input.images"], **conditions)
        by_mask = model(
            io["input.images"], **(conditions | {"poses": io["input.poses"]}), pose_mask=io["input.pose_mask"]
        )
    torch.testing.assert_close(by_nan["local_points"], by_mask["local_points"])


def test_poses_are_relative_and_scale_free_without_depth(golden):
    """Moving and scaling the world of the poses changes nothing (the reference normalises both away)."""
    model, io = golden
    poses = io["input.poses"]
    motion = torch.eye(4)
    motion[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]]))
    motion[:3, 3] = torch.tensor([2.0, -1.0, 0.5])
    moved = motion @ poses
    moved[..., :3, 3] *= 7.0
    with torch.no_grad():
        base = model(io["input.images"], intrinsics=io["input.intrinsics"], poses=poses)
        other = model(io["input.images"], intrinsics=io["input.intrinsics"], poses=moved)
    torch.testing.assert_close(base["local_points"], other["local_points"], atol=1e-4, rtol=1e-4)


def test_a_single_posed_frame_is_no_condition(golden):
    model, io = golden
    poses = io["input.poses"].clone()
    poses[:, 1:] = torch.nan
    with torch.no_grad():
        plain = model(io["input.images"], intrinsics=io["input.intrinsics"])
        single = model(io["input.images"], intrinsics=io["input.intrinsics"], poses=poses)
    torch.testing.assert_close(single["local_points"], plain["local_points"])


def translations(centres: list[list[float]]) -> torch.Tensor:
    poses = torch.eye(4).repeat(1, len(centres), 1, 1)
    poses[0, :, :3, 3] = torch.tensor(centres)
    return poses


def test_pose_normalisation_mean_length_static_scenes_and_depth(golden):
    """As the reference's encode: relative to the first posed frame; translations over their mean length, unless
    all lie within STATIC_POSE_THRESHOLD (left as they are), or over the mean known depth when depth is given."""
    from vggt.models.pi3x import STATIC_POSE_THRESHOLD

    model, _ = golden
    moving = translations([[1.0, 0, 0], [3.0, 0, 0], [1.0, 4.0, 0]])  # relative lengths 2 and 4: mean 3
    posed, normalized = model.normalize_poses(moving, None, None, 1, 3)
    assert posed.all()
    torch.testing.assert_close(normalized[0, :, 0, 3], torch.tensor([0.0, 2 / 3, 0.0]))
    torch.testing.assert_close(normalized[0, 2, 1, 3], torch.tensor(4 / 3))
    step = STATIC_POSE_THRESHOLD / 4
    _, still = model.normalize_poses(translations([[0, 0, 0], [step, 0, 0], [0, step, 0]]), None, None, 1, 3)
    torch.testing.assert_close(still[0, 1, 0, 3], torch.tensor(step))
    depth = torch.zeros(1, 3, 4, 4)
    depth[0, 0] = 2.0  # mean known depth 2
    _, with_depth = model.normalize_poses(moving, None, depth, 1, 3)
    torch.testing.assert_close(with_depth[0, :, 0, 3], torch.tensor([0.0, 1.0, 0.0]))
    masked = moving.clone()
    masked[0, 1] = torch.nan  # unposed frames take no part in the mean
    posed, only_two = model.normalize_poses(masked, None, None, 1, 3)
    assert posed.tolist() == [[True, False, True]]
    torch.testing.assert_close(only_two[0, 2, :3, 3], torch.tensor([0.0, 1.0, 0.0]))


def test_bad_pose_shape_is_an_input_error(golden):
    model, io = golden
    with pytest.raises(InputError, match="camera-to-world"):
        model(io["input.images"], poses=torch.eye(4).expand(1, 2, 4, 4))


def test_released_key_manifest():
    with torch.device("meta"):
        model = Pi3X()
    assert manifest(model) == released_manifest("pi3x-tiny")
