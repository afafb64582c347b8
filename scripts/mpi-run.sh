#!/usr/bin/env bash
# Launches a TwoBP program under Open MPI, one rank per pipeline stage:
#
#   scripts/mpi-run.sh -np 4 .build/release/twobp train ...
#   scripts/mpi-run.sh -np 2 .build/debug/twobp-mpi-check pingpong
#
# Adds what this project's machines need: --allow-run-as-root when run as root
# (containers, CI) and --oversubscribe (more ranks than cores is fine for tests).
# Unless OPENBLAS_NUM_THREADS is set, each rank gets cores / ranks BLAS threads
# (at least 1), so N ranks of OpenBLAS do not fight over the same cores.
set -euo pipefail

if ! command -v mpirun >/dev/null 2>&1; then
    echo "mpi-run: mpirun not found; install Open MPI: apt-get install openmpi-bin libopenmpi-dev" >&2
    exit 127
fi

ranks=1
previous=""
for argument in "$@"; do
    case "$previous" in -np|-n|--np|-c) ranks="$argument" ;; esac
    previous="$argument"
done
if ! [[ "$ranks" =~ ^[0-9]+$ ]] || [ "$ranks" -lt 1 ]; then ranks=1; fi

if [ -z "${OPENBLAS_NUM_THREADS:-}" ]; then
    threads=$(( $(nproc) / ranks ))
    export OPENBLAS_NUM_THREADS=$(( threads > 0 ? threads : 1 ))
fi

flags=(--oversubscribe -x OPENBLAS_NUM_THREADS)
if [ "$(id -u)" = 0 ]; then flags+=(--allow-run-as-root); fi
exec mpirun "${flags[@]}" "$@"
