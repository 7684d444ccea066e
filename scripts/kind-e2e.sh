#!/usr/bin/env bash
# The end-to-end test on a local kind cluster: the real images, the Helm
# chart, a StreamPipeline, machine data over MQTT from this computer, joined
# points in InfluxDB, a working Grafana datasource, and cleanup on deletion.
#
#   bash scripts/kind-e2e.sh              (scripts/test.sh runs it last)
#   KEEP_CLUSTER=1 bash scripts/kind-e2e.sh   keep the cluster afterwards
#
# Where the cluster comes from (scripts/harness/cluster.sh):
# - a Docker engine this computer already has (`docker info` works) and kind
#   on PATH: kind's own node image, and the official images of Kafka,
#   InfluxDB, Mosquitto and Grafana from their registries;
# - otherwise the harness's own, as on the CI machines, which reach no image
#   registry: Debian's dockerd started for this run (scripts/harness/dockerd.sh),
#   every image built here (scripts/harness/images.sh all) and loaded into
#   kind, and afterwards the engine stopped and the host restored. No Grafana
#   image can be built here: the test then checks that Grafana's Pod waits
#   for its image and that the pipeline does not claim Grafana ready, and
#   that every other part is ready, instead of Grafana's API.
# MILLRACE_KIND_NODE=local|kind forces one. Also needs kubectl, helm and
# curl (scripts/deps.sh), and cargo to publish from this computer (without it
# data is published from a Pod). With CI=true anything missing fails the run;
# otherwise it is a skip that says what is missing.
#
# Steps: a fresh kind cluster `millrace-e2e` (kind-config.yaml: host port
# 1883 -> the managed Mosquitto's NodePort 31883, 3000 -> Grafana's 30300;
# an existing cluster of that name is deleted first); both images built
# (docker/*.Dockerfile) and loaded into kind; single-node Kafka (KRaft) and
# InfluxDB 1.8 in namespace millrace-e2e (scripts/kind/); the chart
# installed in millrace-system; scripts/kind/pipeline.yaml applied and
# awaited Ready; machine messages published to localhost:1883
# (examples/test_events.jsonl, or generated machines); joined points
# (derivedPower_*) awaited in InfluxDB; Grafana's provisioned datasource
# checked through its API on localhost:3000; the pipeline deleted and its
# StatefulSets, Deployments, Services, ConfigMaps, Secrets, Pods and Kafka topics
# (deletionPolicy: Delete) awaited gone.
#
# The last line says what happened: `kind-e2e: passed`, `kind-e2e: skipped:
# <why>` or `kind-e2e: failed: <why>` (exit status 1).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "kind-e2e: skipped: $*"
  exit 0
}

# --- can it run here? -----------------------------------------------------------
# A missing piece: a failure in CI, a skip elsewhere.
missing() {
  if [ "${CI:-}" = true ]; then
    echo "kind-e2e: failed: $*"
    exit 1
  fi
  skip "$*"
}
# helm, kubectl and kind come from scripts/deps.sh (cached under ~/.cache/millrace).
if [ -f scripts/env.sh ]; then
  # shellcheck source=scripts/env.sh
  source scripts/env.sh
fi
for tool in kind kubectl helm curl; do
  command -v "$tool" >/dev/null 2>&1 || missing "$tool not found (scripts/deps.sh installs kind, kubectl and helm)"
done
docker_info() { timeout 30 docker info >/dev/null 2>&1; }
MODE=${MILLRACE_KIND_NODE:-}
if [ -z "$MODE" ]; then
  if command -v docker >/dev/null 2>&1 && docker_info; then MODE=kind; else MODE=local; fi
fi
export MILLRACE_KIND_NODE=$MODE
if [ "$MODE" = local ]; then
  command -v dockerd >/dev/null 2>&1 ||
    missing "no reachable Docker engine, and no dockerd for the harness's own (scripts/deps.sh installs docker.io)"
  [ "$(id -u)" = 0 ] || missing "the harness's own Docker engine needs root (or use a Docker engine of your own)"
