#!/usr/bin/env bash
# The third-party service images that the kind end-to-end test and the
# operator's defaults name, built here by the harness's Docker engine from
# Debian 12 packages and Apache Kafka's Maven Central jars (no registry can
# be reached). Each is laid out and configured like the official image, under
# the tag users would pull, so manifests stay unchanged:
#
#   scripts/harness/service-images.sh [mosquitto|influxdb|kafka|prometheus|all]...
#
# An image is built only when its tag is missing or its label millrace.inputs
# differs from the hash of what it is built from (Dockerfile, its directory of
# scripts and configs, the versions below, the base image's id, and for Kafka
# the jars); MILLRACE_NO_CACHE=1 builds without BuildKit's layer cache.
# Needs DOCKER_HOST (eval "$(scripts/harness/dockerd.sh env)") and the base
# image (scripts/harness/images.sh base); the Debian docker client
# (/usr/bin/docker) does the BuildKit builds.
#
# What each image stands in for, and every difference from the official one:
#
# eclipse-mosquitto:2.0 (images/mosquitto.Dockerfile): the operator's default
#   managed broker (operator/src/build/mosquitto.rs). As the official image:
#   user/group mosquitto 1883:1883; /mosquitto/{config,data,log} owned by it
#   (data and log are volumes); /mosquitto/config/mosquitto.conf is the
#   upstream example file (all commented out: local-only mode);
#   /mosquitto-no-auth.conf; /docker-entrypoint.sh chowns /mosquitto when run
#   as root, and mosquitto then drops to its user; CMD /usr/sbin/mosquitto -c
#   /mosquitto/config/mosquitto.conf; EXPOSE 1883; mosquitto_passwd,
#   mosquitto_ctrl, mosquitto_pub/sub/rr; the dynamic-security plugin at
#   /usr/lib/mosquitto_dynamic_security.so. Differences: Mosquitto 2.0.11
#   (Debian's 2.0.11-1.2+deb12u2, with Debian's build options and security
#   patches) where the official 2.0 tag is the newest 2.0.x; Debian 12 slim
#   (glibc, bash, apt) instead of Alpine, 117 MB instead of about 10 MB; the
#   plugin path is a symlink to Debian's multiarch directory; Debian's unused
#   /etc/mosquitto, /var/lib/mosquitto and /var/log/mosquitto are present.
#
# influxdb:1.6 (images/influxdb.Dockerfile): stands in for influxdb:1.8
#   (scripts/kind/influxdb.yaml). As the official 1.x image: influxd and
#   influx in /usr/bin; the official minimal /etc/influxdb/influxdb.conf
#   (meta, data and wal under /var/lib/influxdb, a volume); EXPOSE 8086; runs
#   as root; /entrypoint.sh (flags alone mean influxd FLAGS) and
#   /init-influxdb.sh: on the first start (no meta directory), with
#   INFLUXDB_DB, or INFLUXDB_ADMIN_USER and HTTP auth on, or files in
#   /docker-entrypoint-initdb.d, it runs influxd on 127.0.0.1:8086 alone and
#   creates the admin (INFLUXDB_ADMIN_USER/_PASSWORD), the database, and
#   INFLUXDB_USER (ALL), INFLUXDB_WRITE_USER (WRITE) and INFLUXDB_READ_USER
#   (READ) on it, printing generated passwords, runs the initdb.d *.sh and
#   *.iql files, and stops it; every INFLUXDB_<SECTION>_<KEY> variable is a
#   config override read by influxd itself. Differences: InfluxDB
#   1.6.7~rc0 (Debian's only 1.x) instead of 1.8.10, hence the tag 1.6: no
#   Flux, no /api/v2 compatibility endpoints and none of the 1.7/1.8 fixes;
#   Debian's package has no influx_inspect, influx_stress or influx_tsm; the
#   init script is Millrace's own with the official one's variables and
#   behaviour (database names are quoted in CREATE DATABASE); Debian 12
#   slim base without curl.
#
# apache/kafka:4.4.0 (images/kafka.Dockerfile and images/kafka/): the kind
#   test's broker (scripts/kind/kafka.yaml). As the official image:
#   /opt/kafka/{bin,config,libs}; user appuser 1000:1000; CMD
#   /etc/kafka/docker/run, which exports NAME=VALUE arguments, defaults
#   CLUSTER_ID to the official 5L6g3nShT-eMCtK--X86sw, refuses advertised
#   listeners on a controller-only node, derives KAFKA_LISTENERS from
#   KAFKA_ADVERTISED_LISTENERS, resolves the KAFKA_SSL_* secrets in
#   /etc/kafka/secrets, honours KAFKA_JMX_PORT/KAFKA_JMX_HOSTNAME, copies
#   /mnt/shared/config into /opt/kafka/config, and then runs Kafka's own
#   kafka.docker.KafkaDockerWrapper (the class the official image runs:
#   KAFKA_FOO_BAR -> foo.bar, KAFKA_LOG4J_* levels, storage formatted with
#   CLUSTER_ID unless it already is) and kafka-server-start.sh (KAFKA_HEAP_OPTS,
#   KAFKA_OPTS, KAFKA_JVM_PERFORMANCE_OPTS honoured); volumes
#   /var/lib/kafka/data, /etc/kafka/secrets, /mnt/shared/config; EXPOSE 9092.
#   Differences: the jars are kafka-fetch.sh's 92 Maven Central jars (broker,
#   storage, tools and their dependencies, connect-runtime included), not the
#   release tarball's libs/: kafka-streams, kafka-shell, connect-file,
#   connect-mirror and trogdor are absent, and so are their scripts
#   (kafka-metadata-shell.sh, connect-*.sh, trogdor.sh,
#   kafka-streams-application-reset.sh); bin/ holds Millrace's minimal
#   kafka-run-class.sh, kafka-server-start.sh and kafka-server-stop.sh plus
#   one-line kafka-*.sh tool scripts (images/kafka/tools.list), not
#   upstream's scripts; config/ holds only server.properties, log4j2.yaml
#   and tools-log4j2.yaml (no producer/consumer/connect properties), and
#   the broker logs to stdout only (upstream also writes server.log and
#   friends under /opt/kafka/logs; the GC log is written there as upstream);
#   Debian's OpenJDK 17 instead of Temurin 21, on Debian 12 slim instead of
#   Alpine; no class-data-sharing archives (the official image ships
#   kafka.jsa and storage.jsa), so the JVM starts slower (broker ready in
#   about 15 s on 2 busy cores).
#
# prom/prometheus:$PROMETHEUS_VERSION (images/prometheus.Dockerfile): Prometheus
#   built here from its Go module (scripts/harness/k8s-build.sh prometheus;
#   Debian's 2.42 has no Kubernetes service discovery); as the official image:
#   /bin/prometheus and /bin/promtool; /etc/prometheus/prometheus.yml scraping
#   Prometheus itself; /etc/prometheus and /prometheus owned by nobody (65534);
#   USER nobody; WORKDIR and VOLUME /prometheus; EXPOSE 9090; ENTRYPOINT
#   /bin/prometheus and the official CMD. Differences: only Kubernetes service
#   discovery is compiled in (build tags remove_all_sd,enable_kubernetes_sd;
#   static_configs work as always); no web UI (its assets are built with npm;
#   the HTTP API, /metrics and /-/ready are there); Debian 12 slim instead of
#   busybox; no LICENSE or NOTICE files.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/harness/versions.sh
source "$HERE/versions.sh"
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
IMAGES="$HERE/images"
DEBIAN_IMAGE=localhost/debian:bookworm-slim

