#!/usr/bin/env bash
# The whole Millrace pipeline on this machine, in embedded mode (no Kafka,
# no Kubernetes): local Mosquitto and InfluxDB, the worker joining speed and
# torque into power, and the simulator replaying recorded machine data.
# Installs what it needs first. Everything it makes goes to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/deps.sh demo   # Mosquitto, InfluxDB, matplotlib: nothing of the test harness
# shellcheck source=scripts/env.sh
source scripts/env.sh

say() { printf '\n==> %s\n' "$*"; }

BUILD_START=$SECONDS
say "Building the worker (release; cached after the first time)"
cargo build --release -j "${CARGO_BUILD_JOBS:-2}" -p millrace-worker
BUILD_SECONDS=$((SECONDS - BUILD_START))
WORKER=target/release/millrace-worker

OUT=out/demo
rm -rf "$OUT" && mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port); INFLUX_PORT=$(free_port); INFLUX_RPC=$(free_port); METRICS_PORT=$(free_port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

say "Starting Mosquitto on 127.0.0.1:$MQTT_PORT and InfluxDB on 127.0.0.1:$INFLUX_PORT"
mkdir -p "$OUT/mosquitto" "$OUT/influxdb"
cat > "$OUT/mosquitto/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
user root
max_inflight_messages 0
max_queued_messages 1000000
CONF
mosquitto -c "$OUT/mosquitto/mosquitto.conf" >"$OUT/mosquitto/log" 2>&1 & pids+=($!)
cat > "$OUT/influxdb/influxdb.conf" <<CONF
reporting-enabled = false
bind-address = "127.0.0.1:$INFLUX_RPC"
[meta]
  dir = "$PWD/$OUT/influxdb/meta"
[data]
  dir = "$PWD/$OUT/influxdb/data"
  wal-dir = "$PWD/$OUT/influxdb/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[logging]
  level = "warn"
CONF
influxd -config "$OUT/influxdb/influxdb.conf" >"$OUT/influxdb/log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null || { echo "InfluxDB did not start; see $OUT/influxdb/log" >&2; exit 1; }

sed -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$MQTT_PORT#" \
    -e "s#http://127.0.0.1:8086#http://127.0.0.1:$INFLUX_PORT#" \
    -e "s#file: dead-letters.jsonl#file: $OUT/dead-letters.jsonl#" examples/embedded.yaml > "$OUT/pipeline.yaml"

say "Starting the worker in embedded mode (config: $OUT/pipeline.yaml, metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
RUST_LOG=warn "$WORKER" run --config "$OUT/pipeline.yaml" --metrics-addr "127.0.0.1:$METRICS_PORT" >"$OUT/worker.log" 2>&1 & pids+=($!)
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null || { echo "the worker did not get ready; see $OUT/worker.log" >&2; exit 1; }

DATA=examples/test_events.jsonl
if [ -f "$DATA" ]; then
  say "Replaying $DATA (5,000 recorded machine messages, re-timed to now) at 2,000 messages/s"
  "$WORKER" simulate --url "mqtt://127.0.0.1:$MQTT_PORT" --file "$DATA" --retime --rate 2000
else
  say "No recorded data at $DATA: generating 3 machines for 10 seconds"
  "$WORKER" simulate --url "mqtt://127.0.0.1:$MQTT_PORT" --machines 3 --interval 10ms --duration 10s --rate 300
fi

say "Waiting for the last points to reach InfluxDB"
last=-1
for _ in $(seq 60); do
  n=$(curl -s "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode db=millrace --data-urlencode 'q=SELECT count(result) FROM machine' \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)')
  [ -t 2 ] && printf '\r  %s points in InfluxDB' "$n" >&2
  [ "$n" = "$last" ] && [ "$n" != 0 ] && break
  last=$n; sleep 1
done
[ -t 2 ] && printf '\n' >&2

say "What arrived"
"$MILLRACE_CACHE/venv/bin/python" scripts/demo_report.py "http://127.0.0.1:$INFLUX_PORT" millrace "$OUT"
dead=$(wc -l < "$OUT/dead-letters.jsonl" 2>/dev/null || echo 0)
# What the stages counted, from the worker's own metrics.
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" -v s="stage=\"$2\"" 'index($0, m "{") == 1 && index($0, s) { n += $NF } END { printf "%d", n }'; }
cat <<MSG

Done in $SECONDS s (build $BUILD_SECONDS s): the worker read $(metric millrace_records_in_total ingest) MQTT messages, \
split them into $(metric millrace_records_out_total ingest) records, joined $(metric millrace_records_out_total join) pairs \
and wrote $(metric millrace_records_out_total export) points to InfluxDB ($n there: pairs at the same time are one point).
Dead letters (bad input, with the reason): $dead, in $OUT/dead-letters.jsonl
Worker log: $OUT/worker.log   Pipeline config: $OUT/pipeline.yaml
Next: README.md shows how to run the same pipeline on Kubernetes with one StreamPipeline resource.
MSG
