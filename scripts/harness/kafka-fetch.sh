#!/usr/bin/env bash
# Fetches Apache Kafka $KAFKA_VERSION (broker, storage tool, admin tools) and a
# log4j 2 binding from Maven Central into
#   ${MILLRACE_CACHE:-~/.cache/millrace}/kafka-$KAFKA_VERSION/lib
# with the machine's Maven. testkit's KafkaBroker runs `java -cp 'lib/*'`.
# Idempotent: a stamp file marks a complete fetch. Maven's own output goes to
# kafka-$KAFKA_VERSION/mvn-fetch.log and is shown only when the fetch fails.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/harness/versions.sh
source "$HERE/versions.sh"
LOG4J_VERSION=2.25.5 # the version kafka-server $KAFKA_VERSION itself declares

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
DEST="$CACHE/kafka-$KAFKA_VERSION"
STAMP="$DEST/lib.complete"
log() { printf '[kafka-fetch] %s\n' "$*" >&2; }

if [ -e "$STAMP" ] && [ -d "$DEST/lib" ]; then
  exit 0
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "kafka-fetch: '$tool' not found on PATH; Apache Kafka needs Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven, or run scripts/deps.sh)" >&2
    exit 1
  }
done

log "Apache Kafka $KAFKA_VERSION jars from Maven Central -> $DEST/lib"
mkdir -p "$DEST"
work=$(mktemp -d "$DEST/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
dep() {
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$1" "$2" "$3"
}
{
  cat <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.millrace</groupId>
  <artifactId>kafka-harness</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
POM
  dep org.apache.kafka kafka_2.13 "$KAFKA_VERSION"
  dep org.apache.kafka kafka-server "$KAFKA_VERSION"
  dep org.apache.kafka kafka-storage "$KAFKA_VERSION"
  dep org.apache.kafka kafka-tools "$KAFKA_VERSION"
  # slf4j-api 1.7 wins mediation, so the 1.7 binding (not log4j-slf4j2-impl).
  dep org.apache.logging.log4j log4j-slf4j-impl "$LOG4J_VERSION"
  dep org.apache.logging.log4j log4j-core "$LOG4J_VERSION"
  cat <<POM
  </dependencies>
</project>
POM
} >"$work/pom.xml"

FETCH_LOG="$DEST/mvn-fetch.log"
if ! mvn -B -q -Dstyle.color=never -f "$work/pom.xml" \
    "-Dmaven.repo.local=$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime \
    "-DoutputDirectory=$work/lib" >"$FETCH_LOG" 2>&1; then
  cat "$FETCH_LOG" >&2
  echo "kafka-fetch: mvn dependency:copy-dependencies failed (log: $FETCH_LOG)" >&2
  exit 1
fi
ls "$work/lib"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || {
  echo "kafka-fetch: kafka_2.13-$KAFKA_VERSION.jar missing after the fetch" >&2; exit 1; }
rm -rf "$DEST/lib"
mv "$work/lib" "$DEST/lib"
touch "$STAMP"
log "done: $(ls "$DEST/lib" | wc -l) jars, $(du -sh "$DEST/lib" | cut -f1)"
