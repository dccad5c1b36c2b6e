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


def test_the_pipeline_shares_a_pi3x_pass_with_conditioning_over_two_processes():
    """`run_inference(..., InferenceOptions(processes=2))` of Pi3X with known intrinsics and depth: the predictions of
    one process (cameras, depth, points, metric scale)."""
    from vggt.pipeline.family import FamilyConditioning
    from vggt.pipeline.inference import InferenceOptions, run_inference
    from vggt.runtime.engine import StreamingEngine

    torch.manual_seed(0)
    model = create_model("pi3x-tiny").eval()
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(FRAMES, 3, 56, 70, generator=generator)
    depth = torch.rand(FRAMES, 56, 70, generator=generator) + 0.5
    depth[3:] = 0  # rank 1 knows no depth: the scene's mean depth must come from rank 0's frames
    intrinsics = torch.tensor([[60.0, 0, 35], [0, 60.0, 28], [0, 0, 1]]).expand(FRAMES, 3, 3)
    known = FamilyConditioning(intrinsics, depth)
    single = run_inference(model, images, InferenceOptions(memory_check=False), conditioning=known)
    options = InferenceOptions(engine=StreamingEngine(OPTIONS), processes=2)
    parallel = run_inference(model, images, options, conditioning=known)
    for key in ("extrinsics", "intrinsics", "depth", "world_points", "world_points_conf", "metric_scale"):
        expected = torch.from_numpy(getattr(single, key))
        torch.testing.assert_close(torch.from_numpy(getattr(parallel, key)), expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_two_processes_match_one_for_vggt_omega_with_text_alignment():
    torch.manual_seed(0)
    model = create_model("vggt-omega-text-tiny").eval()
    images = torch.rand(1, FRAMES, 3, 64, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        single = model(images)
    result = run_sequence_parallel(model, images, 2, streaming=OPTIONS)
    _assert_same(result.predictions, single)
