"""Camera head and DPT heads against the reference's golden outputs, plus layout, chunking and dtype checks."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, assert_close_golden

from vggt.heads.camera_head import CameraHead
from vggt.heads.dpt_head import DPTHead
from vggt.heads.utils import create_uv_grid, position_grid_to_embed
from vggt.models.config import VGGTConfig, get_preset

VGGT1B_LAYOUT = SHARED / "reference" / "vggt1b_state_dict.tsv"


def make_camera_head(cfg: VGGTConfig) -> CameraHead:
    return CameraHead(
        cfg.head_dim_in, cfg.camera_trunk_depth, num_heads=cfg.camera_num_heads, mlp_ratio=cfg.camera_mlp_ratio
    )


def make_dense_head(cfg: VGGTConfig, kind: str) -> DPTHead:
    common = dict(
        dim_in=cfg.head_dim_in,
        patch_size=cfg.patch_size,
        out_channels=cfg.dpt_out_channels,
        intermediate_layer_idx=cfg.dpt_layers,
    )
    if kind == "depth":
        return DPTHead(**common, output_dim=2, activation="exp", features=cfg.dpt_features)
    if kind == "point":
        return DPTHead(**common, output_dim=4, activation="inv_log", features=cfg.dpt_features)
    if kind == "track_features":
        return DPTHead(**common, features=cfg.track_features, pos_embed=False, feature_only=True, down_ratio=2)
    raise AssertionError(kind)


def load_golden(module: torch.nn.Module, prefix: str, golden_state_dict: dict) -> torch.nn.Module:
    weights = {k[len(prefix) :]: v for k, v in golden_state_dict.items() if k.startswith(prefix)}
    module.load_state_dict(weights, strict=True)
    return module.eval()


def golden_tokens(golden_io: dict, depth: int) -> list[torch.Tensor]:
    return [golden_io[f"aggregator.layer{i}"] for i in range(depth)]


@pytest.fixture(scope="module")
def tiny() -> VGGTConfig:
    return get_preset("tiny")


def test_camera_head_matches_golden(tiny, golden_io, golden_state_dict, tolerances):
    head = load_golden(make_camera_head(tiny), "camera_head.", golden_state_dict)
    tokens = golden_tokens(golden_io, tiny.depth)
    # Only the last aggregator output is read; the aggregator may leave the others out.
    tokens[:-1] = [None] * (len(tokens) - 1)
    with torch.no_grad():
        pose_enc_list = head(tokens, num_iterations=tiny.camera_iterations)
    assert len(pose_enc_list) == tiny.camera_iterations
    for i, pose_enc in enumerate(pose_enc_list):
        assert_close_golden(f"camera_head.iter{i}", pose_enc, golden_io[f"camera_head.iter{i}"], tolerances)


@pytest.mark.parametrize(
    ("kind", "prefix", "key"), [("depth", "depth_head.", "depth"), ("point", "point_head.", "world_points")]
)
def test_dense_head_matches_golden(tiny, golden_io, golden_state_dict, tolerances, kind, prefix, key):
    head = load_golden(make_dense_head(tiny, kind), prefix, golden_state_dict)
    with torch.no_grad():
        preds, conf = head(golden_tokens(golden_io, tiny.depth), golden_io["input.images"], tiny.patch_start_idx)
    assert_close_golden(key, preds, golden_io[key], tolerances)
    assert_close_golden(f"{key}_conf", conf, golden_io[f"{key}_conf"], tolerances)


def test_track_feature_extractor_matches_golden(tiny, golden_io, golden_state_dict, tolerances):
    head = load_golden(make_dense_head(tiny, "track_features"), "track_head.feature_extractor.", golden_state_dict)
    with torch.no_grad():
        features = head(golden_tokens(golden_io, tiny.depth), golden_io["input.images"], tiny.patch_start_idx)
    assert_close_golden("track_head.feature_maps", features, golden_io["track_head.feature_maps"], tolerances)


@pytest.mark.parametrize(
    ("kind", "prefix"), [("point", "point_head."), ("track_features", "track_head.feature_extractor.")]
)
def test_frame_chunks_do_not_change_dense_outputs(tiny, golden_io, golden_state_dict, kind, prefix):
    head = load_golden(make_dense_head(tiny, kind), prefix, golden_state_dict)
    tokens, images = golden_tokens(golden_io, tiny.depth), golden_io["input.images"]
    with torch.no_grad():
        whole = head(tokens, images, tiny.patch_start_idx, frames_chunk_size=None)
        chunked = head(tokens, images, tiny.patch_start_idx, frames_chunk_size=1)
        uneven = head(tokens, images, tiny.patch_start_idx, frames_chunk_size=2)  # 3 frames: chunks of 2 and 1
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(uneven, whole, atol=1e-6, rtol=1e-6)


def test_gradient_checkpointed_chunks_give_the_same_gradients(tiny, golden_io, golden_state_dict):
    head = load_golden(make_dense_head(tiny, "depth"), "depth_head.", golden_state_dict).train()
    images = golden_io["input.images"][:1, :2]
    fusion_calls = []
    head.scratch.register_forward_pre_hook(lambda module, args: fusion_calls.append(1))
    grads, calls = [], []
    for checkpointing in (False, True):
        head.gradient_checkpointing = checkpointing
        head.zero_grad()
        fusion_calls.clear()
        tokens = [golden_io[f"aggregator.layer{i}"][:1, :2].clone().requires_grad_() for i in range(tiny.depth)]
        depth, conf = head(tokens, images, tiny.patch_start_idx, frames_chunk_size=1)
        (depth.mean() + conf.mean()).backward()
        grads.append([t.grad for t in tokens] + [head.projects[0].weight.grad.clone()])
        calls.append(len(fusion_calls))
    # Checkpointing recomputes every chunk's forward pass during backward.
    assert calls == [2, 4]
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)


def read_reference_layout(prefix: str) -> dict[str, tuple[int, ...]]:
    if not VGGT1B_LAYOUT.exists():
        pytest.skip(f"{VGGT1B_LAYOUT} is absent: this test needs the project's ../shared folder")
    layout = {}
    for line in VGGT1B_LAYOUT.read_text().splitlines()[1:]:
        name, shape, _ = line.split("\t")
        if name.startswith(prefix):
            layout[name[len(prefix) :]] = tuple(int(n) for n in shape.split("x"))
    return layout


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        ("camera", "camera_head."),
        ("depth", "depth_head."),
        ("point", "point_head."),
        ("track_features", "track_head.feature_extractor."),
    ],
)
def test_vggt1b_state_dict_layout(kind, prefix):
    cfg = get_preset("vggt-1b")
    with torch.device("meta"):
        head = make_camera_head(cfg) if kind == "camera" else make_dense_head(cfg, kind)
    ours = {name: tuple(t.shape) for name, t in head.state_dict().items()}
    expected = read_reference_layout(prefix)
    assert expected, f"no rows with prefix {prefix} in {VGGT1B_LAYOUT}"
    assert ours == expected


def test_heads_run_under_bfloat16_autocast(tiny, golden_io, golden_state_dict):
    camera = load_golden(make_camera_head(tiny), "camera_head.", golden_state_dict)
    depth_head = load_golden(make_dense_head(tiny, "depth"), "depth_head.", golden_state_dict)
    track_features = load_golden(
        make_dense_head(tiny, "track_features"), "track_head.feature_extractor.", golden_state_dict
    )
    tokens, images = golden_tokens(golden_io, tiny.depth), golden_io["input.images"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pose_enc = camera(tokens)[-1]
        depth, conf = depth_head(tokens, images, tiny.patch_start_idx, frames_chunk_size=2)
        features = track_features(tokens, images, tiny.patch_start_idx)
    for name, out in (("pose_enc", pose_enc), ("depth", depth), ("conf", conf), ("features", features)):
        assert out.dtype in (torch.bfloat16, torch.float32), name
        assert torch.isfinite(out).all(), f"{name} has non-finite values under bfloat16 autocast"
    assert depth.shape == golden_io["depth"].shape
    assert features.shape == golden_io["track_head.feature_maps"].shape
    # bfloat16 keeps ~3 significant digits: the depths must still be the same to within a few percent.
    relative_error = ((depth.float() - golden_io["depth"]).abs() / golden_io["depth"].abs()).median()
    assert relative_error < 0.05


def test_dense_head_rejects_bad_input(tiny, golden_io):
    head = make_dense_head(tiny, "depth").eval()
    tokens, images = golden_tokens(golden_io, tiny.depth), golden_io["input.images"]
    with pytest.raises(ValueError, match="patch tokens"):
        head(tokens, images[..., :-14], tiny.patch_start_idx)
    with pytest.raises(ValueError, match="frames_chunk_size"):
        head(tokens, images, tiny.patch_start_idx, frames_chunk_size=0)
    with pytest.raises(ValueError, match=r"\[B, S, 3, H, W\]"):
        head(tokens, images[0], tiny.patch_start_idx)
    with pytest.raises(ValueError, match="holds None"):
        head([None] + tokens[1:], images, tiny.patch_start_idx)
    with pytest.raises(ValueError, match="dense activation"):
        DPTHead(tiny.head_dim_in, activation="softplus")
    with pytest.raises(ValueError, match="pose encoding"):
        CameraHead(tiny.head_dim_in, pose_encoding_type="absT_quaR_OneFLM1")


def test_uv_grid_and_position_embedding():
    width, height = 7, 5
    grid = create_uv_grid(width, height, dtype=torch.float64)
    assert grid.shape == (height, width, 2)
    # Centred, uniformly spaced, and on a plane whose diagonal is 2 (pixel centres half a cell inside).
    torch.testing.assert_close(grid.mean(dim=(0, 1)), torch.zeros(2, dtype=torch.float64))
    step_u, step_v = grid[0, 1, 0] - grid[0, 0, 0], grid[1, 0, 1] - grid[0, 0, 1]
    torch.testing.assert_close(step_u, step_v)
    half_extent = grid[-1, -1] + torch.stack([step_u, step_v]) / 2
    torch.testing.assert_close(half_extent.norm(), torch.tensor(1.0, dtype=torch.float64))

    embed = position_grid_to_embed(torch.zeros(2, 3, 2), 16)
    assert embed.shape == (2, 3, 16)
    # At the origin every sine is 0 and every cosine 1, for x (first half) and y (second half) alike.
    torch.testing.assert_close(embed[..., :4], torch.zeros(2, 3, 4))
    torch.testing.assert_close(embed[..., 4:8], torch.ones(2, 3, 4))
    torch.testing.assert_close(embed[..., 8:12], torch.zeros(2, 3, 4))
    torch.testing.assert_close(embed[..., 12:], torch.ones(2, 3, 4))
