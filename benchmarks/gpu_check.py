"""GPU checks of the streaming pass (run by benchmarks/gpu_check.sh): equivalence, the bf16 bound, 2-GPU parallelism.

Writes `equivalence.json` to `--out`: for the tiny golden model (against ../shared/golden when present)
and for VGGT-1B with random weights at 518 x 518, the largest differences between the streaming pass
(on device and offloaded) and the full pass in float32, and between bf16 autocast and float32; with
two or more GPUs, sequence parallelism over 2 NCCL processes against one process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vggt.models.vggt import VGGT
from vggt.runtime.engine import StreamingEngine
from vggt.runtime.options import StreamingOptions

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"
KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf")


def _max_diff(a: dict, b: dict) -> dict[str, float]:
    return {k: float((a[k].float().cpu() - b[k].float().cpu()).abs().max()) for k in KEYS if k in a and k in b}


def _relative(a: dict, b: dict) -> dict[str, float]:
    return {
        k: float((a[k].float().cpu() - b[k].float().cpu()).abs().max() / b[k].float().abs().max().clamp(min=1e-12))
        for k in KEYS
        if k in a and k in b
    }


def compare(model: VGGT, images: torch.Tensor, queries: torch.Tensor | None, device: torch.device) -> dict:
    """Streaming (auto, chunks of 1, offload) and bf16 against the full float32 pass."""
    images = images.to(device)
    queries = None if queries is None else queries.to(device)
    out: dict = {}
    with torch.inference_mode():
        start = time.perf_counter()
        full = model(images, query_points=queries)
        out["full_s"] = time.perf_counter() - start
        for name, options in {
            "auto": StreamingOptions.auto(device),
            "chunks_of_1": StreamingOptions(1, 1024, 1, 1),
            "offload": StreamingOptions.auto(device, offload=True),
        }.items():
            start = time.perf_counter()
            streamed = model(
                images.cpu() if options.offload else images, query_points=queries, engine=StreamingEngine(options)
            )
            out[f"{name}_s"] = time.perf_counter() - start
            out[f"streaming_{name}_vs_full_fp32"] = _max_diff(streamed, full)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(images, query_points=queries)
        out["bf16_vs_fp32_relative_to_max"] = _relative(low, full)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_results"))
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    report: dict = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}

    if (GOLDEN / "tiny_state_dict.safetensors").exists():
        from safetensors.torch import load_file

        tiny = VGGT.from_preset("tiny")
        tiny.load_state_dict(load_file(str(GOLDEN / "tiny_state_dict.safetensors")))
        tiny = tiny.to(device).eval()
        golden = load_file(str(GOLDEN / "tiny_io.safetensors"))
        report["tiny_golden"] = compare(tiny, golden["input.images"], golden["input.query_points"], device)
        with torch.inference_mode():
            streamed = tiny(
                golden["input.images"].to(device),
                query_points=golden["input.query_points"].to(device),
                engine=StreamingEngine.auto(device),
            )
        report["tiny_streaming_vs_golden"] = _max_diff(streamed, {k: golden[f"forward.{k}"] for k in KEYS})
        if torch.cuda.device_count() >= 2:
            from memory_probe import PeakMemory

            from vggt.runtime.sequence_parallel import run_sequence_parallel

            parallel = run_sequence_parallel(
                tiny.cpu(),
                golden["input.images"],
                2,
                query_points=golden["input.query_points"],
                device_type="cuda",
                probe=PeakMemory,
            )
            report["sequence_parallel_2gpu_vs_golden"] = _max_diff(
                parallel.predictions, {k: golden[f"forward.{k}"] for k in KEYS}
            )
            report["sequence_parallel_2gpu_peak_mb"] = parallel.peak_memory_mb

    torch.manual_seed(0)
    big = VGGT().to(device).eval()
    images = torch.rand(1, args.frames, 3, 518, 518)
    queries = torch.tensor([[[100.0, 100.0], [250.0, 300.0], [400.0, 200.0]]])
    report["vggt1b_518"] = compare(big, images, queries, device)
    (args.out / "equivalence.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