else
  command -v docker >/dev/null 2>&1 || missing "docker not found"
fi

# --- settings -------------------------------------------------------------------
CLUSTER=millrace-e2e
NS=millrace-e2e
SYSTEM_NS=millrace-system
RELEASE=millrace
PIPELINE=line-1
JOBS="${CARGO_BUILD_JOBS:-2}"
DATA="${MILLRACE_TEST_EVENTS:-examples/test_events.jsonl}"
# The workspace version: the images' tag, and the worker image the operator
# uses by default (millrace/worker:<version>).
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
[ -n "$VERSION" ] || { echo "kind-e2e: failed: no version in Cargo.toml"; exit 1; }
WORKER_IMAGE="millrace/worker:$VERSION"
OPERATOR_IMAGE="millrace/operator:$VERSION"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
KUBECONFIG_FILE=$(bash scripts/harness/cluster.sh kubeconfig "$CLUSTER")
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }
kafka_topics() { k -n "$NS" exec deploy/kafka -- /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 "$@"; }

# What a person needs to see when it fails.
diagnostics() {
  k get nodes -o wide || true
  k get pods -A -o wide || true
  k -n "$NS" get streampipelines -o yaml || true
  k -n "$NS" get events --sort-by=.lastTimestamp | tail -n 40 || true
  local pod ns
  for ns in "$SYSTEM_NS" "$NS"; do
    for pod in $(k -n "$ns" get pods -o name 2>/dev/null); do
      echo "--- logs of $ns/$pod (last 60 lines)"
      k -n "$ns" logs "$pod" --all-containers --tail=60 || true
    done
  done
}

