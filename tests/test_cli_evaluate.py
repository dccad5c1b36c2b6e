"""`vggt evaluate` end to end on generated scenes, the runner's ground-truth mapping, and bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt.cli.main import main
from vggt.data.scene import load_scene, write_scene
from vggt.data.synthetic import generate_scene, render, sample_cameras, sample_layout, write_synthetic_dataset
from vggt.eval.runner import EvalSettings, ScenePrediction, sample_on_input_grid, score_scene, summarize
from vggt.eval.scene_tracks import (
    first_frame_queries,
    on_original_photos,
    predict_tracks,
    queries_on_input_grid,
    track_metrics,
)
from vggt.pipeline.inference import Predictions
from vggt.utils.geometry import depth_map_to_world_points
from vggt.utils.load_fn import load_images, rescale_intrinsics_to_input
from vggt.utils.sampling import evenly_spaced_indices

NUM_FRAMES = 3
HEIGHT, WIDTH = 56, 70
SEED = 0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from vggt.models.vggt import VGGT

    path = tmp_path_factory.mktemp("model")
    VGGT.from_preset("tiny").save_pretrained(path)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["evaluate", *args])
    return code, capsys.readouterr().err


def test_evaluate_end_to_end_on_generated_scenes(tmp_path, capsys, tiny_checkpoint):
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_scenes=2, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, seed=SEED)
    out = tmp_path / "out"
    args = ["--data", str(data), "--checkpoint", str(tiny_checkpoint), "--preset", "tiny", "--out", str(out)]
    # --max-frames 2 keeps frames 0 and 2 of each scene: one pair per scene, and a quicker run.
    options = ["--device", "cpu", "--dtype", "float32", "--max-points", "2000", "--max-frames", "2"]
    code, err = run_cli(capsys, *args, *options)
    assert code == 0, err
    assert "evaluate" in err  # the tqdm bar
    assert "evaluated 2 scene(s)" in err

    report = json.loads((out / "metrics.json").read_text())
    assert sorted(report["scenes"]) == ["scene_0000", "scene_0001"]
    for scene in report["scenes"].values():
        assert scene["num_frames"] == 2
        assert scene["camera"]["num_pairs"] == 1
        for key in ("AUC@30", "AUC@3", "RRA@5", "RTA@30"):
            assert 0.0 <= scene["camera"][key] <= 100.0
        assert scene["depth"]["num_frames"] == 2
        assert scene["depth"]["abs_rel"] > 0  # random weights are not perfect
        for group in ("points", "depth_points"):
            assert scene[group]["num_points"] == 2000
            assert scene[group]["chamfer"] == pytest.approx(
                (scene[group]["accuracy"] + scene[group]["completeness"]) / 2
            )
    overall = report["overall"]
    assert overall["camera"]["num_pairs"] == 2
    scenes = list(report["scenes"].values())
    assert overall["depth"]["abs_rel"] == pytest.approx(np.mean([s["depth"]["abs_rel"] for s in scenes]))
    assert overall["points"]["num_scenes"] == 2
    assert report["checkpoint"] == str(tiny_checkpoint) and report["settings"]["max_frames"] == 2

    table = (out / "metrics.md").read_text().splitlines()
    assert table[0].startswith("| scene | frames | camera AUC@30")
    rows = [line for line in table if line.startswith("| scene_") or line.startswith("| **all**")]
    assert len(rows) == 3
    assert f"{scenes[0]['depth']['abs_rel']:.4g}" in rows[0]


def test_fast_mode_is_evaluated_as_reconstruct_runs_it(tmp_path, capsys, tiny_checkpoint):
    """--merge-ratio reaches the forward pass (the cameras change) and is recorded in the report."""
    from vggt.eval.runner import predict
    from vggt.models.vggt import VGGT

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_scenes=1, num_frames=4, height=HEIGHT, width=WIDTH, seed=SEED)
    model = VGGT.from_pretrained(tiny_checkpoint).eval()
    paths = sorted((data / "scene_0000" / "images").iterdir())
    exact = predict(model, paths, EvalSettings()).predictions
    fast = predict(model, paths, EvalSettings(merge_ratio=0.5)).predictions
    assert not np.allclose(fast.pose_enc, exact.pose_enc, atol=1e-6)
    code, err = run_cli(capsys, "--data", str(data), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                        "--device", "cpu", "--merge-ratio", "0.5", "-q")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["settings"]["merge_ratio"] == 0.5


def test_perfect_prediction_scores_perfectly(tmp_path):
    """The ground truth, rendered at the model's input resolution, scores AUC 100 and near-zero depth and point
    errors: this checks that the runner maps ground truth onto the model's grid without shifts or flips."""
    rng = np.random.default_rng(SEED)
    layout = sample_layout(rng)
    intrinsics, extrinsics = sample_cameras(rng, NUM_FRAMES, HEIGHT, WIDTH, layout.front_azimuth)
    images, depths = render(layout, intrinsics, extrinsics, HEIGHT, WIDTH)
    scene_dir = tmp_path / "scene"
    write_scene(scene_dir, generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=SEED, name="scene"))
    scene = load_scene(scene_dir, load_data=False)
    np.testing.assert_allclose(scene.extrinsics, extrinsics, atol=1e-12)  # the same scene as rendered above

    loaded = load_images(scene.image_paths, mode="crop")
    input_hw = tuple(loaded.images.shape[-2:])
    input_intrinsics = rescale_intrinsics_to_input(intrinsics, loaded.transforms)
    _, input_depth = render(layout, input_intrinsics, extrinsics, *input_hw)
    outputs = Predictions(
        images=np.zeros((NUM_FRAMES, 3, *input_hw), np.uint8),
        extrinsics=extrinsics,
        intrinsics=input_intrinsics,
        depth=input_depth,
        world_points=depth_map_to_world_points(input_depth, extrinsics, input_intrinsics),
    )
    prediction = ScenePrediction(outputs, loaded.transforms)
    frames = np.arange(NUM_FRAMES)
    result = score_scene(scene, frames, prediction, EvalSettings(depth_alignment="none", max_points=5000))
    assert result.metrics["camera"]["AUC@3"] == pytest.approx(100.0)
    # Nearest sampling of 56x70 ground truth onto 420x518 leaves errors only at depth edges (AbsRel 0.0096,
    # Chamfer 0.034 m on 5000 points). Shifting the prediction by one original pixel (8 input pixels) would give
    # AbsRel 0.021 and Chamfer 0.069, a wrong frame AbsRel 0.25: the bounds sit between.
    assert result.metrics["depth"]["abs_rel"] < 0.015
    assert result.metrics["depth"]["delta_1.25"] > 99.0
    assert result.metrics["points"]["chamfer"] < 0.045
    assert result.metrics["depth_points"]["chamfer"] < 0.045
    # Edge pixels where the coarse ground truth sees the background bias the least-squares scale a little.
    assert result.metrics["points"]["scale"] == pytest.approx(1.0, abs=0.02)

    # A one-frame shift of the ground truth (a wrong mapping) would be caught.
    shifted = ScenePrediction(dataclasses.replace(outputs, depth=np.roll(input_depth, 1, axis=0)), loaded.transforms)
    shifted_result = score_scene(scene, frames, shifted, EvalSettings(depth_alignment="none", max_points=2000))
    assert shifted_result.metrics["depth"]["abs_rel"] > 0.05
    assert summarize([result])["camera"]["AUC@30"] == pytest.approx(100.0)


