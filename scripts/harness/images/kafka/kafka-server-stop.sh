#!/usr/bin/env bash
# Millrace's stand-in for Apache Kafka's bin/kafka-server-stop.sh: SIGTERM to
# every broker JVM (kafka.Kafka) of this container, found through /proc (the
# image has no procps).
signal=${SIGNAL:-TERM}
found=
for cmdline in /proc/[0-9]*/cmdline; do
  pid=${cmdline#/proc/}; pid=${pid%/cmdline}
  if tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -q ' kafka\.Kafka '; then
    kill -s "$signal" "$pid" && found=1
  fi
done
[ -n "$found" ] || { echo "No kafka server to stop"; exit 1; }
