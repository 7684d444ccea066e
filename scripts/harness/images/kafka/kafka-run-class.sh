#!/usr/bin/env bash
# Millrace's stand-in for Apache Kafka's bin/kafka-run-class.sh, which the
# Maven Central jars do not carry: runs a main class with every jar of
# /opt/kafka/libs on the classpath, honouring the same variables:
#   JAVA_HOME, CLASSPATH (prepended), KAFKA_HEAP_OPTS (default -Xmx256M),
#   KAFKA_JVM_PERFORMANCE_OPTS (default: G1, as upstream), KAFKA_OPTS,
#   KAFKA_LOG4J_OPTS (default: config/tools-log4j2.yaml), KAFKA_JMX_OPTS and
#   JMX_PORT, LOG_DIR (default /opt/kafka/logs), KAFKA_DEBUG (JDWP agent on
#   JAVA_DEBUG_PORT, default 5005).
# Options before the class: -daemon (background, output to LOG_DIR/NAME.out),
# -name NAME, -loggc (GC log to LOG_DIR/NAME-gc.log).
set -e
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi
base_dir=$(cd "$(dirname "$0")/.." && pwd)

daemon=
name=kafka
gc_log=
while [ $# -gt 0 ]; do
  case "$1" in
    -daemon) daemon=1; shift ;;
    -name) name=$2; shift 2 ;;
    -loggc) gc_log=1; shift ;;
    *) break ;;
  esac
done

CLASSPATH="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"
LOG_DIR=${LOG_DIR:-$base_dir/logs}
[ -d "$LOG_DIR" ] || mkdir -p "$LOG_DIR" 2>/dev/null || true

KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml}
KAFKA_LOG4J_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256M}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}
if [ -n "${JMX_PORT:-}" ]; then
  KAFKA_JMX_OPTS="${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false} -Dcom.sun.management.jmxremote.port=$JMX_PORT"
fi
if [ -n "${KAFKA_DEBUG:-}" ]; then
  KAFKA_OPTS="-agentlib:jdwp=transport=dt_socket,server=y,suspend=${DEBUG_SUSPEND_FLAG:-n},address=*:${JAVA_DEBUG_PORT:-5005} ${KAFKA_OPTS:-}"
fi
gc_opts=
if [ -n "$gc_log" ]; then
  gc_opts="-Xlog:gc*:file=$LOG_DIR/$name-gc.log:time,tags:filecount=10,filesize=100M"
fi

java=java
[ -n "${JAVA_HOME:-}" ] && java="$JAVA_HOME/bin/java"

# Word splitting of the option variables is intended, as upstream.
# shellcheck disable=SC2086
if [ -n "$daemon" ]; then
  nohup "$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $gc_opts ${KAFKA_JMX_OPTS:-} $KAFKA_LOG4J_OPTS \
    -cp "$CLASSPATH" ${KAFKA_OPTS:-} "$@" >"$LOG_DIR/$name.out" 2>&1 </dev/null &
else
  exec "$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $gc_opts ${KAFKA_JMX_OPTS:-} $KAFKA_LOG4J_OPTS \
    -cp "$CLASSPATH" ${KAFKA_OPTS:-} "$@"
fi