def test_sample_on_input_grid_follows_crop_and_padding(tmp_path):
    landscape, portrait = tmp_path / "landscape.png", tmp_path / "portrait.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(landscape)
    Image.fromarray(np.zeros((WIDTH, HEIGHT, 3), np.uint8)).save(portrait)
    loaded = load_images([landscape, portrait], mode="crop")
    input_hw = tuple(loaded.images.shape[-2:])
    assert input_hw == (518, 518)  # the landscape image (420 rows) is padded to the cropped portrait's 518

    index = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)  # each original pixel's row-major index
    sampled, inside = sample_on_input_grid(index, loaded.transforms[0], input_hw)
    top = (518 - 420) // 2
    assert not inside[:top].any() and not inside[top + 420 :].any() and inside[top : top + 420].all()
    # Input pixel (x', y') sees original column (x' + 0.5) / 7.4 - 0.5 and row (y' - top + 0.5) / 7.5 - 0.5.
    assert sampled[top, 0] == 0
    assert sampled[top + 419, 517] == index[-1, -1]
    assert sampled[top + 75, 74] == index[10, 10]

    portrait_index = np.arange(WIDTH * HEIGHT).reshape(WIDTH, HEIGHT)
    sampled, inside = sample_on_input_grid(portrait_index, loaded.transforms[1], input_hw)
    assert inside.all()
    crop_top = (644 - 518) // 2  # 70 rows resized to 644, centre-cropped to 518
    row = int(round((crop_top + 0.5) / (644 / 70) - 0.5))
    assert sampled[0, 0] == portrait_index[row, 0]


