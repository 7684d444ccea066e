#!/usr/bin/env bash
# Peak resident memory of `join-file` (release, whole process) over 2.5, 5
# and 10 M generated records: machines that flow, and machines that go
# quiet, lose a sensor or have one side only, with the default stateHorizon
# and with one longer than the data (the join as it was without it).
# Sizes: bash scripts/bench-join-memory.sh 1e6 2e6
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -j "${CARGO_BUILD_JOBS:-2}" -p millrace-worker
python3 scripts/bench_join_memory.py target/release/millrace-worker "$@"
