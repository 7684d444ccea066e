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
# Tests that return early for want of a tool (testkit's require!, outside
# CI) pass as far as cargo knows: they write themselves here instead.
export MILLRACE_SKIPS="$PWD/target/skipped.txt"
: > "$MILLRACE_SKIPS"
# A failing test must not end the script here (set -e): the closing line
# and the cluster test still come.
set +e
cargo test -j "$JOBS" --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run, from cargo's per-binary summaries;
# a skipped test counts as skipped, not passed.
skipped=$(wc -l < "$MILLRACE_SKIPS")
awk -v skipped="$skipped" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "cargo: %d passed, %d failed, %d skipped\n", p - skipped, f, s + skipped }' target/test.log
if [ "$skipped" -gt 0 ]; then
  echo "skipped for want of a tool (scripts/deps.sh installs them):"
  sed 's/^/  /' "$MILLRACE_SKIPS"
fi

if [ -x scripts/kind-e2e.sh ]; then
  bash scripts/kind-e2e.sh || status=$?
fi
exit "$status"
