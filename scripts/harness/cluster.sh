#!/usr/bin/env bash
# A kind cluster for the tests, created the way a user creates one:
# `kind create cluster --config kind-config.yaml`.
#
#   scripts/harness/cluster.sh up [NAME]          create (an old one of that name is deleted first)
#   scripts/harness/cluster.sh down [NAME]        delete
#   scripts/harness/cluster.sh kubeconfig [NAME]  print the kubeconfig's path
#   scripts/harness/cluster.sh mode               print local or kind (below)
#
# Two ways, chosen by MILLRACE_KIND_NODE (default: local when the harness's
# own engine is in use, that is DOCKER_HOST is scripts/harness/dockerd.sh's):
#   local   the node image built here (scripts/harness/images.sh node), with
#           kubeadm told to use the local component images (localhost/k8s)
#           and our etcd and CoreDNS tags, and kind's CNI off (the node image
#           has a bridge CNI): no registry is ever asked.
#   kind    kind's own node image for kind's version, from its registry, and
#           kind-config.yaml unchanged (a user's machine with Docker and kind).
# The kubeconfig is written to its own file, never to ~/.kube/config.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/harness/versions.sh
source "$HERE/versions.sh"
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
STATE="${MILLRACE_KIND_STATE:-$CACHE/kind-state}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

NAME=${2:-millrace-e2e}
KUBECONFIG_FILE="$STATE/$NAME.kubeconfig"
HARNESS_SOCK="unix://${MILLRACE_DOCKER_RUN:-/run/millrace-docker}/docker.sock"
MODE=${MILLRACE_KIND_NODE:-}
if [ -z "$MODE" ]; then
  if [ "${DOCKER_HOST:-}" = "$HARNESS_SOCK" ]; then MODE=local; else MODE=kind; fi
fi

# kind-config.yaml, plus what the local node image needs.
config() {
  cat "$ROOT/kind-config.yaml"
  [ "$MODE" = local ] || return 0
  if grep -qE '^(networking|kubeadmConfigPatches):' "$ROOT/kind-config.yaml"; then
    die "kind-config.yaml has its own networking or kubeadmConfigPatches: merge the local node's settings (cluster.sh config()) into it"
  fi
  cat <<YAML
# Added by scripts/harness/cluster.sh for the node image built here.
networking:
  disableDefaultCNI: true
kubeadmConfigPatches:
  - |
    kind: ClusterConfiguration
    imageRepository: localhost/k8s
    etcd:
      local:
        imageTag: $ETCD_VERSION
    dns:
      imageTag: $COREDNS_VERSION
YAML
}

up() {
  command -v kind >/dev/null || die "kind not found (scripts/deps.sh builds it)"
  mkdir -p "$STATE"
  if kind get clusters 2>/dev/null | grep -qx "$NAME"; then
    log "deleting the existing cluster $NAME"
    kind delete cluster --name "$NAME" >/dev/null
  fi
  local image_args=()
  if [ "$MODE" = local ]; then
    docker image inspect "localhost/kind-node:$K8S_VERSION" >/dev/null 2>&1 ||
      die "localhost/kind-node:$K8S_VERSION not built: bash scripts/harness/images.sh node"
    image_args=(--image "localhost/kind-node:$K8S_VERSION")
  fi
  config >"$STATE/$NAME.kind-config.yaml"
  log "creating kind cluster $NAME ($MODE node image)"
  local start=$SECONDS
  kind create cluster --name "$NAME" "${image_args[@]}" --config "$STATE/$NAME.kind-config.yaml" \
    --kubeconfig "$KUBECONFIG_FILE" --wait 3m
  # --wait covers the node only: Pods need the default ServiceAccount, and
  # anything using DNS needs CoreDNS.
  local k=(kubectl --kubeconfig "$KUBECONFIG_FILE")
  local deadline=$((SECONDS + 120))
  until "${k[@]}" -n default get serviceaccount default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "no ServiceAccount default after 120 s"
    sleep 1
  done
  "${k[@]}" -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
  log "cluster $NAME ready in $((SECONDS - start)) s (kubeconfig $KUBECONFIG_FILE)"
}

down() {
  command -v kind >/dev/null || return 0
  kind delete cluster --name "$NAME" >/dev/null 2>&1 || true
  rm -f "$KUBECONFIG_FILE" "$STATE/$NAME.kind-config.yaml"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  mode) echo "$MODE" ;;
  *) echo "usage: $0 up|down|kubeconfig|mode [NAME]" >&2; exit 2 ;;
esac
