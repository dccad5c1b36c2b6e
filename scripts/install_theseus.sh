#!/usr/bin/env bash
# Install the optional bundle-adjustment extra (`vggt[ba]`): Theseus and its sparse Cholesky backend.
#
# theseus-ai 0.2.3 ships as source only and needs scikit-sparse, which compiles against SuiteSparse's
# headers. scikit-sparse 0.5 needs a newer SuiteSparse than Debian 12 ships, hence the 0.4.16 pin.
# Both are built with --no-build-isolation so they compile against the torch/numpy already installed;
# pip keeps the installed torch (theseus only asks for torch>=1.11).
#
# Uses the python of the active virtual environment (or $PYTHON). Steps already done are skipped.
set -euo pipefail

PYTHON="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
PYTHON="${PYTHON:-python}"
PIP=("$PYTHON" -m pip)

SCIKIT_SPARSE_VERSION="0.4.16"
THESEUS_VERSION="0.2.3"
CYTHON_VERSION="3.3.1"

has_module() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

if [ ! -f /usr/include/suitesparse/cholmod.h ]; then
    echo "[install_theseus] installing libsuitesparse-dev"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y libsuitesparse-dev
fi

if ! has_module Cython; then
    echo "[install_theseus] installing cython"
    "${PIP[@]}" install "cython==${CYTHON_VERSION}"
fi

if ! has_module sksparse.cholmod; then
    echo "[install_theseus] building scikit-sparse ${SCIKIT_SPARSE_VERSION}"
    "${PIP[@]}" install --no-build-isolation "scikit-sparse==${SCIKIT_SPARSE_VERSION}"
fi

if ! has_module theseus; then
    echo "[install_theseus] installing theseus-ai ${THESEUS_VERSION}"
    torch_before="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
    "${PIP[@]}" install --no-build-isolation "theseus-ai==${THESEUS_VERSION}"
    torch_after="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
    if [ "$torch_before" != "$torch_after" ]; then
        echo "[install_theseus] error: installing theseus replaced torch $torch_before by $torch_after" >&2
        exit 1
    fi
fi

"$PYTHON" -c "import theseus; print('[install_theseus] theseus', theseus.__version__, 'ready')"
