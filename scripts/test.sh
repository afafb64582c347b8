#!/usr/bin/env bash
# The test command: builds TwoBP and runs every test (unit, gradient checks, pipeline equivalence, MPI).
#
#   scripts/test.sh                    every test, with the BLAS kernel OpenBLAS picks for this CPU
#   scripts/test.sh --kernel Prescott  the numerically sensitive suites (layer and model gradients,
#                                      pipeline equivalence, evaluation, resume) under that kernel
#   scripts/test.sh --filter X         any other arguments go to `swift test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
sensitive='^(LayersTests\.|ModelsTests\.|PipelineTests\.(PipelineEquivalenceTests|MambaPipelineEquivalenceTests|BertPipelineEquivalenceTests|ResNetPipelineTests)/|TrainingTests\.(EvalTests|TrainerResumeTests|ThreadCountTests)/)'
kernel_name() {
    python3 -c 'import ctypes; b = ctypes.CDLL("libscipy_openblas.so"); b.scipy_openblas_get_corename.restype = ctypes.c_char_p; print(b.scipy_openblas_get_corename().decode())'
}
if [ "${1:-}" = "--kernel" ]; then
    export OPENBLAS_CORETYPE="${2:?--kernel needs a name, e.g. Prescott}"
    shift 2
    echo "== numerically sensitive suites under OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE (OpenBLAS reports: $(kernel_name)) =="
    swift build --build-tests
    exec swift test --disable-swift-testing --skip-build --filter "$sensitive" "$@"
fi
echo "== every test, OpenBLAS kernel $(kernel_name) =="
# XCTest only: the Swift Testing runner would close the log with "0 tests passed".
swift test --disable-swift-testing "$@"
