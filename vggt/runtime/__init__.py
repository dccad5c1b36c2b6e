"""The runtime: how VGGT is run, beside what it is (imported on first use: `vggt.utils.lazy`).

`vggt.models`, `vggt.heads` and `vggt.layers` hold the modules as the checkpoint defines them, with the
reference forward pass; this package runs them for inference on scenes of any size: the streaming engine
(`StreamingEngine`: the trunk in chunks, kept outputs, offload, the heads frame chunk by frame chunk), chunked
transformer blocks, scene-sized host buffers, token merging (the fast mode), oneDNN on the CPU, sequence
parallelism over processes, the memory model and progress reporting; the streaming passes of the family models
(`pi3_engine` for Pi3 and Pi3X, `omega_engine` for VGGT-Omega) on the same pieces. Nothing below it imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vggt.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from vggt.runtime.engine import StreamingEngine
    from vggt.runtime.options import StreamingOptions
    from vggt.runtime.sequence_parallel import forward_sequence_parallel, run_sequence_parallel, split_frames

_ORIGINS = {
    "StreamingEngine": "vggt.runtime.engine",
    "StreamingOptions": "vggt.runtime.options",
    "forward_sequence_parallel": "vggt.runtime.sequence_parallel",
    "run_sequence_parallel": "vggt.runtime.sequence_parallel",
    "split_frames": "vggt.runtime.sequence_parallel",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
__all__ = ["StreamingEngine", "StreamingOptions", "forward_sequence_parallel", "run_sequence_parallel", "split_frames"]
