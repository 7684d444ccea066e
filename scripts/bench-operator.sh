#!/usr/bin/env bash
# The operator with 100 pipelines created at once, against the test API
# server (kube-apiserver 1.20 + etcd) and a local Apache Kafka 4.4
# broker, all on this machine. Prints the time to reconcile all and the
# operator's resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/deps.sh
source scripts/env.sh
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; API server, etcd, broker and operator share it"
cargo build --release -j "${CARGO_BUILD_JOBS:-2}" -p millrace-operator
cargo run --release -j "${CARGO_BUILD_JOBS:-2}" -p millrace-operator --example bench_pipelines