# The verdict is the last line, printed on exit: after the diagnostics of a
# failure and after the cluster is deleted.
REASON=""   # why it failed
PASSED=""
CLUSTER_CREATED=""
ENGINE_STARTED=""
fail() {
  REASON="$*"
  exit 1
}
# A failing command in the main shell (or its functions) records where; set
# -e then exits. Subshells (command substitutions) are left to their callers.
on_err() { # status line command [caller-line function]
  [ "$BASHPID" = "$$" ] && [ -z "$REASON" ] || return 0
  if [ -n "${5:-}" ]; then
    REASON="line $4 (in $5, line $2): $3 (exit status $1)"
  else
    REASON="line $2: $3 (exit status $1)"
  fi
}
set -E
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND" "${BASH_LINENO[0]:-}" "${FUNCNAME[0]:-}"' ERR
finish() {
  local status=$?
  trap - ERR
  set +e
  if [ "$status" -ne 0 ] || [ -z "$PASSED" ]; then
    [ -n "$CLUSTER_CREATED" ] && diagnostics >&2
  fi
  if [ -n "$CLUSTER_CREATED" ]; then
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
      log "keeping the cluster (KEEP_CLUSTER=1): kubectl --kubeconfig $KUBECONFIG_FILE ...; remove it with: bash scripts/harness/cluster.sh down $CLUSTER${ENGINE_STARTED:+, then bash scripts/harness/dockerd.sh down}"
    else
      log "deleting the cluster $CLUSTER"
      bash scripts/harness/cluster.sh down "$CLUSTER"
    fi
  fi
  # The harness's own engine goes with the run (unless the cluster stays):
  # its bridges, iptables chains and the host's sysctls restored.
  if [ -n "$ENGINE_STARTED" ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    bash scripts/harness/dockerd.sh down
  fi
  if [ "$status" -eq 0 ] && [ -n "$PASSED" ]; then
    echo "kind-e2e: passed"
  else
    echo "kind-e2e: failed: ${REASON:-exit status $status}"
    [ "$status" -ne 0 ] || status=1
  fi
  exit "$status"
}
trap finish EXIT
trap 'REASON="interrupted"; exit 130' INT TERM

# Polls CMD... every 3 s until it succeeds; fails after MAX seconds.
wait_for() {
  local max=$1 what=$2
  shift 2
  local deadline=$((SECONDS + max))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${max}s waiting for $what"
    sleep 3
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- the engine and the images --------------------------------------------------------
if [ "$MODE" = local ]; then
  # Stopped at the end only if this run started it.
  if ! bash scripts/harness/dockerd.sh status; then
    log "starting the harness's own Docker engine (scripts/harness/dockerd.sh)"
    ENGINE_STARTED=1
  fi
  bash scripts/harness/dockerd.sh up
  eval "$(bash scripts/harness/dockerd.sh env)"
  log "building the images here (scripts/harness/images.sh all)"
  start=$SECONDS
  bash scripts/harness/images.sh all
  log "images ready in $((SECONDS - start)) s"
  # Everything the cluster runs, since nothing can be pulled.
  IMAGES=("$WORKER_IMAGE" "$OPERATOR_IMAGE" apache/kafka:4.4.0 influxdb:1.6 eclipse-mosquitto:2.0 prom/prometheus:v3.16.0)
else
  for image in worker operator; do
    tag="millrace/$image:$VERSION"
    log "building $tag (docker/$image.Dockerfile)"
    DOCKER_BUILDKIT=1 docker build -f "docker/$image.Dockerfile" --build-arg "VERSION=$VERSION" -t "$tag" .
  done
  IMAGES=("$WORKER_IMAGE" "$OPERATOR_IMAGE")
fi

# --- the harness itself -------------------------------------------------------------
# Before the product's test relies on it: a cluster, our image in a Pod, DNS,
# Services, Prometheus (scripts/harness/smoke.sh; its Kafka checks are tests
# that scripts/test.sh has run already).
log "smoke test of the harness (scripts/harness/smoke.sh --no-kafka)"
bash scripts/harness/smoke.sh --no-kafka || fail "the harness's smoke test failed (its output above)"

# --- the cluster ------------------------------------------------------------------
for port in 1883 3000; do
  ! port_open "$port" || fail "host port $port is in use; kind-config.yaml maps it into the cluster (MQTT 1883, Grafana 3000): stop what listens there"
done
CLUSTER_CREATED=1
start=$SECONDS
bash scripts/harness/cluster.sh up "$CLUSTER"
log "cluster ready in $((SECONDS - start)) s; loading ${IMAGES[*]}"
kind load docker-image --name "$CLUSTER" "${IMAGES[@]}"

# --- Kafka and InfluxDB --------------------------------------------------------------
log "starting Kafka and InfluxDB in namespace $NS"
k apply -f scripts/kind/namespace.yaml
k apply -f scripts/kind/kafka.yaml -f scripts/kind/influxdb.yaml
k -n "$NS" rollout status deploy/influxdb --timeout=300s
k -n "$NS" rollout status deploy/kafka --timeout=300s
wait_for 180 "the Kafka broker to answer" kafka_topics --list

# --- the operator -----------------------------------------------------------------------
[ -d charts/millrace ] || fail "charts/millrace not found"
log "installing the chart (operator image $OPERATOR_IMAGE)"
# rbac.secretNamespaces: the operator may create the pipeline's generated
# Grafana admin Secret only in the namespaces listed (never cluster-wide).
helm --kubeconfig "$KUBECONFIG_FILE" install "$RELEASE" charts/millrace \
  --namespace "$SYSTEM_NS" --create-namespace \
  --set image.repository=millrace/operator --set "image.tag=$VERSION" --set image.pullPolicy=Never \
  --set "rbac.secretNamespaces={$NS}" \
  --wait --timeout 5m
k wait --for=condition=Established crd/streampipelines.millrace.io --timeout=60s

# --- the pipeline -----------------------------------------------------------------------
# The MQTT login of the workers and of the simulator below; the managed
# broker requires it (and refuses anonymous clients).
export MILLRACE_MQTT_USERNAME=line-1
MILLRACE_MQTT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '/+' '_-')
export MILLRACE_MQTT_PASSWORD
k -n "$NS" create secret generic mqtt-login --from-literal=username="$MILLRACE_MQTT_USERNAME" \
  --from-literal=password="$MILLRACE_MQTT_PASSWORD" --dry-run=client -o yaml | k apply -f - >/dev/null
# The managed broker serves MQTT over TLS only (mosquitto.tls): a CA and a
# certificate for its Service's names and for localhost (its NodePort as
# this computer reaches it), made here with openssl in the kubernetes.io/tls
# layout cert-manager writes.
TLS_DIR=target/kind-e2e/tls
rm -rf "$TLS_DIR" && mkdir -p "$TLS_DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=millrace-e2e test CA" \
  -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$PIPELINE-mosquitto" -keyout "$TLS_DIR/tls.key" -out "$TLS_DIR/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s.svc,DNS:localhost,IP:127.0.0.1\n' "$PIPELINE-mosquitto" "$PIPELINE-mosquitto" "$NS" >"$TLS_DIR/san.ext"
openssl x509 -req -in "$TLS_DIR/tls.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" -CAcreateserial -days 2 \
  -extfile "$TLS_DIR/san.ext" -out "$TLS_DIR/tls.crt" 2>/dev/null
k -n "$NS" create secret generic mosquitto-tls --type=kubernetes.io/tls --from-file="$TLS_DIR/tls.crt" \
  --from-file="$TLS_DIR/tls.key" --from-file="$TLS_DIR/ca.crt" --dry-run=client -o yaml | k apply -f - >/dev/null
log "applying scripts/kind/pipeline.yaml (workers $WORKER_IMAGE)"
k apply -f scripts/kind/pipeline.yaml
if [ "$MODE" = kind ]; then
  k -n "$NS" wait --for=condition=Ready "streampipeline/$PIPELINE" --timeout=300s ||
    fail "streampipeline/$PIPELINE did not become Ready within 300s"
else
  # No Grafana image here: every other part must be ready, and Ready must not
  # claim the whole pipeline is.
  for c in SpecValid TopicsReady WorkersReady BrokerReady; do
    k -n "$NS" wait --for=condition=$c "streampipeline/$PIPELINE" --timeout=300s ||
      fail "streampipeline/$PIPELINE: $c did not become True within 300s"
  done
fi
k -n "$NS" get streampipeline "$PIPELINE" -o wide
image=$(k -n "$NS" get statefulset "$PIPELINE-ingest" -o jsonpath='{.spec.template.spec.containers[0].image}')
[ "$image" = "$WORKER_IMAGE" ] || fail "the ingest StatefulSet runs $image, not $WORKER_IMAGE"

# --- machine data over MQTT -----------------------------------------------------------------
# The simulator is the worker image's own binary, run on this computer (the
# image is Debian 12's glibc); where it cannot run here, a release build; with
# neither, a Pod inside the cluster.
WORKER=""
mkdir -p target/kind-e2e
container=$(docker create "$WORKER_IMAGE")
docker cp "$container:/millrace-worker" target/kind-e2e/millrace-worker >/dev/null
docker rm "$container" >/dev/null
if target/kind-e2e/millrace-worker --version >/dev/null 2>&1; then
  WORKER=target/kind-e2e/millrace-worker
  log "the simulator: $WORKER, copied out of $WORKER_IMAGE"
elif command -v cargo >/dev/null 2>&1; then
  log "the image's binary does not run on this computer: building the worker here for the simulator"
  cargo build --release -j "$JOBS" -p millrace-worker
  WORKER=target/release/millrace-worker
fi
if [ -n "$WORKER" ]; then
  wait_for 120 "localhost:1883 (the managed Mosquitto's NodePort)" port_open 1883
  # The broker takes the workers' login (BrokerReady) and refuses anonymous clients.
  if command -v mosquitto_pub >/dev/null; then
    if refused=$(mosquitto_pub -h 127.0.0.1 -p 1883 --cafile "$TLS_DIR/ca.crt" -t machines/anonymous -m '{}' 2>&1); then
      fail "the managed Mosquitto took an anonymous client"
    fi
    grep -q "not authorised" <<<"$refused" || fail "anonymous publish failed, but not as unauthorised: $refused"
    log "the managed Mosquitto refuses anonymous clients: $refused"
  fi
  publish() {
    if [ -f "$DATA" ]; then
      log "publishing $DATA to mqtts://127.0.0.1:1883"
      "$WORKER" simulate --url mqtts://127.0.0.1:1883 --ca-file "$TLS_DIR/ca.crt" --file "$DATA" --retime --rate 1000
    else
      log "publishing generated machines to mqtts://127.0.0.1:1883 ($DATA not found)"
      "$WORKER" simulate --url mqtts://127.0.0.1:1883 --ca-file "$TLS_DIR/ca.crt" --machines 3 --interval 100ms --duration 15s --rate 300
    fi
  }
else
  # Publish from a Pod of the worker image, inside the cluster (the host port
  # mapping of MQTT is then not exercised).
  publish() {
    log "publishing generated machines from a Pod (no simulator runs on this computer)"
    k -n "$NS" delete pod millrace-simulate --ignore-not-found --wait=true >/dev/null
    # The broker's CA from its Secret; the login from the workers' Secret.
    k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: millrace-simulate}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: simulate
      image: $WORKER_IMAGE
      imagePullPolicy: Never
      args: [simulate, --url, "mqtts://$PIPELINE-mosquitto:8883", --ca-file, /tls/ca.crt,
             --machines, "3", --interval, 100ms, --duration, 15s, --rate, "300"]
      env:
        - {name: MILLRACE_MQTT_USERNAME, valueFrom: {secretKeyRef: {name: mqtt-login, key: username}}}
        - {name: MILLRACE_MQTT_PASSWORD, valueFrom: {secretKeyRef: {name: mqtt-login, key: password}}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]
  volumes: [{name: tls, secret: {secretName: mosquitto-tls, items: [{key: ca.crt, path: ca.crt}]}}]
EOF
    k -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/millrace-simulate --timeout=120s
  }
