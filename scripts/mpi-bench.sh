#!/usr/bin/env bash
# Measures MPITransport against a raw MPI_Send/MPI_Recv ping-pong between two
# ranks (release build), 4 KiB to 16 MiB:
#
#   scripts/mpi-bench.sh [output.json] [extra twobp-mpi-check bench options]
#
# The JSON result goes to output.json (default: runs/mpi-bench.json), the
# table to stderr. Numbers depend on the machine and its load: say which.
set -euo pipefail
cd "$(dirname "$0")/.."

output="${1:-runs/mpi-bench.json}"
shift || true
swift build -c release --product twobp-mpi-check >&2
mkdir -p "$(dirname "$output")"
scripts/mpi-run.sh -np 2 .build/release/twobp-mpi-check bench "$@" | grep '^{' > "$output"
echo "wrote $output" >&2