def test_evenly_spaced_frames():
    np.testing.assert_array_equal(evenly_spaced_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spaced_indices(3, 2), [0, 2])
    np.testing.assert_array_equal(evenly_spaced_indices(3, None), [0, 1, 2])
    np.testing.assert_array_equal(evenly_spaced_indices(3, 5), [0, 1, 2])


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_data_folder_exits_2_with_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, "--data", str(tmp_path / "nowhere"), "--preset", "tiny")
    assert code == 2
    assert err.count("\n") == 1 and "is not a folder" in err and "nowhere" in err


def test_folder_without_scenes_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "--data", str(tmp_path / "empty"), "--preset", "tiny")
    assert code == 2
    assert "holds no scene folders" in err and err.count("\n") == 1


def test_malformed_scene_exits_2_naming_it(tmp_path, capsys):
    scene = tmp_path / "data" / "broken"
    (scene / "images").mkdir(parents=True)
    (scene / "cameras.json").write_text("{not json")
    code, err = run_cli(capsys, "--data", str(tmp_path / "data"), "--preset", "tiny", "-q", "--device", "cpu")
    assert code == 2
    assert "broken" in err and "cameras.json" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-frames", "0"], "--max-frames must be at least 1"),
        (["--merge-ratio", "0.7"], "--merge-ratio must be in [0, 0.5]"),
        (["--preset", "huge"], "Unknown preset"),
        (["--checkpoint", "/no/such/weights.safetensors"], "Checkpoint not found"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, extra, message):
    write_synthetic_dataset(tmp_path / "data", num_scenes=1, num_frames=2, height=HEIGHT, width=WIDTH)
    code, err = run_cli(capsys, "--data", str(tmp_path / "data"), *extra)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_a_reconstruction_scored_against_its_own_model_is_perfect(tmp_path, capsys, golden_dir, examples_dir):
    """`vggt reconstruct` output is a scene folder; evaluating it with the model that made it must give
    back exactly its cameras and depth. This ties together the conventions of both commands: intrinsics
    rescaled to the original photos, depth written at photo resolution, and mapped back to the model grid."""
    checkpoint = golden_dir / "tiny_state_dict.safetensors"
    photos = sorted((examples_dir / "room" / "images").iterdir())[:3]
    scene = tmp_path / "scene"
    args = ["--checkpoint", str(checkpoint), "--preset", "tiny", "--device", "cpu", "--dtype", "float32", "-q"]
    assert main(["reconstruct", *map(str, photos), "--out", str(scene), "--max-points", "2000", *args]) == 0
    code, err = run_cli(capsys, "--data", str(scene), "--out", str(tmp_path / "eval"), *args)
    assert code == 0, err
    (scene_metrics,) = json.loads((tmp_path / "eval" / "metrics.json").read_text())["scenes"].values()
    camera, depth = scene_metrics["camera"], scene_metrics["depth"]
    assert camera["num_pairs"] == 3
    for key in ("AUC@30", "AUC@3", "RRA@5", "RTA@5"):
        assert camera[key] == 100.0, key
    assert depth["num_frames"] == 3 and depth["delta_1.25"] == 100.0
    assert depth["abs_rel"] < 1e-4  # float rounding only: the depth written is the depth predicted


# ---------------------------------------------------------------------------------------------- tracks


def _scene_with_tracks(tmp_path, num_frames: int = NUM_FRAMES, num_tracks: int = 48):
    scene_dir = write_scene(tmp_path / "scene", generate_scene(num_frames, HEIGHT, WIDTH, seed=SEED, name="scene",
                                                               num_tracks=num_tracks))  # fmt: skip
    return load_scene(scene_dir, load_data=False)