fi

influx_count() {
  # $1: an InfluxQL regex on the quantity tag. Prints the number of points.
  k -n "$NS" exec deploy/influxdb -- influx -database millrace -format csv \
    -execute "SELECT count(\"result\") FROM \"machine\" WHERE \"quantity\" =~ /$1/" 2>/dev/null |
    awk -F, 'NR == 2 { print $3 }'
}

publish || log "publishing failed; trying again later"
log "waiting for joined points (derivedPower_*) in InfluxDB"
deadline=$((SECONDS + 180))
next_publish=$((SECONDS + 60))
joined=0
while :; do
  joined=$(influx_count '^derivedPower_' || true)
  joined=${joined:-0}
  [ "$joined" -gt 0 ] 2>/dev/null && break
  if [ $SECONDS -ge $deadline ]; then
    raw=$(influx_count '^(actSpeed|vaTorque)_' || true)
    fail "no joined points in InfluxDB after 180s (raw speed/torque points: ${raw:-0})"
  fi
  # The ingest worker may have subscribed only after the first messages.
  if [ $SECONDS -ge $next_publish ]; then
    publish || log "publishing failed; trying again later"
    next_publish=$((SECONDS + 60))
  fi
  sleep 5
done
raw=$(influx_count '^(actSpeed|vaTorque)_' || true)
log "InfluxDB: $joined joined points (derivedPower_*), ${raw:-0} raw speed/torque points"

