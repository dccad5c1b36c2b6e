"""Names from data become paths only inside their folder; names that cannot be kept as bytes are refused."""

from __future__ import annotations

import pytest

from vggt.errors import InputError
from vggt.utils.paths import MAX_NAME_BYTES, check_file_name, confined_path


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "/etc/passwd", "..\\x.png", "a\0.png", "", ".."])
def test_names_leaving_the_folder_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="is not a path inside"):
        confined_path(tmp_path, name, "image name")


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "link").symlink_to(tmp_path)
    with pytest.raises(InputError, match="leads outside"):
        confined_path(tmp_path / "inside", "link/x.png")


def test_names_inside_are_joined(tmp_path):
    assert confined_path(tmp_path, "sub/a.png") == tmp_path / "sub" / "a.png"
    assert confined_path(tmp_path, "./a..b.png") == tmp_path / "a..b.png"


def test_non_utf8_and_overlong_names_are_refused():
    with pytest.raises(InputError, match="not UTF-8"):
        check_file_name(b"/photos/caf\xe9.png".decode("utf-8", "surrogateescape"))
    with pytest.raises(InputError, match="bytes long"):
        check_file_name("x" * (MAX_NAME_BYTES + 1) + ".png")
    check_file_name("café.png")
