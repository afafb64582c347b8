#!/usr/bin/env bash
# What TwoBP builds and tests against: OpenBLAS for matrix products and Open MPI for
# multi-process pipelines (Debian packages), and Python's safetensors + numpy (PyPI)
# as the reference the checkpoint format is cross-checked against.
set -euo pipefail
packages=(libopenblas-dev libopenmpi-dev openmpi-bin pkg-config)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
    python3 -m pip install --quiet safetensors numpy
fi
