# Sourced by images.sh and service-images.sh: how the harness builds an image
# and knows when it must build it again.
#
# An image is current when its tag exists and its label millrace.inputs equals
# the hash of what it is built from (Dockerfile, files, versions, base image):
# inputs_hash FILE... prints that hash; current TAG HASH tells. dbuild builds
# with BuildKit (the Dockerfiles' cache mounts), which the Debian 20.10 client
# has with DOCKER_BUILDKIT=1; a newer client without buildx would fall back to
# the legacy builder. MILLRACE_NO_CACHE=1 builds without the layer cache.
[ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set: eval \"\$(scripts/harness/dockerd.sh env)\" after scripts/harness/dockerd.sh up"
BUILD_CLIENT=${MILLRACE_DOCKER_BUILD_CLIENT:-/usr/bin/docker}
[ -x "$BUILD_CLIENT" ] || BUILD_CLIENT=docker
dbuild() { DOCKER_BUILDKIT=1 "$BUILD_CLIENT" build --progress=plain ${MILLRACE_NO_CACHE:+--no-cache} "$@"; }
inputs_hash() { cat "$@" | sha256sum | cut -c1-16; }
current() { # tag hash
  [ "$(docker image inspect -f '{{ index .Config.Labels "millrace.inputs" }}' "$1" 2>/dev/null)" = "$2" ]
}
