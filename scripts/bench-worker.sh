#!/usr/bin/env bash
# Throughput of the worker's ingest and export stages against real servers
# on this machine (Mosquitto, Apache Kafka 4.4, InfluxDB 1.x all local), release
# build. BENCH_MESSAGES and BENCH_POINTS set the sizes; BENCH_STAGES=ingest
# (any of join,export,ingest,tls; tls: each over plaintext against over TLS)
# runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/deps.sh
source scripts/env.sh
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; servers and the worker share it"
cargo run --release -j "${CARGO_BUILD_JOBS:-2}" -p millrace-worker --example bench_stages
