"""vggt.runtime.host_memory: scene-sized CPU buffers in mappings of their own, given back when freed."""

from __future__ import annotations

import gc
import mmap
import sys

import pytest
import torch

from vggt.runtime.host_memory import MIN_MAPPED_BYTES, discard, scene_buffer

MIB = 2**20


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE / MIB


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_a_scene_buffer_is_an_ordinary_writable_tensor(dtype: torch.dtype) -> None:
    buffer = scene_buffer((3, 64, 1024), dtype, "cpu")
    assert buffer.shape == (3, 64, 1024) and buffer.dtype == dtype and buffer.is_contiguous()
    buffer.fill_(2)
    buffer[1, :, 5:9] = 7
    assert buffer.double().sum().item() == 2 * buffer.numel() + 5 * 64 * 4
    assert torch.equal(buffer.clone(), buffer)


def test_small_or_empty_buffers_are_plain_tensors() -> None:
    assert scene_buffer((0, 4), torch.float32, "cpu").shape == (0, 4)
    small = scene_buffer((MIN_MAPPED_BYTES // 8,), torch.float32, "cpu")
    assert small.numel() == MIN_MAPPED_BYTES // 8


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freeing_the_last_view_gives_the_memory_back_to_the_system() -> None:
    before = resident_mib()
    buffer = scene_buffer((200, MIB // 4), torch.float32, "cpu")  # 200 MiB
    buffer.fill_(1.0)
    assert resident_mib() - before > 190
    view = buffer[10:20]
    del buffer
    gc.collect()
    assert resident_mib() - before > 190  # a view keeps the whole mapping alive
    assert view.sum().item() == view.numel()
    del view
    gc.collect()
    assert resident_mib() - before < 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_discard_gives_back_the_pages_of_a_part_and_keeps_the_rest() -> None:
    buffer = scene_buffer((100, MIB // 4), torch.float32, "cpu")  # 100 frames of 1 MiB
    buffer.copy_(torch.arange(100, dtype=torch.float32)[:, None].expand_as(buffer))
    before = resident_mib()
    discard(buffer[:60])
    assert before - resident_mib() > 55
    assert torch.equal(buffer[60:], torch.arange(60, 100, dtype=torch.float32)[:, None].expand(40, MIB // 4))
    discard(buffer[:60])  # again: nothing more to give back, nothing else touched
    assert buffer[60:].sum().item() == sum(range(60, 100)) * (MIB // 4)


def test_discard_leaves_other_tensors_alone() -> None:
    plain = torch.ones(1000, 1000)
    discard(plain)
    assert plain.sum().item() == 1e6
    buffer = scene_buffer((4, MIB // 4), torch.float32, "cpu")
    buffer.fill_(3.0)
    discard(buffer[:, :100])  # not contiguous: ignored
    discard(buffer[1, 5:105])  # less than a page: nothing to give back
    assert buffer.sum().item() == 3.0 * buffer.numel()
