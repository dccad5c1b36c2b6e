#!/usr/bin/env bash
# Install vggt and its dependencies into the active Python environment (a virtual environment).
#
#   bash scripts/install.sh          # the package: model, reconstruction and exports, training
#   bash scripts/install.sh all      # the same plus bundle adjustment (Theseus), the web apps (`demo`: Gradio,
#                                    # viser), the keypoint extractors (`keypoints`: kornia), wandb and the test tools,
#                                    # with Debian's Chromium for the browser tests and Debian's COLMAP for the
#                                    # tests that hand our models to COLMAP
#
# torch is pinned to the CPU build these machines carry on disk; on a GPU machine install the
# CUDA torch you want first and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
PYTHON="${PYTHON:-python}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

"$PYTHON" -m pip install --quiet --upgrade pip
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet "torch==${TORCH_VERSION}"
fi

extras="export,eval,train"
if [ "${1:-}" = "all" ]; then extras="export,eval,train,demo,keypoints,wandb,dev"; fi
"$PYTHON" -m pip install --quiet -e ".[${extras}]"

if [ "${1:-}" = "all" ]; then
    # pycolmap 3.10 beside the environment's 4.x, for the test of vggt.dependency.np_to_pycolmap under both.
    "$PYTHON" -m pip install --quiet --no-deps --upgrade --target "$("$PYTHON" -c 'import sys; print(sys.prefix)')/pycolmap-3.10" "pycolmap==3.10.0"
    # Gradio 5.50.0 beside the environment's Gradio 6, for the test that runs the reference's demo_gradio.py (written
    # for Gradio 5): the packages whose versions gradio 5.50.0's requirements exclude here (huggingface_hub < 2,
    # Pillow < 12, pydantic <= 2.12.3, starlette < 1, pandas < 3, websockets < 16) or that this environment lacks.
    "$PYTHON" -m pip install --quiet --no-deps --upgrade --target "$("$PYTHON" -c 'import sys; print(sys.prefix)')/gradio-5" \
        "gradio==5.50.0" "gradio-client==1.14.0" "huggingface-hub==1.33.0" "pillow==11.3.0" "pydantic==2.12.3" \
        "pydantic-core==2.41.4" "fastapi==0.163.2" "starlette==0.52.1" "pandas==2.3.3" "websockets==15.0.1" \
        "tomlkit==0.13.3" "aiofiles==24.1.0" "ffmpy==1.0.0"
    bash scripts/install_theseus.sh
    bash scripts/install_chromium.sh
    bash scripts/install_colmap.sh
fi
"$PYTHON" -c "import torch, vggt; print('vggt', vggt.__version__, 'with torch', torch.__version__)"
