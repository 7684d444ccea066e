#!/usr/bin/env bash
# Runs every Millrace test on this machine, installing what the tests need
# first (scripts/deps.sh: a few seconds once it has run before).
#
#   scripts/test.sh              all tests
#   scripts/test.sh -p millrace-worker join   extra args go to `cargo test`
#
# The tests start real servers (Mosquitto, InfluxDB, a Kafka-protocol broker,
# etcd and kube-apiserver) on loopback ports. With CI=true a missing server
# or tool fails the run; otherwise such a test says it was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (rustup) first" >&2; exit 1; }

bash scripts/deps.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh

JOBS="${CARGO_BUILD_JOBS:-2}"
if [ $# -gt 0 ]; then
  exec cargo test -j "$JOBS" "$@"
fi

mkdir -p target
cargo test -j "$JOBS" --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}

# One closing line for the whole run, from cargo's per-binary summaries.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "cargo: %d passed, %d failed, %d skipped\n", p, f, s }' target/test.log

if [ -x scripts/kind-e2e.sh ]; then
  bash scripts/kind-e2e.sh || status=$?
fi
exit "$status"
