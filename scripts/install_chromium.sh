#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests of `vggt demo` and `vggt view` (tests/test_apps_*.py).
#
# Playwright drives this system browser (`executable_path=/usr/bin/chromium`); its own browser download is not
# used. Without apt-get (or without Chromium) the browser tests skip with a reason; the rest still run.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "[install_chromium] $("$CHROMIUM" --version 2>/dev/null | head -n 1) ready"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_chromium] no apt-get here: install Chromium at $CHROMIUM yourself; the browser tests skip without it"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[install_chromium] installing chromium"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
"$CHROMIUM" --version 2>/dev/null | head -n 1