def test_ground_truth_tracks_score_perfectly(tmp_path):
    """Tracks equal to the ground truth, mapped onto the model's 518-wide grid and back as the runner maps
    predictions, score 100 on every TAP-Vid metric; a one-pixel shift or flipped visibility would not."""
    scene = _scene_with_tracks(tmp_path)
    loaded = load_images(scene.image_paths, mode="crop")
    input_hw = tuple(loaded.images.shape[-2:])
    queries = queries_on_input_grid(scene.tracks, loaded.transforms, input_hw)
    assert queries.ground_truth.num_points == scene.tracks.num_points  # every query lies on the cropped input
    truth = queries.ground_truth
    input_tracks = np.stack([t.original_to_input(truth.tracks[i].astype(np.float64))
                             for i, t in enumerate(loaded.transforms)])  # fmt: skip
    perfect = on_original_photos(queries, input_tracks, truth.visible.astype(float), loaded.transforms)
    outputs = Predictions(images=np.zeros((NUM_FRAMES, 3, *input_hw), np.uint8))
    result = score_scene(scene, np.arange(NUM_FRAMES), ScenePrediction(outputs, loaded.transforms, perfect),
                         EvalSettings())  # fmt: skip
    metrics = result.metrics["tracks"]
    for key in ("delta_avg", "pts_within_1", "average_jaccard", "occlusion_accuracy"):
        assert metrics[key] == pytest.approx(100.0), key
    assert metrics["num_tracks"] == scene.tracks.num_points
    assert summarize([result])["tracks"]["delta_avg"] == pytest.approx(100.0)

    shifted = on_original_photos(queries, input_tracks + [518 / WIDTH, 0.0], truth.visible.astype(float),
                                 loaded.transforms)  # fmt: skip
    shifted_metrics = track_metrics(shifted, scene.image_hw)
    assert shifted_metrics["pts_within_2"] < 20 and shifted_metrics["delta_avg"] < 70  # 3.7 px at 256 x 256
    flipped = on_original_photos(queries, input_tracks, 1.0 - truth.visible, loaded.transforms)
    assert track_metrics(flipped, scene.image_hw)["occlusion_accuracy"] < 1.0


def test_queries_of_later_frames_are_tracked_with_their_frame_first(tmp_path):
    """Queries of frame 2 of 4 run with the frames ordered 2, 0, 1, 3; the results come back in scene order."""
    import torch

    from vggt.models.vggt import VGGT
    from vggt.pipeline.inference import run_inference

    torch.manual_seed(0)
    model = VGGT.from_preset("tiny").eval()
    scene = _scene_with_tracks(tmp_path, num_frames=4, num_tracks=6)
    scene.tracks.query_frames[3:] = 2  # as if queried there: only the query frame matters to the model
    scene.tracks.query_points[3:] = scene.tracks.tracks[2, 3:]
    loaded = load_images(scene.image_paths, mode="crop", target_size=WIDTH)
    input_hw = tuple(loaded.images.shape[-2:])
    settings = EvalSettings(resolution=WIDTH)
    queries = queries_on_input_grid(scene.tracks, loaded.transforms, input_hw)
    main_pass = run_inference(model, loaded.images, settings.inference_options(), first_frame_queries(queries))
    prediction = predict_tracks(model, loaded.images, loaded.transforms, queries, settings.inference_options(),
                                main_pass)  # fmt: skip

    reordered = run_inference(model, loaded.images[[2, 0, 1, 3]], settings.inference_options(),
                              queries.input_points[3:].astype(np.float32))  # fmt: skip
    for output_frame, frame in enumerate([2, 0, 1, 3]):
        expected = loaded.transforms[frame].input_to_original(reordered.tracks[output_frame].astype(np.float64))
        np.testing.assert_allclose(prediction.tracks[frame, 3:], expected, atol=1e-4)
        np.testing.assert_allclose(prediction.visibility[frame, 3:], reordered.track_vis[output_frame], atol=1e-6)
    first = [t.input_to_original(main_pass.tracks[i].astype(np.float64)) for i, t in enumerate(loaded.transforms)]
    np.testing.assert_allclose(prediction.tracks[:, :3], np.stack(first), atol=1e-4)


def test_evaluate_reports_tracks_of_synthesized_scenes(tmp_path, capsys, tiny_checkpoint):
    data, out = tmp_path / "data", tmp_path / "out"
    assert main(["synthesize", "--out", str(data), "--num-scenes", "1", "--num-frames", "3", "--num-tracks", "16"]) == 0
    code, err = run_cli(capsys, "--data", str(data), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "-q",
                        "--device", "cpu", "--dtype", "float32", "--resolution", str(WIDTH))  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    tracks = report["overall"]["tracks"]
    assert tracks["num_tracks"] == 16 and tracks["num_scenes"] == 1
    assert 0.0 <= tracks["delta_avg"] <= 100.0 and 0.0 <= tracks["occlusion_accuracy"] <= 100.0
    assert "tracks delta_avg" in (out / "metrics.md").read_text()


def test_earlier_metrics_are_not_overwritten_silently(tmp_path, capsys):
    """A missing checkpoint proves the order: the refusal comes before any model is loaded."""
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_scenes=1, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, seed=SEED)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    args = ["--data", str(data), "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]
    code, err = run_cli(capsys, *args)
    assert code == 2 and "already holds metrics.json; pass --overwrite to replace them" in err, err
    assert (out / "metrics.json").read_text() == "{}"
    code, err = run_cli(capsys, *args, "--overwrite")
    assert code == 2 and "missing.safetensors" in err and "already holds" not in err
