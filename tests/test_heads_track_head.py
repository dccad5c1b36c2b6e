"""Track head and tracker against the golden outputs of the reference implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_golden

from vggt.heads.track_head import TrackHead
from vggt.heads.track_modules.tracker import TrackerPredictor
from vggt.models.config import VGGTConfig, get_preset

IMAGE_SIZE = (70, 98)  # height, width of the golden images
TRACKER_PREFIX = "track_head.tracker."
HEAD_PREFIX = "track_head."


def make_track_head(cfg: VGGTConfig, **overrides) -> TrackHead:
    kwargs = dict(
        dim_in=cfg.head_dim_in,
        patch_size=cfg.patch_size,
        features=cfg.track_features,
        iters=cfg.track_iterations,
        stride=cfg.track_stride,
        corr_levels=cfg.track_corr_levels,
        corr_radius=cfg.track_corr_radius,
        hidden_size=cfg.track_hidden_size,
        intermediate_layer_idx=cfg.dpt_layers,
        out_channels=cfg.dpt_out_channels,
        updateformer_depth=cfg.track_updateformer_depth,
        updateformer_num_heads=cfg.track_updateformer_num_heads,
        num_virtual_tracks=cfg.track_num_virtual_tracks,
    )
    kwargs.update(overrides)
    return TrackHead(**kwargs)


def make_tracker(cfg: VGGTConfig, **overrides) -> TrackerPredictor:
    kwargs = dict(
        latent_dim=cfg.track_features,
        hidden_size=cfg.track_hidden_size,
        stride=cfg.track_stride,
        corr_levels=cfg.track_corr_levels,
        corr_radius=cfg.track_corr_radius,
        depth=cfg.track_updateformer_depth,
        num_heads=cfg.track_updateformer_num_heads,
        num_virtual_tracks=cfg.track_num_virtual_tracks,
    )
    kwargs.update(overrides)
    return TrackerPredictor(**kwargs)


def with_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def golden_tracker(golden_state_dict) -> TrackerPredictor:
    tracker = make_tracker(get_preset("tiny")).eval()
    tracker.load_state_dict(with_prefix(golden_state_dict, TRACKER_PREFIX), strict=True)
    return tracker


@pytest.fixture(scope="module")
def golden_head(golden_state_dict) -> TrackHead:
    head = make_track_head(get_preset("tiny")).eval()
    head.load_state_dict(with_prefix(golden_state_dict, HEAD_PREFIX), strict=True)
    return head


def golden_tokens(golden_io) -> list[torch.Tensor]:
    return [golden_io[f"aggregator.layer{i}"] for i in range(4)]


def assert_tracks_match_golden(coord_preds, vis, conf, golden_io, tolerances) -> None:
    assert len(coord_preds) == 4
    for i, coords in enumerate(coord_preds):
        assert_close_golden(f"track_head.iter{i}", coords, golden_io[f"track_head.iter{i}"], tolerances)
    assert_close_golden("track_vis", vis, golden_io["track_vis"], tolerances)
    assert_close_golden("track_conf", conf, golden_io["track_conf"], tolerances)


def test_tracker_matches_golden(golden_tracker, golden_io, tolerances):
    query_points = golden_io["input.query_points"]
    fmaps = golden_io["track_head.feature_maps"]
    assert tuple(fmaps.shape[-2:]) == (IMAGE_SIZE[0] // 2, IMAGE_SIZE[1] // 2)
    with torch.no_grad():
        coord_preds, vis, conf = golden_tracker(query_points, fmaps, iters=4)
    assert_tracks_match_golden(coord_preds, vis, conf, golden_io, tolerances)
    # The query frame never moves.
    for coords in coord_preds:
        torch.testing.assert_close(coords[:, 0], query_points, rtol=0, atol=1e-5)


def test_tracker_fewer_iterations_are_a_prefix(golden_tracker, golden_io, tolerances):
    with torch.no_grad():
        coord_preds, _, _ = golden_tracker(
            golden_io["input.query_points"], golden_io["track_head.feature_maps"], iters=2
        )
    assert len(coord_preds) == 2
    for i, coords in enumerate(coord_preds):
        assert_close_golden(f"track_head.iter{i}", coords, golden_io[f"track_head.iter{i}"], tolerances)


def test_track_head_matches_golden(golden_head, golden_io, tolerances):
    tokens, images = golden_tokens(golden_io), golden_io["input.images"]
    with torch.no_grad():
        feature_maps = golden_head.extract_features(tokens, images, patch_start_idx=5)
        coord_preds, vis, conf = golden_head(tokens, images, 5, query_points=golden_io["input.query_points"])
    assert_close_golden("track_head.feature_maps", feature_maps, golden_io["track_head.feature_maps"], tolerances)
    assert_tracks_match_golden(coord_preds, vis, conf, golden_io, tolerances)


def test_track_head_frame_chunks_do_not_change_results(golden_head, golden_io):
    tokens, images = golden_tokens(golden_io), golden_io["input.images"]
    with torch.no_grad():
        whole = golden_head.extract_features(tokens, images, 5, frames_chunk_size=None)
        chunked = golden_head.extract_features(tokens, images, 5, frames_chunk_size=1)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_track_head_bf16_autocast_is_finite(golden_head, golden_io):
    tokens, images = golden_tokens(golden_io), golden_io["input.images"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        coord_preds, vis, conf = golden_head(tokens, images, 5, query_points=golden_io["input.query_points"])
    for tensor in [*coord_preds, vis, conf]:
        assert torch.isfinite(tensor.float()).all()
    assert coord_preds[-1].shape == golden_io["track_head.iter3"].shape
    assert ((vis >= 0) & (vis <= 1)).all() and ((conf >= 0) & (conf <= 1)).all()
    # Positions stay in float32, so bf16 only perturbs the first update slightly (measured: 2e-3 px).
    torch.testing.assert_close(coord_preds[0].float(), golden_io["track_head.iter0"], rtol=0, atol=0.1)


def test_state_dict_matches_vggt1b_checkpoint(shared_dir):
    expected = {}
    for line in (shared_dir / "reference" / "vggt1b_state_dict.tsv").read_text().splitlines()[1:]:
        name, shape, _ = line.split("\t")
        if name.startswith(HEAD_PREFIX):
            expected[name[len(HEAD_PREFIX) :]] = tuple(int(s) for s in shape.split("x"))
    with torch.device("meta"):
        head = make_track_head(VGGTConfig())
    actual = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert sorted(actual) == sorted(expected)
    assert actual == expected


def test_without_confidence_has_no_conf_predictor(golden_io):
    tracker = make_tracker(get_preset("tiny"), predict_conf=False).eval()
    assert not any(k.startswith("conf_predictor") for k in tracker.state_dict())
    with torch.no_grad():
        coord_preds, vis, conf = tracker(golden_io["input.query_points"], golden_io["track_head.feature_maps"], iters=1)
    assert conf is None and vis.shape == (2, 3, 6) and len(coord_preds) == 1


@pytest.mark.parametrize(
    ("shape", "match"),
    [((6, 2), r"\[B, N, 2\]"), ((2, 6, 3), r"\[B, N, 2\]"), ((2, 0, 2), r"N >= 1"), ((1, 6, 2), "batch size")],
)
def test_bad_query_points_raise(golden_io, shape, match):
    tracker = make_tracker(get_preset("tiny"))
    with pytest.raises(ValueError, match=match):
        tracker(torch.zeros(shape), golden_io["track_head.feature_maps"])


def test_track_head_rejects_mismatched_query_batch(golden_head, golden_io):
    with pytest.raises(ValueError, match="batch size"):
        golden_head(golden_tokens(golden_io), golden_io["input.images"], 5, query_points=torch.zeros(3, 4, 2))
