#!/usr/bin/env bash
# Install Debian's COLMAP (3.8 on Debian 12) for the tests that hand our COLMAP models to COLMAP itself
# (tests/test_pipeline_multiview.py: bundle_adjuster, model_analyzer, feature_extractor, exhaustive_matcher,
# point_triangulator). Without apt-get (or without COLMAP) those tests skip with a reason; the rest still run.
set -euo pipefail

if command -v colmap >/dev/null 2>&1; then
    echo "[install_colmap] $(colmap help 2>/dev/null | head -n 1) ready"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_colmap] no apt-get here: install COLMAP yourself; the COLMAP tests skip without it"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[install_colmap] installing colmap"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y colmap
colmap help 2>/dev/null | head -n 1
