#!/bin/bash
# The official influxdb 1.x image's contract: flags alone mean `influxd
# FLAGS`; for influxd, initialise users and databases on the first start
# (/init-influxdb.sh), then run the command.
set -e
if [ "${1:0:1}" = '-' ]; then
  set -- influxd "$@"
fi
if [ "$1" = influxd ]; then
  /init-influxdb.sh "${@:2}"
fi
exec "$@"
