#!/usr/bin/env bash
# Optional cross-check of TwoBP's safetensors reader and writer against the
# reference implementation (PyPI `safetensors`, with numpy), both directions:
#   1. Python writes reference files (F32, F16, F64, an empty tensor, a sharded model);
#   2. XCTest SafeTensorsCrossCheckTests reads them and writes its own files;
#   3. Python reads Swift's files (single and sharded) and compares values.
# Needs PyPI (installs into .build/crosscheck-venv); prints SKIPPED and exits 0 without it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=.build/crosscheck-venv

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import safetensors, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    if ! "$venv/bin/python" -m pip install --quiet safetensors numpy; then
        echo "SKIPPED: cannot install safetensors and numpy from PyPI"
        exit 0
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" scripts/safetensors_crosscheck.py write "$work"
TWOBP_SAFETENSORS_CROSSCHECK="$work" swift test --filter TrainingTests.SafeTensorsCrossCheckTests 2>&1 \
    | grep -E "error|Executed|skipped" | sort -u
[ -f "$work/swift.safetensors" ] || { echo "FAILED: the Swift test wrote no files"; exit 1; }
"$venv/bin/python" scripts/safetensors_crosscheck.py verify "$work"
