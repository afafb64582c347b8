#!/usr/bin/env bash
# The test command: builds TwoBP and runs every test (unit, gradient checks, pipeline equivalence, MPI).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# XCTest only: the Swift Testing runner would close the log with "0 tests passed".
swift test --disable-swift-testing "$@"