# --- Grafana ------------------------------------------------------------------------------
if [ "$MODE" = local ]; then
  # No registry, no Grafana image: its Pod must be waiting for the image, and
  # the pipeline must say Grafana (and so the pipeline) is not ready.
  waiting=$(k -n "$NS" get pods -l "app.kubernetes.io/instance=$PIPELINE,app.kubernetes.io/component=grafana" \
    -o jsonpath='{.items[*].status.containerStatuses[*].state.waiting.reason}')
  case "$waiting" in
    *ErrImagePull*|*ImagePullBackOff*) ;;
    *) fail "the Grafana Pod is not waiting for its image (waiting: '${waiting:-none}'), yet no Grafana image can be here" ;;
  esac
  grafana_ready=$(k -n "$NS" get streampipeline "$PIPELINE" -o jsonpath='{.status.conditions[?(@.type=="GrafanaReady")].status}')
  ready=$(k -n "$NS" get streampipeline "$PIPELINE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  [ "$grafana_ready" = False ] && [ "$ready" = False ] ||
    fail "the Grafana Pod waits for its image ($waiting), yet GrafanaReady=$grafana_ready and Ready=$ready"
  log "Grafana: the Pod waits for its image ($waiting); GrafanaReady=False, Ready=False, as they should"
else
  secret="$PIPELINE-grafana-admin"
  gf_user=$(k -n "$NS" get secret "$secret" -o jsonpath='{.data.admin-user}' | base64 -d)
  gf_password=$(k -n "$NS" get secret "$secret" -o jsonpath='{.data.admin-password}' | base64 -d)
  [ -n "$gf_password" ] || fail "no admin-password in Secret $secret"
  grafana() { curl -fsS --max-time 20 -u "$gf_user:$gf_password" "http://127.0.0.1:3000$1"; }
  wait_for 120 "Grafana on localhost:3000 (NodePort 30300)" grafana /api/health
  datasources=$(grafana /api/datasources) || fail "GET /api/datasources failed"
  grep -q '"uid":"millrace-influxdb"' <<<"$datasources" || fail "no datasource millrace-influxdb in Grafana: $datasources"
  grep -q '"url":"http://influxdb.millrace-e2e.svc:8086"' <<<"$datasources" || fail "the datasource does not point at the pipeline's InfluxDB: $datasources"
  health=$(grafana /api/datasources/uid/millrace-influxdb/health) || fail "the datasource health check failed: $health"
  grep -q '"status":"OK"' <<<"$health" || fail "the datasource is not healthy: $health"
  log "Grafana datasource millrace-influxdb: $health"
  grafana "/api/dashboards/uid/millrace-$PIPELINE" >/dev/null || fail "no provisioned dashboard millrace-$PIPELINE in Grafana"
  grep -q '"uid":"millrace-prometheus"' <<<"$datasources" || fail "no datasource millrace-prometheus in Grafana: $datasources"
  grafana "/api/dashboards/uid/health-$PIPELINE" >/dev/null || fail "no provisioned health dashboard health-$PIPELINE in Grafana"
fi

# --- deletion and cleanup -------------------------------------------------------------------
topics=$(kafka_topics --list)
for t in "$PIPELINE.raw" "$PIPELINE.joined" "$PIPELINE.dead-letter"; do
  grep -qx "$t" <<<"$topics" || fail "topic $t not found in Kafka before deletion: $topics"
done
log "deleting streampipeline/$PIPELINE (deletionPolicy: Delete)"
if ! k -n "$NS" delete streampipeline "$PIPELINE" --timeout=180s; then
  fail "streampipeline/$PIPELINE was not deleted within 180s (its finalizer deletes the topics first)"
fi
children() {
  k -n "$NS" get statefulsets,deployments,services,configmaps,secrets,pods,persistentvolumeclaims \
    -l "app.kubernetes.io/instance=$PIPELINE,app.kubernetes.io/name=millrace" -o name
}
deadline=$((SECONDS + 180))
while :; do
  left=$(children) || left="(kubectl get failed)"
  [ -n "$left" ] || break
  [ "$SECONDS" -lt "$deadline" ] || fail "objects of the deleted pipeline still there after 180s: $(tr '\n' ' ' <<<"$left")"
  sleep 3
done
no_pipeline_topics() {
  # Captured first: grep -q closing the pipe early would fail under pipefail.
  local list
  list=$(kafka_topics --list) || return 1
  ! grep -q "^$PIPELINE\\." <<<"$list"
}
wait_for 120 "the pipeline's Kafka topics to be deleted" no_pipeline_topics
log "worker StatefulSets, Mosquitto, Grafana and the Kafka topics are gone"

PASSED=1
