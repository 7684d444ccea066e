#!/usr/bin/env bash
# Every image the harness needs, built here by the harness's Docker engine
# (scripts/harness/dockerd.sh up) without any registry. Each is rebuilt only
# when its tag is missing from the engine's data-root (~/.cache/millrace/docker)
# or what it is built from changed (its label millrace.inputs, a hash), and
# every tag carries the versions it was built from.
#
#   scripts/harness/images.sh [base|node|product|services|all]...
#
#   base      localhost/debian:bookworm-slim, debootstrap'ed from the host's
#             apt mirror (stands in for debian:bookworm-slim)
#   node      localhost/kind-base:bookworm-<kind>, the component images
#             localhost/k8s/<name>:<tag> and localhost/kind-node:<k8s>
#   product   stand-ins for the Dockerfiles' base images (a Rust builder with
#             this machine's toolchain, a distroless-like runtime), then
#             millrace/worker and millrace/operator from docker/*.Dockerfile
#   services  eclipse-mosquitto:2.0, influxdb:1.6, apache/kafka:4.4.0 and
#             prom/prometheus:v3.16.0 under the official names, from Debian's
#             packages and the Maven jars (scripts/harness/service-images.sh
#             says how each differs from the official image)
#
# Needs DOCKER_HOST (eval "$(scripts/harness/dockerd.sh env)"); the Debian
# docker client (/usr/bin/docker) does the BuildKit builds.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/harness/versions.sh
source "$HERE/versions.sh"
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
IMAGES="$HERE/images"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf 'images.sh: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/harness/image-inputs.sh
source "$HERE/image-inputs.sh"
have() { docker image inspect "$1" >/dev/null 2>&1; }

# The host's Debian mirror (deb822 or one-line sources).
mirror() {
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' | grep -v security | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{ print $2 }' | grep -v security | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# --- base: debian:bookworm-slim ------------------------------------------------------
DEBIAN_IMAGE=localhost/debian:bookworm-slim
base() {
  have "$DEBIAN_IMAGE" && return 0
  command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap (scripts/deps.sh does)"
  local m root
  m=$(mirror)
  root=$(mktemp -d /var/tmp/millrace-rootfs.XXXXXX)
  log "debootstrap bookworm (minbase) from $m"
  debootstrap --variant=minbase bookworm "$root" "$m" >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; die "debootstrap failed (log $root.log)"; }
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $m
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${m%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # As the official slim image: no apt caches, no docs, no man pages.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  log "importing $DEBIAN_IMAGE"
  tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$root" "$root.log"
}

# --- node: the kind node image ----------------------------------------------------------
KIND_FILES="$CACHE/go/mod/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
KIND_BASE_IMAGE="localhost/kind-base:bookworm-$KIND_VERSION"
NODE_IMAGE="localhost/kind-node:$K8S_VERSION"
K8S_BIN="$CACHE/k8s-$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/bin"
COREDNS_BIN="$CACHE/coredns-$COREDNS_VERSION/bin"
PAUSE_BIN="$CACHE/pause-$K8S_VERSION/bin"

# The kubeadm ClusterConfiguration the node image is made for: our own etcd
# and CoreDNS builds under their real versions. scripts/harness/cluster.sh
# gives kind the same values.
kubeadm_images_config() {
  cat <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
imageRepository: localhost/k8s
etcd:
  local:
    imageTag: $ETCD_VERSION
dns:
  imageTag: $COREDNS_VERSION
YAML
}

kind_base() {
  [ -d "$KIND_FILES" ] || die "kind's sources ($KIND_FILES) not found: bash scripts/harness/k8s-build.sh kind"
  local hash ctx
  hash=$(inputs_hash "$IMAGES/kind-base.Dockerfile" <(echo "$KIND_VERSION") <(find "$KIND_FILES" -type f -exec sha256sum {} + | sort) \
    <(docker image inspect -f '{{ .Id }}' "$DEBIAN_IMAGE"))
  current "$KIND_BASE_IMAGE" "$hash" && return 0
  ctx=$(mktemp -d)
  cp -r "$KIND_FILES/." "$ctx/"
  chmod -R u+w "$ctx"
  # kind's containerd config, with the one change this host needs: containerd
  # must not lower oom_score_adj (no CAP_SYS_RESOURCE; kind sets it only for
  # rootless). The sandbox image is set in the node image.
  sed 's/^\(\s*restrict_oom_score_adj\) = false/\1 = true/' "$KIND_FILES/etc/containerd/config.toml" >"$ctx/containerd.toml"
  grep -q 'restrict_oom_score_adj = true' "$ctx/containerd.toml" || die "kind's containerd config has no restrict_oom_score_adj line to change"
  rm "$ctx/etc/containerd/config.toml"
  log "building $KIND_BASE_IMAGE"
  dbuild -f "$IMAGES/kind-base.Dockerfile" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --label "millrace.inputs=$hash" -t "$KIND_BASE_IMAGE" "$ctx"
  rm -rf "$ctx"
}

# The control-plane images kubeadm will ask for, each built from our binary.
component_images() {
  local ref name bin dir hash dockerfile
  for ref in $("$K8S_BIN/kubeadm" config images list --config <(kubeadm_images_config)); do
    name=${ref#localhost/k8s/}; name=${name%%:*}
    case "$name" in
      kube-*) bin="$K8S_BIN/$name" ;;
      etcd) bin="$ETCD_BIN/etcd" ;;
      coredns) bin="$COREDNS_BIN/coredns" ;;
      pause) bin="$PAUSE_BIN/pause" ;;
      *) die "kubeadm lists an image this harness cannot build: $ref" ;;
    esac
    [ -x "$bin" ] || die "$bin not found: bash scripts/harness/k8s-build.sh"
    dockerfile="$IMAGES/component.Dockerfile"
    [ "$name" = kube-proxy ] && dockerfile="$IMAGES/kube-proxy.Dockerfile"
    hash=$(inputs_hash "$dockerfile" "$bin")
    COMPONENT_REFS+=("$ref")
    current "$ref" "$hash" && continue
    dir=$(mktemp -d)
    cp "$bin" "$dir/"
    sed "s|@BINARY@|$(basename "$bin")|g" "$dockerfile" >"$dir/Dockerfile"
    log "building $ref"
    dbuild -q --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" --label "millrace.inputs=$hash" -t "$ref" "$dir" >/dev/null
    rm -rf "$dir"
  done
}

