#!/usr/bin/env bash
# Proves the harness, end to end, before the product's tests rely on it:
#   1. a kind cluster (scripts/harness/cluster.sh) Ready with CoreDNS;
#   2. a Pod of our worker image running `check-config` on the example;
#   3. the worker, embedded, reaching Mosquitto and InfluxDB by their Service
#      DNS names (its /readyz), machine messages from a simulator Pod going
#      through it into InfluxDB;
#   4. Prometheus in the cluster finding the worker through the Kubernetes API
#      and scraping it (up == 1, records counted);
#   5. Apache Kafka: transactions read with read_committed, and a broker of
#      three SIGKILLed mid-stream and restarted with nothing acknowledged lost
#      (the two testkit tests that prove it, run here by name).
#
#   scripts/harness/smoke.sh              (KEEP_CLUSTER=1 keeps the cluster)
#   scripts/harness/smoke.sh --no-kafka   steps 1-4 only: scripts/kind-e2e.sh
#                                         runs it so, after `cargo test` ran step 5's tests
#
# Needs the engine and images: scripts/harness/dockerd.sh up, then
# scripts/harness/images.sh all (or a Docker with registry access and kind,
# MILLRACE_KIND_NODE=kind). Prints each step's time and `smoke: passed`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh

KAFKA=1
[ "${1:-}" = --no-kafka ] && KAFKA=0
CLUSTER=millrace-smoke
NS=millrace-e2e
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
WORKER_IMAGE="millrace/worker:$VERSION"
STEP_START=$SECONDS

log() { printf '[smoke] %s\n' "$*" >&2; }
step() { log "ok ($((SECONDS - STEP_START)) s): $*"; STEP_START=$SECONDS; }
PASSED=""
finish() {
  local status=$?
  if [ -z "$PASSED" ] && [ -n "${KUBECONFIG:-}" ] && [ -f "$KUBECONFIG" ]; then
    kubectl get pods -A -o wide >&2 || true
    kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
    for pod in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
      echo "--- $pod" >&2; kubectl -n "$NS" logs "$pod" --tail=30 >&2 || true
    done
  fi
  [ -n "${PF_PID:-}" ] && kill "$PF_PID" 2>/dev/null
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then bash "$HERE/cluster.sh" down "$CLUSTER"; fi
  if [ -n "$PASSED" ]; then echo "smoke: passed"; else echo "smoke: failed${REASON:+: $REASON}"; [ "$status" -ne 0 ] || status=1; fi
  exit "$status"
}
trap finish EXIT
REASON=""
fail() { REASON="$*"; exit 1; }

# --- 1. the cluster ----------------------------------------------------------------------
bash "$HERE/cluster.sh" up "$CLUSTER"
KUBECONFIG=$(bash "$HERE/cluster.sh" kubeconfig "$CLUSTER")
export KUBECONFIG
kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null
step "cluster $CLUSTER Ready, CoreDNS running"

images=("$WORKER_IMAGE")
# Without a registry every image comes from the harness's engine.
[ "$(bash "$HERE/cluster.sh" mode)" = kind ] || images+=(eclipse-mosquitto:2.0 influxdb:1.6 prom/prometheus:v3.16.0)
for image in "${images[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || fail "image $image not built (scripts/harness/images.sh all)"
done
kind load docker-image --name "$CLUSTER" "${images[@]}" >/dev/null
step "loaded ${images[*]}"

# --- 2. check-config in a Pod ----------------------------------------------------------
kubectl apply -f scripts/kind/namespace.yaml >/dev/null
kubectl apply -f scripts/kind/influxdb.yaml -f scripts/kind/prometheus.yaml >/dev/null
sed "s/@VERSION@/$VERSION/" "$HERE/smoke/workloads.yaml" | kubectl apply -f - >/dev/null
kubectl -n "$NS" wait --for=condition=Complete job/check-config --timeout=120s >/dev/null ||
  fail "the check-config Pod did not complete: $(kubectl -n "$NS" logs job/check-config 2>&1 | tail -n 5)"
out=$(kubectl -n "$NS" logs job/check-config)
log "check-config said: $out"
step "worker image ran check-config in a Pod"

# --- 3. Services by DNS name, data through the worker --------------------------------------
for d in mosquitto influxdb prometheus embedded; do
  kubectl -n "$NS" rollout status "deployment/$d" --timeout=180s >/dev/null || fail "deployment/$d not ready"
done
step "worker Ready: reached mosquitto.$NS.svc.cluster.local and influxdb by DNS"
kubectl -n "$NS" run simulate --image="$WORKER_IMAGE" --image-pull-policy=Never --restart=Never -- \
  simulate --url "mqtt://mosquitto:1883" --machines 3 --interval 100ms --duration 10s --rate 300 >/dev/null
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/simulate --timeout=120s >/dev/null ||
  fail "the simulator Pod did not succeed: $(kubectl -n "$NS" logs pod/simulate 2>&1 | tail -n 5)"
influx_count() {
  kubectl -n "$NS" exec deploy/influxdb -- influx -database millrace -format csv \
    -execute "SELECT count(\"result\") FROM \"machine\" WHERE \"quantity\" =~ /$1/" 2>/dev/null | awk -F, 'NR == 2 { print $3 }'
}
deadline=$((SECONDS + 60))
until [ "$(influx_count '^derivedPower_' || true)" -gt 0 ] 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "no joined points in InfluxDB 60 s after the simulator finished"
  sleep 2
done
step "simulated machines -> Mosquitto -> worker -> InfluxDB: $(influx_count '^derivedPower_') joined, $(influx_count '^(actSpeed|vaTorque)_') raw points"

# --- 4. Prometheus scrapes the worker ------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl -n "$NS" port-forward svc/prometheus "$port:9090" >/dev/null 2>&1 &
PF_PID=$!
prom() { curl -fsS --max-time 10 "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1"; }
value() { python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'; }
deadline=$((SECONDS + 90))
until [ "$(prom 'up{job="millrace",component="embedded"}' 2>/dev/null | value)" = 1 ] &&
      [ "$(prom 'sum(millrace_records_in_total{component="embedded"}) > 0' 2>/dev/null | value)" != "" ]; do
  [ $SECONDS -lt $deadline ] || fail "Prometheus did not scrape the worker within 90 s: $(prom 'up' 2>&1)"
  sleep 3
done
step "Prometheus found the worker Pod (kubernetes_sd_configs) and scraped $(prom 'sum(millrace_records_in_total{component="embedded"})' | value) records in"

# --- 5. Apache Kafka ---------------------------------------------------------------------------
if [ "$KAFKA" = 1 ]; then
cargo test -q -j "${CARGO_BUILD_JOBS:-2}" -p millrace-testkit --test servers -- --exact \
  kafka_transactions_are_seen_correctly_by_read_committed \
  kafka_cluster_loses_nothing_acknowledged_when_a_broker_is_killed_mid_stream >&2 ||
  fail "the Apache Kafka checks failed"
step "Apache Kafka: read_committed transactions; a broker of three killed and restarted, nothing acknowledged lost"
fi

PASSED=1
