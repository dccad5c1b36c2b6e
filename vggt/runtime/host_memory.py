"""Scene-sized buffers that the CPU allocator neither keeps nor fragments.

glibc's malloc serves a request from its heap unless the request is larger than its mmap threshold, a
threshold that rises (up to 32 MiB) each time a mapped block is freed. So whether a buffer of a few
megabytes per frame lands in the heap depends on what was freed before it, and a long-lived buffer in
the heap pins every freed block below it: the process's resident memory then grows by more than the
scene needs, by an amount that changes from run to run. `scene_buffer` gives each scene-sized buffer
its own anonymous memory mapping on the CPU (returned to the system the moment the tensor is freed);
the heap then only ever serves chunk-sized temporaries, whose high-water mark does not grow with the
scene. On other devices it is `torch.empty`. What those temporaries leave free, glibc keeps resident
until more than its trim threshold (which rises with the mmap threshold, to 64 MiB) is free at the top
of the heap; `release_freed_host_memory` gives it back (the streaming pass calls it between blocks).
`discard` gives back the pages of a part of a scene buffer that will not be read again (the frames
every head has read), before the whole buffer is freed.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["discard", "release_freed_host_memory", "scene_buffer"]

# Below this size a mapping of its own saves nothing (glibc's initial mmap threshold, 128 KiB).
MIN_MAPPED_BYTES = 128 * 1024

# Start address -> the live mappings of scene buffers (an entry leaves with its mapping).
_MAPPINGS: dict[int, weakref.ref[mmap.mmap]] = {}


def scene_buffer(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device | str, *, pin_memory: bool = False
) -> Tensor:
    """An uninitialised tensor of `shape` and `dtype` on `device` for data whose size grows with the scene.

    On the CPU (unless pinned for CUDA transfers) its storage is an anonymous memory mapping owned by the
    tensor, unmapped when the last view of it is freed.
    """
    device = torch.device(device)
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    private = getattr(mmap, "MAP_PRIVATE", None)  # absent on Windows
    if device.type != "cpu" or pin_memory or nbytes < MIN_MAPPED_BYTES or private is None:
        return torch.empty(tuple(shape), dtype=dtype, device=device, pin_memory=pin_memory)
    # Private (as malloc's own mappings): a shared one would be shared with forked workers, and its
    # discarded pages would stay in memory.
    mapping = mmap.mmap(-1, nbytes, flags=private | mmap.MAP_ANONYMOUS)
    # frombuffer keeps a reference to the mapping for as long as the tensor (or any view of it) lives.
    buffer = torch.frombuffer(mapping, dtype=torch.uint8)
    start = buffer.data_ptr()
    _MAPPINGS[start] = weakref.ref(mapping)
    weakref.finalize(mapping, _MAPPINGS.pop, start, None)
    return buffer.view(dtype).view(tuple(shape))


def discard(tensor: Tensor) -> None:
    """Give the memory pages wholly inside `tensor`, a contiguous part of a `scene_buffer`, back to the system.

    Its values are lost: they must not be read again. Tensors that are not inside a scene buffer's mapping
    (on another device, pinned, small) are left as they are.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.numel() == 0:
        return
    begin = tensor.data_ptr()
    end = begin + tensor.numel() * tensor.element_size()
    for start, ref in list(_MAPPINGS.items()):
        mapping = ref()
        if mapping is None or not start <= begin < start + len(mapping):
            continue
        first = -(-(begin - start) // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: round inwards
        last = (min(end, start + len(mapping)) - start) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            mapping.madvise(advice, first, last - first)
        return


def release_freed_host_memory() -> None:
    """Return memory freed by the CPU allocator to the system (glibc's malloc_trim; elsewhere a no-op).

    glibc keeps freed blocks below its mmap threshold (up to 32 MiB) in the heap, so buffers freed
    by one phase of the pass would otherwise still count against the next phase's peak.
    """
    malloc_trim = _glibc_malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)


@functools.cache
def _glibc_malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's malloc_trim, looked up once (the streaming pass calls it after every block); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
