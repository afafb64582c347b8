#!/usr/bin/env bash
# Runs the benchmarks whose results docs/benchmarks.md reports, writing JSON and
# text into OUT (default runs/bench). Run on a quiet machine: every figure is a
# ratio measured within one run, but a busy core still skews a pipeline.
#
#   scripts/benchmarks.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench}
mkdir -p "$out"
swift build -c release --product twobp >/dev/null
twobp=.build/release/twobp
model=(--model llama-small --seq-len 256 --batch-size 16)

echo "== machine"; { nproc; grep -m1 "model name" /proc/cpuinfo; echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"; } | tee "$out/machine.txt"

echo "== bench step, 1 and 2 threads"
for threads in 1 2; do
    $twobp bench step "${model[@]}" --steps 3 --blas-threads $threads --json "$out/step-$threads.json" | tee "$out/step-$threads.txt"
done

echo "== bench pipeline (threads), every schedule, with the one-device path, the limit and the per-rank split"
$twobp bench pipeline "${model[@]}" --stages 2 --schedules naive,gpipe,1f1b-1,1f1b-2,interleaved,zb-h1,zb-h2,zb-v \
    --steps 4 --repeats 3 --json "$out/pipeline-threads.json" | tee "$out/pipeline-threads.txt"

echo "== profile: W* of k micro-batches against k single W"
$twobp profile "${model[@]}" --stages 2 --schedule 1f1b-2 --json "$out/profile.json" | tee "$out/profile.txt"

echo "== bench transport (MPI, 2 ranks)"
scripts/mpi-run.sh -np 2 $twobp bench transport --json "$out/transport.json" | tee "$out/transport.txt"

echo "== bench pipeline: MPI against threads, alternately"
for round in 1 2; do
    $twobp bench pipeline "${model[@]}" --stages 2 --schedules 1f1b-1 --steps 4 --repeats 1 \
        --json "$out/transport-threads-$round.json" | tail -1
    scripts/mpi-run.sh -np 2 $twobp bench pipeline "${model[@]}" --stages 2 --schedules 1f1b-1 --steps 4 --repeats 1 \
        --transport mpi --json "$out/transport-mpi-$round.json" | tail -1
done | tee "$out/transport-pipeline.txt"
python3 - "$out" <<'PY'
import json, sys, statistics
out = sys.argv[1]
def rates(kind):
    values = []
    for r in (1, 2):
        c = json.load(open(f"{out}/transport-{kind}-{r}.json"))["comparisons"][0]
        values += c["plain"]["throughput"] + c["two_bp"]["throughput"]
    return values
threads, mpi = rates("threads"), rates("mpi")
ratio = statistics.median(mpi) / statistics.median(threads)
print(f"1f1b-1 (plain and 2BP), median tokens/s: threads {statistics.median(threads):.0f}, MPI {statistics.median(mpi):.0f}, MPI/threads {ratio:.3f} (goal 0.9)")
PY

echo "== PyTorch beside TwoBP (benchmarks/peers/torch_pipeline.py, in the reference environment)"
python=$(scripts/setup-reference-venv.sh | tail -1)
"$python" benchmarks/peers/torch_pipeline.py --twobp "$twobp" --json "$out/peers.json" | tee "$out/peers.txt"
