#!/usr/bin/env bash
# Install everything torchrl_prelar needs on a fresh Debian machine with Python 3.11:
# software rendering for MuJoCo (Mesa EGL/OSMesa), then the package with all extras.
# Run as root (or prefix the apt-get lines with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libgles2 libosmesa6 >/dev/null
fi
# torch 2.13.0 first: a CPU build; a GPU user replaces it with their CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all]"
