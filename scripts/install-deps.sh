#!/usr/bin/env bash
# Debian packages TwoBP builds against: OpenBLAS for matrix products, Open MPI for multi-process pipelines.
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
