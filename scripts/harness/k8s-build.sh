#!/usr/bin/env bash
# Builds the Kubernetes binaries the harness needs from Go modules, once per
# version, into $MILLRACE_CACHE:
#   k8s-$K8S_VERSION/bin/   kube-apiserver, kube-controller-manager, kube-scheduler,
#                           kube-proxy, kubelet, kubeadm, kubectl (one `go build`)
#   etcd-$ETCD_VERSION/bin/etcd
#   coredns-$COREDNS_VERSION/bin/coredns
#   pause-$K8S_VERSION/bin/pause         (gcc -static, from the kubernetes module)
#   kind-$KIND_VERSION/bin/kind
#   prometheus-$PROMETHEUS_VERSION/bin/   prometheus, promtool (Kubernetes service
#                           discovery only: build tags remove_all_sd,enable_kubernetes_sd)
# The Go module and build caches live in $MILLRACE_CACHE/go, so a rebuild
# after a cleared output takes about a minute instead of twelve.
# Usage: scripts/harness/k8s-build.sh [all|apiserver|kind|prometheus]
#   apiserver: only kube-apiserver + etcd (what the API-server tests need)
set -euo pipefail

# shellcheck source=scripts/harness/versions.sh
source "$(dirname "$0")/versions.sh"
STAGING_VERSION=v0.${K8S_VERSION#v1.}

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
what=${1:-all}
log() { printf '[k8s-build] %s\n' "$*" >&2; }
command -v go >/dev/null || { echo "k8s-build: go not found (Go 1.24 or newer is needed)" >&2; exit 1; }

# Runs "$@" with its output in a log, shown only when it fails.
quiet() {
  local logf; logf=$(mktemp)
  if ! "$@" >"$logf" 2>&1; then tail -n 60 "$logf" >&2; rm -f "$logf"; return 1; fi
  rm -f "$logf"
}

# Enters a fresh throwaway main module $CACHE/go/wrap-$1 that requires
# module $2 at version $3, and sets `src` to that module's source. Its `go`
# and `godebug` lines are copied, because they only count in the main module
# (kubernetes needs godebug default=go1.24). Call it inside a subshell.
wrap_module() {
  local dir="$CACHE/go/wrap-$1"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init localbuild >/dev/null 2>&1
  quiet go mod download -json "$2@$3"
  src="$GOMODCACHE/$2@$3"
  go mod edit -go="$(awk '/^go /{print $2; exit}' "$src/go.mod")"
  awk '/^godebug /{print $2}' "$src/go.mod" | while read -r g; do go mod edit -godebug="$g"; done
  go mod edit -require="$2@$3"
}

build_kubernetes() {
  local out="$CACHE/k8s-$K8S_VERSION/bin"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl)
  [ "$what" = apiserver ] && bins=(kube-apiserver)
  local need=0 b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || need=1; done
  [ $need = 1 ] || return 0
  log "kubernetes $K8S_VERSION: ${bins[*]} (about 12 min cold on 2 cores, about a minute with warm Go caches)"
  (
    wrap_module k8s k8s.io/kubernetes "$K8S_VERSION"
    # Every staging module (its go.mod says `=> ./staging/src/k8s.io/X`) at the matching v0 version.
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$src/go.mod" | awk '{print $1}' | while read -r m; do
      go mod edit -replace="$m=$m@$STAGING_VERSION"
    done
    local pkgs=() b
    for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    # Exact versions: without @version `go get` upgrades to the newest k8s (trap 1).
    local getargs=(); for p in "${pkgs[@]}"; do getargs+=("$p@$K8S_VERSION"); done
    quiet go get "${getargs[@]}"
    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    local x="" pkg
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      x+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    mkdir -p "$out.tmp"
    quiet go build -trimpath -ldflags "-s -w$x" -o "$out.tmp/" "${pkgs[@]}"
    mkdir -p "$out"; mv "$out.tmp"/* "$out/"; rmdir "$out.tmp"
  )
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION/bin"
  [ -x "$out/etcd" ] && return 0
  log "etcd $ETCD_VERSION"
  (
    wrap_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
    # server/go.mod replaces its siblings with ../X, which only counts there:
    # pin each to the version server itself requires (client/v2 is v2.305.N).
    awk '/^require \(/{r=1; next} r && /^\)/{r=0} r && $1 ~ /^go.etcd.io\/etcd\// {print $1"@"$2}' "$src/go.mod" |
      while read -r mv; do go mod edit -replace="${mv%@*}=$mv"; done
    quiet go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    mkdir -p "$out"
    quiet go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  )
}

build_coredns() {
  local out="$CACHE/coredns-$COREDNS_VERSION/bin"
  [ -x "$out/coredns" ] && return 0
  log "coredns $COREDNS_VERSION"
  (
    wrap_module coredns github.com/coredns/coredns "$COREDNS_VERSION"
    quiet go get "github.com/coredns/coredns@$COREDNS_VERSION"
    mkdir -p "$out"
    quiet go build -trimpath -ldflags "-s -w" -o "$out/coredns" github.com/coredns/coredns
  )
}

build_pause() {
  local out="$CACHE/pause-$K8S_VERSION/bin"
  [ -x "$out/pause" ] && return 0
  log "pause (gcc -static from k8s.io/kubernetes@$K8S_VERSION)"
  local pause_c="$GOMODCACHE/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  [ -f "$pause_c" ] || (cd "$CACHE/go" && quiet go mod download "k8s.io/kubernetes@$K8S_VERSION")
  mkdir -p "$out"
  gcc -Os -static -DVERSION="\"3.10\"" -o "$out/pause" "$pause_c"
  strip "$out/pause"
}

build_kind() {
  local out="$CACHE/kind-$KIND_VERSION/bin"
  [ -x "$out/kind" ] && return 0
  log "kind $KIND_VERSION"
  mkdir -p "$out"
  GOBIN="$out" quiet go install "sigs.k8s.io/kind@$KIND_VERSION"
}

build_prometheus() {
  local out="$CACHE/prometheus-$PROMETHEUS_VERSION/bin"
  [ -x "$out/prometheus" ] && [ -x "$out/promtool" ] && return 0
  log "prometheus $PROMETHEUS_VERSION (module $PROMETHEUS_MODULE_VERSION)"
  mkdir -p "$out"
  # The web UI's assets are built with npm (tag builtinassets): left out, the
  # HTTP API, /metrics and scraping are all there.
  GOBIN="$out" quiet go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
}

case "$what" in
  apiserver) build_kubernetes; build_etcd ;;
  kind) build_kind ;;
  prometheus) build_prometheus ;;
  all) build_kubernetes; build_etcd; build_coredns; build_pause; build_kind; build_prometheus ;;
  *) echo "usage: $0 [all|apiserver|kind|prometheus]" >&2; exit 2 ;;
esac
