"""CPU peak memory of the family models (VGGT-Omega, Pi3, Pi3X) through the pipeline: the reference forward pass
against the streaming pass, with the memory model's estimate of each.

Each model has its released widths with fewer blocks (the memory model's terms at full width, a quick pass on a
CPU), random weights, float32, random square images; each run in a fresh process, so that the peak belongs to it.
The pass's memory is the peak resident set above the resident set before it (weights loaded); the estimate is
`estimate_family_memory` of the whole run (weights included, with its safety factor) against the whole peak.

    python benchmarks/family_memory.py                                  # every model, 8 and 24 frames of 280
    python benchmarks/family_memory.py --models pi3x --frames 6 --size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODES = ("plain", "stream")

# Fewer blocks than released: (config fields) per family.
SHALLOW = {
    "vggt-omega": {
        "encoder_depth": 2,
        "depth": 4,
        "register_attention_blocks": (1,),
        "dense_layers": (0, 1, 2, 3),
        "camera_trunk_depth": 1,
    },
    "pi3": {"encoder_depth": 2, "decoder_depth": 4, "head_depth": 1},
    "pi3x": {"encoder_depth": 2, "decoder_depth": 4, "head_depth": 1, "metric_depth": 1},
}


def shallow_model(family: str) -> Any:
    """The family's model at released widths with the blocks of `SHALLOW`, random weights, eval mode."""
    from vggt.models.pi3 import Pi3, Pi3Config
    from vggt.models.pi3x import Pi3X, Pi3XConfig
    from vggt.models.vggt_omega import OmegaConfig, VGGTOmega

    model_class, config_class = {
        "vggt-omega": (VGGTOmega, OmegaConfig),
        "pi3": (Pi3, Pi3Config),
        "pi3x": (Pi3X, Pi3XConfig),
    }[family]
    return model_class(config_class(**SHALLOW[family])).eval()


def _child(family: str, mode: str, frames: int, side: int) -> dict[str, Any]:
    """One run in this process: the pipeline's streaming pass or the reference forward pass (and the conversion of
    its outputs to geometry), its peak and the estimate (MB)."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from memory_probe import peak_rss_mb, rss_mb

    from vggt.pipeline.family import family_forward, family_geometry
    from vggt.pipeline.inference import InferenceOptions, run_inference
    from vggt.pipeline.memory import estimate_family_memory
    from vggt.runtime.engine import StreamingEngine

    torch.manual_seed(0)
    model = shallow_model(family)
    engine = StreamingEngine.auto("cpu") if mode == "stream" else None
    images = torch.rand(frames, 3, side, side)
    start = rss_mb()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set
    if engine is not None:
        run_inference(model, images, InferenceOptions(memory_check=False, engine=engine))
    else:  # the reference forward pass (the pipeline streams every model)
        with torch.inference_mode():
            family_geometry(family_forward(model, images[None]), (side, side))
    peak = peak_rss_mb()
    estimate = estimate_family_memory(model, frames, side, side, "cpu", None if engine is None else engine.options)
    return {"peak_mb": peak, "start_mb": start, "pass_mb": peak - start, "estimate_mb": estimate.total / 2**20}


def measure(family: str, mode: str, frames: int, side: int) -> dict[str, Any]:
    """`_child` in a fresh interpreter (Linux: the peak is read from /proc)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps([family, mode, frames, side])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(args, capture_output=True, text=True, cwd=str(REPO), env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHALLOW), choices=list(SHALLOW))
    parser.add_argument("--frames", nargs="+", type=int, default=[8, 24])
    parser.add_argument("--size", type=int, default=280)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*json.loads(args.child))))
        return
    print("| model | frames | pass | peak above start (MB) | whole peak (MB) | estimate (MB) | estimate / peak |")
    print("|---|---|---|---|---|---|---|")
    for family in args.models:
        for frames in args.frames:
            for mode in MODES:
                m = measure(family, mode, frames, args.size)
                ratio = m["estimate_mb"] / m["peak_mb"]
                print(
                    f"| {family} | {frames} x {args.size}^2 | {mode} | {m['pass_mb']:.0f} | {m['peak_mb']:.0f} "
                    f"| {m['estimate_mb']:.0f} | {ratio:.2f} |"
                )


if __name__ == "__main__":
    main()
