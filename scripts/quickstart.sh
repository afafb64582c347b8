#!/usr/bin/env bash
# Sets TwoBP up on a fresh Debian machine and runs a short training: installs the
# packages, builds the Shakespeare corpus, builds twobp (release), then trains
# llama-tiny as a 2-stage 1F1B pipeline with 2BP and samples from the result.
# Extra arguments go to `twobp train` (e.g. --steps 1000 --model llama-small).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/setup-data.sh
swift build -c release --product twobp
mkdir -p runs
# A checkpoint folder belongs to one run: a second quickstart continues the first (nothing is left
# to do once its 300 steps are done); remove runs/quickstart to start over.
resume=()
if [ -d runs/quickstart ]; then
    echo "runs/quickstart exists: continuing that run (rm -r runs/quickstart to start over)"
    resume=(--resume runs/quickstart)
fi
.build/release/twobp train --model llama-tiny --steps 300 --batch-size 16 --stages 2 --schedule 1f1b-1 --2bp \
    --eval-every 100 --metrics runs/quickstart-metrics.jsonl --summary runs/quickstart-summary.json \
    --checkpoint runs/quickstart --timeline runs/quickstart-timeline.json "${resume[@]}" "$@"
.build/release/twobp generate --checkpoint runs/quickstart --prompt "ROMEO:" --tokens 200
