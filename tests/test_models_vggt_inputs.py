"""Bad inputs to the model give a ValueError that says what was expected; training mode works."""

from __future__ import annotations

import pytest
import torch

from vggt.models.vggt import VGGT


@pytest.fixture(scope="module")
def tiny() -> VGGT:
    torch.manual_seed(0)
    return VGGT.from_preset("tiny").eval()


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 28, 28), r"\[S, 3, H, W\] or \[B, S, 3, H, W\]"),
        ((1, 1, 1, 3, 28, 28), r"\[S, 3, H, W\] or \[B, S, 3, H, W\]"),
        ((2, 4, 28, 28), "3 \\(RGB\\) channels"),
        ((2, 3, 30, 28), "multiples of the patch size 14"),
        ((1, 0, 3, 28, 28), "empty"),
    ],
)
def test_bad_image_shapes(tiny, shape, message):
    with pytest.raises(ValueError, match=message):
        tiny(torch.rand(shape))


def test_non_finite_images(tiny):
    images = torch.rand(2, 3, 28, 28)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny(images)


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 4, 2), (1, 1, 4, 2)])
def test_bad_query_points(tiny, shape):
    with pytest.raises(ValueError, match="query_points must have shape"):
        tiny(torch.rand(2, 3, 28, 42), query_points=torch.rand(shape))


def test_non_tensor_images(tiny):
    with pytest.raises(ValueError, match="torch.Tensor"):
        tiny([[0.0]])


def test_output_shapes_and_tracks(tiny):
    with torch.no_grad():
        out = tiny(torch.rand(2, 3, 28, 42), query_points=torch.rand(4, 2) * 20)
    assert out["pose_enc"].shape == (1, 2, 9) and len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, 2, 28, 42, 1) and out["depth_conf"].shape == (1, 2, 28, 42)
    assert out["world_points"].shape == (1, 2, 28, 42, 3)
    assert out["track"].shape == (1, 2, 4, 2) and out["vis"].shape == (1, 2, 4) and out["conf"].shape == (1, 2, 4)
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()


def test_training_step_with_checkpointing_matches_without(tiny):
    torch.manual_seed(0)
    model = VGGT.from_preset("tiny", enable_track=False).train()
    images = torch.rand(1, 2, 3, 28, 28)
    grads = []
    for checkpointing in (True, False):
        model.zero_grad()
        model.set_gradient_checkpointing(checkpointing)
        out = model(images)
        loss = out["depth"].mean() + out["pose_enc"].square().mean() + out["world_points"].abs().mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert "images" not in out
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_runs(tiny):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(torch.rand(2, 3, 28, 28))
    assert out["depth"].dtype == torch.float32 and torch.isfinite(out["depth"]).all()
    assert torch.isfinite(out["pose_enc"]).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_model_cast_to_other_dtypes_runs(dtype):
    torch.manual_seed(0)
    model = VGGT.from_preset("tiny").eval().to(dtype)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 28, 28, dtype=dtype), query_points=torch.rand(3, 2, dtype=dtype) * 20)
    for key in ("pose_enc", "depth", "world_points", "vis"):
        assert out[key].dtype == dtype and torch.isfinite(out[key]).all(), key
    # Track coordinates never drop below float32: bf16 would round pixel positions to 1/8 px or worse.
    assert out["track"].dtype == torch.promote_types(dtype, torch.float32)
    assert torch.isfinite(out["track"]).all()


def test_training_mode_returns_every_tracker_iteration():
    torch.manual_seed(0)
    model = VGGT.from_preset("tiny").train()
    out = model(torch.rand(2, 3, 28, 28), query_points=torch.rand(3, 2) * 20)
    assert len(out["track_list"]) == model.config.track_iterations
    assert out["track_list"][-1] is out["track"]
    model.eval()
    with torch.no_grad():
        assert "track_list" not in model(torch.rand(2, 3, 28, 28), query_points=torch.rand(3, 2) * 20)


def test_heads_subset_runs_only_those_heads(tiny):
    torch.manual_seed(1)
    images = torch.rand(1, 2, 3, 28, 42)
    queries = torch.tensor([[[5.0, 6.0], [20.0, 10.0]]])
    with torch.no_grad():
        full = tiny(images, query_points=queries)
        tracks_only = tiny(images, query_points=queries, heads=("track",))
        depth_only = tiny(images, heads=["depth"])
    assert set(tracks_only) == {"track", "vis", "conf", "images"}
    assert set(depth_only) == {"depth", "depth_conf", "images"}
    torch.testing.assert_close(tracks_only["track"], full["track"], atol=0, rtol=0)
    torch.testing.assert_close(depth_only["depth"], full["depth"], atol=0, rtol=0)


def test_heads_the_model_lacks_are_refused():
    model = VGGT.from_preset("tiny", enable_track=False).eval()
    with pytest.raises(ValueError, match=r"heads \['track'\] are not part of this model"):
        model(torch.rand(1, 3, 28, 28), heads=("track",))
