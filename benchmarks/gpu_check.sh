#!/usr/bin/env bash
# GPU checks of streaming and sequence-parallel inference, at most ~10 minutes on one H200 (or two GPUs).
#
#   OUT=./gpu_results bash benchmarks/gpu_check.sh
#
# Needs torch with CUDA. The package's other dependencies (huggingface_hub, safetensors, numpy, Pillow,
# tqdm) are installed from ./wheelhouse (or $WHEELS) when missing: the machine may have no network.
# Build that folder where PyPI is reachable:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d wheelhouse huggingface_hub safetensors numpy pillow tqdm
# Results: $OUT/equivalence.json (streaming vs full fp32, bf16 bound, 2-GPU sequence parallel),
# $OUT/capacity_518_bf16_offload.md/.json (frames doubling until out of memory or the time budget),
# $OUT/capacity_518_bf16.md/.json (the same without offload), $OUT/fast_mode_518_bf16.md (token merging's
# speed-up), $OUT/log.txt.
set -u
OUT="${OUT:-./gpu_results}"
WHEELS="${WHEELS:-./wheelhouse}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$OUT/log.txt") 2>&1

nvidia-smi || true
python - <<'PY' || pip install --no-index --find-links "$WHEELS" huggingface_hub safetensors numpy pillow tqdm
import huggingface_hub, safetensors, numpy, PIL, tqdm  # noqa: F401
PY
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"

# 1. Equivalence and the bf16 bound (about 1-2 minutes).
timeout 180 python benchmarks/gpu_check.py --out "$OUT" || echo "gpu_check.py failed or timed out"

# 2. Capacity at 518x518, bf16 autocast, offload: 25, 50, 100, 200 (the paper's job), 400, ... frames
#    until out of memory or 2,000+ frames, stopping when the next run would pass the time budget.
timeout 260 python benchmarks/capacity.py --device cuda --dtype bf16 --offload --sizes 518x518 \
    --start-frames 25 --max-frames 3200 --time-budget 230 --json "$OUT/capacity_518_bf16_offload.json" \
    > "$OUT/capacity_518_bf16_offload.md" || echo "capacity (offload) failed or timed out"

# 3. The same without offload, for the 200-frame job's memory on the device (short budget).
timeout 80 python benchmarks/capacity.py --device cuda --dtype bf16 --sizes 518x518 \
    --start-frames 50 --max-frames 200 --time-budget 60 --json "$OUT/capacity_518_bf16.json" \
    > "$OUT/capacity_518_bf16.md" || echo "capacity (no offload) failed or timed out"
# 4. The fast mode's speed-up (token merging in global attention) at 518x518, bf16, 100 frames.
timeout 80 python benchmarks/fast_mode.py --device cuda --dtype bf16 --size 518 --frames 100 --ratios 0 0.5 \
    > "$OUT/fast_mode_518_bf16.md" || echo "fast mode failed or timed out"
cat "$OUT"/capacity_*.md "$OUT/fast_mode_518_bf16.md"