node() {
  base
  kind_base
  COMPONENT_REFS=()
  component_images
  local hash ctx pause
  hash=$(inputs_hash "$IMAGES/kind-node.Dockerfile" "$IMAGES/10-bridge.conflist" \
    <(docker image inspect -f '{{ .Id }}' "$KIND_BASE_IMAGE" "${COMPONENT_REFS[@]}") \
    "$K8S_BIN/kubeadm" "$K8S_BIN/kubelet" "$K8S_BIN/kubectl")
  current "$NODE_IMAGE" "$hash" && { log "$NODE_IMAGE is current"; return 0; }
  pause=$(printf '%s\n' "${COMPONENT_REFS[@]}" | grep '/pause:')
  ctx=$(mktemp -d /var/tmp/millrace-node.XXXXXX)
  mkdir "$ctx/bin"
  cp "$K8S_BIN/kubeadm" "$K8S_BIN/kubelet" "$K8S_BIN/kubectl" "$ctx/bin/"
  cp "$IMAGES/10-bridge.conflist" "$ctx/"
  echo "$K8S_VERSION" >"$ctx/version"
  docker save "${COMPONENT_REFS[@]}" -o "$ctx/images.tar"
  log "building $NODE_IMAGE"
  dbuild -f "$IMAGES/kind-node.Dockerfile" --build-arg "KIND_BASE=$KIND_BASE_IMAGE" --build-arg "PAUSE_IMAGE=$pause" \
    --label "millrace.inputs=$hash" -t "$NODE_IMAGE" "$ctx"
  rm -rf "$ctx"
}

# --- product: millrace/worker and millrace/operator ---------------------------------------
RUST_TOOLCHAIN=$(rustc --print sysroot 2>/dev/null || true)
RUST_VERSION=$(rustc --version 2>/dev/null | awk '{ print $2 }')
RUST_IMAGE="localhost/rust:$RUST_VERSION-bookworm"
RUNTIME_IMAGE="localhost/distroless-cc:debian12-nonroot"
WORKSPACE_VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n1)

rust_builder() {
  [ -n "$RUST_VERSION" ] && [ -d "$RUST_TOOLCHAIN/bin" ] || die "rustc not found: install Rust (rustup) first"
  local hash ctx
  hash=$(inputs_hash "$IMAGES/rust-builder.Dockerfile" <(echo "$RUST_VERSION") <(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null))
  current "$RUST_IMAGE" "$hash" && return 0
  ctx=$(mktemp -d /var/tmp/millrace-rust.XXXXXX)
  mkdir "$ctx/toolchain" "$ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  cp -a "$RUST_TOOLCHAIN/bin" "$RUST_TOOLCHAIN/lib" "$RUST_TOOLCHAIN/libexec" "$ctx/toolchain/"
  rm -rf "$ctx/toolchain/lib/rustlib/"*/share "$ctx/toolchain/lib/rustlib/src"
  log "building $RUST_IMAGE from this machine's toolchain ($RUST_TOOLCHAIN)"
  dbuild -f "$IMAGES/rust-builder.Dockerfile" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --label "millrace.inputs=$hash" -t "$RUST_IMAGE" "$ctx"
  rm -rf "$ctx"
}

runtime_base() {
  local hash
  hash=$(inputs_hash "$IMAGES/distroless-cc.Dockerfile")
  current "$RUNTIME_IMAGE" "$hash" && return 0
  log "building $RUNTIME_IMAGE"
  dbuild -f "$IMAGES/distroless-cc.Dockerfile" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --label "millrace.inputs=$hash" -t "$RUNTIME_IMAGE" "$IMAGES"
}

# docker/*.Dockerfile unchanged, with the stand-ins as build arguments. The
# cargo registry and target directory are BuildKit cache mounts in the
# engine's data-root: after the first build only changed crates compile.
product() {
  base
  rust_builder
  runtime_base
  local image
  for image in worker operator; do
    log "building millrace/$image:$WORKSPACE_VERSION (docker/$image.Dockerfile)"
    dbuild -f "$ROOT/docker/$image.Dockerfile" --build-arg "VERSION=$WORKSPACE_VERSION" \
      --build-arg "RUST_IMAGE=$RUST_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
      -t "millrace/$image:$WORKSPACE_VERSION" "$ROOT"
  done
}

main() {
  local target
  [ $# -gt 0 ] || set -- all
  for target in "$@"; do
    case "$target" in
      base) base ;;
      node) node ;;
      product) product ;;
      services) bash "$HERE/service-images.sh" ;;
      all) base; node; product; bash "$HERE/service-images.sh" ;;
      *) die "unknown target $target (base|node|product|services|all)" ;;
    esac
  done
  # Images a rebuild left without a tag, and build cache beyond 10 GB (least
  # recently used first: the cargo caches of the last builds stay).
  docker image prune -f >/dev/null
  docker builder prune -f --keep-storage 10GB >/dev/null 2>&1 || true
}
main "$@"
