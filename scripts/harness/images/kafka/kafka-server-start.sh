#!/usr/bin/env bash
# Millrace's stand-in for Apache Kafka's bin/kafka-server-start.sh: the broker
# (kafka.Kafka) with config/log4j2.yaml and a 1 GiB heap unless
# KAFKA_LOG4J_OPTS / KAFKA_HEAP_OPTS say otherwise; -daemon runs it in the
# background.
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
  exit 1
fi
base_dir=$(dirname "$0")
export KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/../config/log4j2.yaml}
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}
extra=(-name kafkaServer -loggc)
if [ "$1" = -daemon ]; then
  extra=(-daemon "${extra[@]}")
  shift
fi
exec "$base_dir/kafka-run-class.sh" "${extra[@]}" kafka.Kafka "$@"
