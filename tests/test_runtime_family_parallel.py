"""Sequence parallelism of the family models over 2 gloo processes on 127.0.0.1 gives one process's outputs."""

from __future__ import annotations

import torch

from vggt.models import create_model
from vggt.runtime.options import StreamingOptions
from vggt.runtime.sequence_parallel import run_sequence_parallel

# As VGGT's sequence-parallel test: everything agrees within 1e-4 (gathered keys are summed in another order).
TOLERANCE = 1e-4
# Token chunks that cut frames apart, one head per group; 5 frames: 3 on rank 0, 2 on rank 1.
OPTIONS = StreamingOptions(2, 7, 1, 4)
FRAMES = 5


def _assert_same(parallel: dict, single: dict) -> None:
    assert set(single) <= set(parallel)
    for key, value in single.items():
        assert parallel[key].shape == value.shape, key
        torch.testing.assert_close(
            parallel[key], value, atol=TOLERANCE, rtol=TOLERANCE, msg=lambda m, k=key: f"{k}: {m}"
        )


def test_two_processes_match_one_for_pi3x_with_conditioning():
    torch.manual_seed(0)
    model = create_model("pi3x-tiny").eval()
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(1, FRAMES, 3, 56, 70, generator=generator)
    depth = torch.rand(1, FRAMES, 56, 70, generator=generator) + 0.5
    depth[:, 3:] = 0  # rank 1 knows no depth: the scene's mean depth must come from rank 0's frames
    intrinsics = torch.tensor([[60.0, 0, 35], [0, 60.0, 28], [0, 0, 1]]).expand(1, FRAMES, 3, 3)
    conditioning = {"intrinsics": intrinsics, "depth": depth}
    with torch.no_grad():
        single = model(images, **conditioning)
    result = run_sequence_parallel(model, images, 2, streaming=OPTIONS, conditioning=conditioning)
    _assert_same(result.predictions, single)


def test_two_processes_match_one_for_vggt_omega_with_text_alignment():
    torch.manual_seed(0)
    model = create_model("vggt-omega-text-tiny").eval()
    images = torch.rand(1, FRAMES, 3, 64, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        single = model(images)
    result = run_sequence_parallel(model, images, 2, streaming=OPTIONS)
    _assert_same(result.predictions, single)
