"""Ground-truth tracks (tracks.npz): exact synthetic tracks, round trips, validation errors, COLMAP point tracks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt.data.colmap_import import COLMAP_PIXEL_CENTER, import_colmap
from vggt.data.layout import TRACKS_FILE
from vggt.data.scene import SceneFormatError, load_scene, write_scene
from vggt.data.synthetic import generate_scene, render, sample_cameras, sample_layout, synthetic_tracks
from vggt.data.tracks import SceneTracks, read_tracks, write_tracks

NUM_FRAMES, HEIGHT, WIDTH = 4, 56, 70
NUM_TRACKS = 200


@pytest.fixture(scope="module")
def rendered():
    """A layout, its cameras and depth maps, and tracks queried in frames 0 and 2."""
    rng = np.random.default_rng(21)
    layout = sample_layout(rng)
    intrinsics, extrinsics = sample_cameras(rng, NUM_FRAMES, HEIGHT, WIDTH, layout.front_azimuth)
    _, depths = render(layout, intrinsics, extrinsics, HEIGHT, WIDTH)
    query_frames = np.repeat([0, 2], NUM_TRACKS // 2)
    tracks = synthetic_tracks(layout, intrinsics, extrinsics, (HEIGHT, WIDTH), query_frames, rng)
    return intrinsics, extrinsics, depths, tracks


def _world_points(intrinsics, extrinsics, depths, frames, pixels_xy):
    """World points [N, 3] of the depth maps at the rounded pixels [N, 2] of frames [N] (and the depth there)."""
    cols, rows = np.clip(np.round(pixels_xy), 0, [WIDTH - 1, HEIGHT - 1]).astype(int).T
    depth = depths[frames, rows, cols]
    camera = np.einsum("nij,nj->ni", np.linalg.inv(intrinsics[frames]), np.stack([cols, rows, np.ones_like(cols)], -1))
    camera = camera * depth[:, None] - extrinsics[frames, :, 3]
    return np.einsum("nji,nj->ni", extrinsics[frames, :, :3], camera), depth


def test_synthetic_tracks_follow_the_depth_maps(rendered):
    intrinsics, extrinsics, depths, tracks = rendered
    points = np.arange(NUM_TRACKS)
    np.testing.assert_array_equal(tracks.tracks[tracks.query_frames, points], tracks.query_points)
    assert tracks.visible[tracks.query_frames, points].all()
    queried, query_depth = _world_points(intrinsics, extrinsics, depths, tracks.query_frames, tracks.query_points)
    assert (query_depth > 0).mean() > 0.95  # query points see a surface (the rounded pixel may miss at silhouettes)

    elsewhere = np.ones_like(tracks.visible)
    elsewhere[tracks.query_frames, points] = False
    inside = (tracks.tracks >= -0.5).all(-1)
    inside &= (tracks.tracks[..., 0] <= WIDTH - 0.5) & (tracks.tracks[..., 1] <= HEIGHT - 0.5)
    frames, which = np.nonzero(elsewhere & inside)
    seen, _ = _world_points(intrinsics, extrinsics, depths, frames, tracks.tracks[frames, which])
    distance = np.linalg.norm(seen - queried[which], axis=-1)
    visible = tracks.visible[frames, which]
    assert visible.sum() > NUM_TRACKS and (~visible).sum() > 10  # most points seen again, some occluded in view
    # Visible: the depth map there sees the same surface point, up to pixel rounding (one pixel is about 7 cm
    # at 4 m) except at depth edges. Hidden: it sees something else, in front.
    assert np.median(distance[visible]) < 0.05 and np.quantile(distance[visible], 0.9) < 0.15
    assert np.median(distance[~visible]) > 0.3


def test_round_trip_through_a_scene_folder(tmp_path):
    scene = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=4, name="room", num_tracks=32)
    folder = write_scene(tmp_path / "room", scene)
    assert (folder / TRACKS_FILE).is_file()
    loaded = load_scene(folder, load_data=False)
    for name in ("query_frames", "query_points", "tracks", "visible"):
        np.testing.assert_array_equal(getattr(loaded.tracks, name), getattr(scene.tracks, name))
    assert loaded.tracks.visible.dtype == bool and loaded.tracks.query_frames.dtype == np.int64
    assert (loaded.tracks.query_frames == 0).all()
    assert generate_scene(2, HEIGHT, WIDTH, seed=4).tracks is None  # no tracks unless asked for


def test_select_frames_drops_queries_of_dropped_frames(rendered):
    tracks = rendered[3]
    selected = tracks.select_frames(np.array([1, 2, 3]))
    assert selected.num_points == NUM_TRACKS // 2 and (selected.query_frames == 1).all()
    np.testing.assert_array_equal(selected.tracks, tracks.tracks[1:, NUM_TRACKS // 2 :])
    np.testing.assert_array_equal(selected.visible, tracks.visible[1:, NUM_TRACKS // 2 :])
    assert tracks.select_frames(np.array([1, 3])) is None


def _tracks_file(folder: Path, **changes) -> None:
    with np.load(folder / TRACKS_FILE) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value(arrays[name]) if callable(value) else value
    np.savez(folder / TRACKS_FILE, **arrays)


def _hidden_query(visible):
    visible = visible.copy()
    visible[0, 0] = False
    return visible


def _moved(points):
    points = points.copy()
    points[3] += 0.5
    return points


BAD_TRACK_FILES = {
    "missing array": ({"visible": None}, "missing ['visible']"),
    "unknown array": ({"colours": np.zeros(3)}, "unknown ['colours']"),
    "wrong frame count": ({"tracks": lambda t: t[:2]}, "tracks has shape [2, 16, 2]; expected [4, N, 2]"),
    "non-finite": ({"tracks": lambda t: np.where(t > 30, np.nan, t)}, "tracks must hold finite"),
    "integer visibility": ({"visible": lambda v: v.astype(np.int64)}, "visible must be boolean"),
    "query frame out of range": ({"query_frames": lambda q: q + 7}, "query_frames must lie in [0, 3]"),
    "query not visible": ({"visible": _hidden_query}, "not visible in their own query frame"),
    "query disagrees with track": ({"query_points": _moved}, "differ from query_points"),
    "query outside image": (
        {"query_points": lambda p: p + 100, "tracks": lambda t: t + 100},
        "query points lie outside their image",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TRACK_FILES))
def test_bad_track_files_are_one_line_errors(tmp_path, case):
    folder = write_scene(tmp_path / "room", generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=4, num_tracks=16))
    changes, problem = BAD_TRACK_FILES[case]
    _tracks_file(folder, **changes)
    with pytest.raises(SceneFormatError) as error:
        load_scene(folder, load_data=False)
    message = str(error.value)
    assert "scene 'room'" in message and TRACKS_FILE in message and problem in message
    assert "\n" not in message


def test_unreadable_track_file_and_command_line(tmp_path, capsys):
    from vggt.cli.main import main

    folder = write_scene(tmp_path / "data" / "room", generate_scene(2, HEIGHT, WIDTH, seed=4, num_tracks=8))
    (folder / TRACKS_FILE).write_bytes(b"not a zip")
    with pytest.raises(SceneFormatError, match="not a readable .npz file"):
        read_tracks(folder / TRACKS_FILE, np.array([[HEIGHT, WIDTH]] * 2), scene="room")
    code = main(["evaluate", "--data", str(tmp_path / "data"), "--preset", "tiny", "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "tracks.npz" in err and "not a readable .npz" in err


def test_written_tracks_read_back(tmp_path, rendered):
    tracks = rendered[3]
    path = write_tracks(tmp_path / TRACKS_FILE, tracks)
    again = read_tracks(path, np.array([[HEIGHT, WIDTH]] * NUM_FRAMES))
    assert isinstance(again, SceneTracks)
    np.testing.assert_allclose(again.tracks, tracks.tracks)
    np.testing.assert_array_equal(again.query_frames, tracks.query_frames)


# --------------------------------------------------------------------------------------------- COLMAP


def _colmap_model_with_points(scene, tracks: SceneTracks, sparse_dir: Path) -> None:
    """A PINHOLE model of `scene` whose 3D points are observed where `tracks` sees them (COLMAP pixel centres)."""
    import pycolmap

    reconstruction = pycolmap.Reconstruction()
    observations = []
    for index, (intrinsic, extrinsic) in enumerate(zip(scene.intrinsics, scene.extrinsics), start=1):
        camera = pycolmap.Camera.create_from_model_name(index, "PINHOLE", 1.0, WIDTH, HEIGHT)
        camera.params = [intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2] + 0.5, intrinsic[1, 2] + 0.5]
        reconstruction.add_camera_with_trivial_rig(camera)
        seen = np.flatnonzero(tracks.visible[index - 1])
        points2d = [pycolmap.Point2D(tracks.tracks[index - 1, n].astype(np.float64) + 0.5) for n in seen]
        image = pycolmap.Image(
            name=scene.image_names[index - 1], camera_id=index, image_id=index, points2D=pycolmap.Point2DList(points2d)
        )
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(extrinsic))
        observations.append({int(n): k for k, n in enumerate(seen)})
    for n in range(tracks.num_points):
        track = pycolmap.Track()
        for frame, seen in enumerate(observations):
            if n in seen:
                track.add_element(frame + 1, seen[n])
        if track.length() >= 2:
            reconstruction.add_point3D(np.zeros(3), track)
    sparse_dir.mkdir(parents=True)
    reconstruction.write(str(sparse_dir))


def test_colmap_import_derives_tracks_from_point_tracks(tmp_path):
    scene = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=9, num_tracks=40)
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name, image in zip(scene.image_names, scene.images):
        Image.fromarray(image).save(images_dir / name)
    _colmap_model_with_points(scene, scene.tracks, tmp_path / "sparse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = import_colmap(tmp_path / "sparse", images_dir, tmp_path / "imported")
    imported = load_scene(out, load_data=False).tracks
    truth = scene.tracks
    long_enough = truth.visible.sum(0) >= 2
    assert imported.num_points == long_enough.sum()
    # Longest tracks first; each point queried where it is first seen, visible exactly where COLMAP saw it.
    lengths = imported.visible.sum(0)
    assert (np.diff(lengths) <= 0).all()
    np.testing.assert_array_equal(imported.query_frames, imported.visible.argmax(0))
    expected = {tuple(np.round(truth.tracks[0, n], 3)) for n in np.flatnonzero(long_enough & truth.visible[0])}
    seen_first = {tuple(np.round(imported.tracks[0, n], 3)) for n in np.flatnonzero(imported.visible[0])}
    assert seen_first == expected and COLMAP_PIXEL_CENTER == 0.5
    assert not (tmp_path / "none" / TRACKS_FILE).exists()
    plain = import_colmap(tmp_path / "sparse", images_dir, tmp_path / "none", max_tracks=0)
    assert load_scene(plain, load_data=False).tracks is None
