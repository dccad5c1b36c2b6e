"""Reading back a saved reconstruction: a predictions.npz is data, and its declared sizes are checked first."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from vggt.errors import InputError
from vggt.pipeline.reconstruction import Reconstruction
from vggt.pipeline.saved import check_member_sizes, member_headers


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_a_bomb_of_6_gib_in_a_small_npz_is_refused_from_its_header(tmp_path):
    """The member declares [1536, 1024, 1024] float32 (6 GiB) but the file is tiny: nothing is decompressed."""
    folder = tmp_path / "out"
    folder.mkdir()
    with zipfile.ZipFile(folder / "predictions.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", _npy_header((2, 3, 14, 14), "|u1") + bytes(2 * 3 * 14 * 14))
        archive.writestr("depth.npy", _npy_header((1536, 1024, 1024), "<f4") + bytes(1 << 16))
    assert (folder / "predictions.npz").stat().st_size < 100_000
    assert member_headers(folder / "predictions.npz")["depth"] == ((1536, 1024, 1024), np.dtype("<f4"))
    with pytest.raises(InputError, match=r"declares 6.00 GiB of arrays \(depth: \(1536, 1024, 1024\) float32\)"):
        Reconstruction.load(folder)


def test_arrays_of_a_real_output_pass(tmp_path):
    images = np.zeros((2, 3, 28, 42), np.uint8)
    np.savez(tmp_path / "p.npz", images=images, world_points=np.zeros((2, 28, 42, 3), np.float32), seconds=1.0)
    check_member_sizes(tmp_path / "p.npz")
