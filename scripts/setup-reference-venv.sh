#!/usr/bin/env bash
# Creates the Python environment the reference checks run in (never the product's runtime path):
# torch 2.13.0+cpu from the local wheel folder pip is pointed at, Hugging Face transformers,
# safetensors, numpy, scikit-learn (the digits images), and torchvision's wheel unpacked without its
# dependencies (PyPI's torchvision is built against CUDA torch; only its models.resnet module is loaded).
#
#   scripts/setup-reference-venv.sh [DIR]    # default: $TWOBP_REFERENCE_VENV, else .venv-ref in the repository
#
# Prints the interpreter's path on the last line. Does nothing that is already done.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-${TWOBP_REFERENCE_VENV:-$repo/.venv-ref}}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
python="$venv/bin/python"
if ! "$python" -c "import torch, transformers, safetensors, numpy, sklearn" 2>/dev/null; then
    echo "installing torch==2.13.0+cpu, transformers, safetensors, numpy, scikit-learn into $venv (a few minutes)" >&2
    "$python" -m pip install --quiet "torch==2.13.0+cpu" transformers safetensors numpy scikit-learn
fi
if ! "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)" 2>/dev/null; then
    "$python" -m pip install --quiet --no-deps torchvision
fi
echo "$python"