# The versions each image must carry (checked inside its build).
MOSQUITTO_SERIES=2.0
INFLUXDB_SERIES=1.6
PROMETHEUS_BIN="$CACHE/prometheus-$PROMETHEUS_VERSION/bin"
KAFKA_LIB="$CACHE/kafka-$KAFKA_VERSION/lib"

log() { printf '[service-images] %s\n' "$*" >&2; }
die() { printf 'service-images.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { echo "usage: scripts/harness/service-images.sh [mosquitto|influxdb|kafka|prometheus|all]..." >&2; exit 2; }

# shellcheck source=scripts/harness/image-inputs.sh
source "$HERE/image-inputs.sh"

# build NAME TAG BUILD-ARG... : images/NAME.Dockerfile with a context holding
# images/NAME/ (and, for kafka, libs/ with the jars).
build() {
  local name=$1 tag=$2 hash ctx start
  shift 2
  local dockerfile="$IMAGES/$name.Dockerfile" dir="$IMAGES/$name"
  local extra=()
  [ "$name" = kafka ] && extra=(<(cd "$KAFKA_LIB" && sha256sum -- *.jar))
  [ "$name" = prometheus ] && extra=(<(sha256sum "$PROMETHEUS_BIN/prometheus" "$PROMETHEUS_BIN/promtool"))
  hash=$(inputs_hash "$dockerfile" <(cd "$dir" && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2) \
    <(printf '%s\n' "$@") <(docker image inspect -f '{{ .Id }}' "$DEBIAN_IMAGE") "${extra[@]}")
  if current "$tag" "$hash"; then
    log "$tag is current"
    return 0
  fi
  ctx=$(mktemp -d /var/tmp/millrace-service.XXXXXX)
  cp -r "$dir" "$ctx/$name"
  if [ "$name" = prometheus ]; then
    mkdir "$ctx/bin"
    cp "$PROMETHEUS_BIN/prometheus" "$PROMETHEUS_BIN/promtool" "$ctx/bin/"
  fi
  if [ "$name" = kafka ]; then
    mkdir "$ctx/libs"
    cp -l "$KAFKA_LIB"/*.jar "$ctx/libs/" 2>/dev/null || cp "$KAFKA_LIB"/*.jar "$ctx/libs/"
  fi
  local args=(--build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE") a
  for a in "$@"; do args+=(--build-arg "$a"); done
  log "building $tag ($name.Dockerfile)"
  start=$(date +%s)
  if ! dbuild -f "$dockerfile" "${args[@]}" --label "millrace.inputs=$hash" -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
    tail -n 30 "$ctx.log" >&2
    rm -rf "$ctx"
    die "building $tag failed (log $ctx.log)"
  fi
  log "built $tag in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{ .Size }}' "$tag" | awk '{ printf "%d MB", $1 / 1000000 }'))"
  rm -rf "$ctx" "$ctx.log"
}

mosquitto() { build mosquitto eclipse-mosquitto:2.0 "MOSQUITTO_SERIES=$MOSQUITTO_SERIES"; }
influxdb() { build influxdb influxdb:1.6 "INFLUXDB_SERIES=$INFLUXDB_SERIES"; }
prometheus() {
  [ -x "$PROMETHEUS_BIN/prometheus" ] || die "$PROMETHEUS_BIN/prometheus not built: bash scripts/harness/k8s-build.sh prometheus"
  build prometheus "prom/prometheus:$PROMETHEUS_VERSION"
}
kafka() {
  [ -e "$CACHE/kafka-$KAFKA_VERSION/lib.complete" ] && [ -d "$KAFKA_LIB" ] \
    || die "the Apache Kafka $KAFKA_VERSION jars are missing from $KAFKA_LIB: run bash scripts/harness/kafka-fetch.sh first"
  build kafka "apache/kafka:$KAFKA_VERSION" "KAFKA_VERSION=$KAFKA_VERSION"
}

main() {
  local target
  [ $# -gt 0 ] || set -- all
  for target in "$@"; do
    case "$target" in
      mosquitto|influxdb|kafka|prometheus|all) ;;
      -h|--help) usage ;;
      *) echo "service-images.sh: unknown target $target" >&2; usage ;;
    esac
  done
  docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1 \
    || die "$DEBIAN_IMAGE not found: scripts/harness/images.sh base"
  for target in "$@"; do
    case "$target" in
      all) mosquitto; influxdb; kafka; prometheus ;;
      *) "$target" ;;
    esac
  done
}
main "$@"
