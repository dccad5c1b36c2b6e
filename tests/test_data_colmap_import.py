"""Hostile COLMAP models: names that leave the images folder, and files pycolmap cannot parse."""

from __future__ import annotations

import pytest
from PIL import Image
from test_data_scene import HEIGHT, NUM_FRAMES, WIDTH, _write_colmap_model

from vggt.data.colmap_import import import_colmap, main
from vggt.data.synthetic import generate_scene
from vggt.errors import InputError

pytest.importorskip("pycolmap")


@pytest.fixture
def synthetic_scene():
    return generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=3, name="room")


def test_image_name_climbing_out_of_the_images_folder_is_refused(tmp_path, synthetic_scene):
    """A model naming `../victim/<name>` must neither read beside the images folder nor write beside the output."""
    images_dir, victim = tmp_path / "colmap" / "images", tmp_path / "colmap" / "victim"
    images_dir.mkdir(parents=True)
    victim.mkdir()
    out = tmp_path / "work" / "out"
    names = list(synthetic_scene.image_names)
    for name, image in zip(names, synthetic_scene.images):
        Image.fromarray(image).save(victim / name)
    (tmp_path / "work" / "victim").mkdir(parents=True)
    (tmp_path / "work" / "victim" / names[0]).write_bytes(b"thesis")
    synthetic_scene.image_names = [f"../victim/{name}" for name in names]
    _write_colmap_model(synthetic_scene, tmp_path / "sparse", "PINHOLE")

    with pytest.raises(InputError, match=r"COLMAP image name '\.\./victim/frame_0000\.png' is not a path inside"):
        import_colmap(tmp_path / "sparse", images_dir, out)
    assert (tmp_path / "work" / "victim" / names[0]).read_bytes() == b"thesis"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["victim"]


def test_image_name_through_a_symbolic_link_out_of_the_folder_is_refused(tmp_path, synthetic_scene):
    images_dir, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    images_dir.mkdir()
    elsewhere.mkdir()
    for name, image in zip(synthetic_scene.image_names, synthetic_scene.images):
        Image.fromarray(image).save(elsewhere / name)
    (images_dir / "linked").symlink_to(elsewhere)
    synthetic_scene.image_names = [f"linked/{name}" for name in synthetic_scene.image_names]
    _write_colmap_model(synthetic_scene, tmp_path / "sparse", "PINHOLE")
    with pytest.raises(InputError, match="leads outside"):
        import_colmap(tmp_path / "sparse", images_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_model_is_one_line_naming_the_folder(tmp_path, capfd):
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    (sparse / "cameras.txt").write_text("1 PINHOLE 64 48 not-a-number\n")
    (sparse / "images.txt").write_text("")
    (sparse / "points3D.txt").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([str(sparse), str(tmp_path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip()
    assert "error: COLMAP model" in err and "cannot be read" in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_non_utf8_image_name_is_refused_not_mangled(tmp_path, synthetic_scene, capfd):
    """A model file may hold any bytes as a name: one that is not UTF-8 is refused in one line, nothing written."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name, image in zip(synthetic_scene.image_names, synthetic_scene.images):
        Image.fromarray(image).save(images_dir / name)
    _write_colmap_model(synthetic_scene, tmp_path / "model", "PINHOLE")
    import pycolmap

    pycolmap.Reconstruction(str(tmp_path / "model")).write_text(str(tmp_path / "model"))
    for binary in (tmp_path / "model").glob("*.bin"):
        binary.unlink()  # pycolmap reads .bin first
    listing = (tmp_path / "model" / "images.txt").read_bytes()
    (tmp_path / "model" / "images.txt").write_bytes(listing.replace(b"frame_0000.png", b"caf\xe9.png"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "model"), str(images_dir), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip()
    assert "is not UTF-8" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
