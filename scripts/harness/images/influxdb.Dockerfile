# Stands in for influxdb:1.8 (scripts/kind/influxdb.yaml), tagged influxdb:1.6
# because Debian 12 has only InfluxDB 1.6.7~rc0 (packages influxdb and
# influxdb-client). Laid out like the official 1.x image: influxd and influx
# in /usr/bin, the official minimal /etc/influxdb/influxdb.conf (meta, data
# and wal under /var/lib/influxdb), VOLUME /var/lib/influxdb, EXPOSE 8086,
# /entrypoint.sh + /init-influxdb.sh (INFLUXDB_DB, INFLUXDB_ADMIN_*,
# INFLUXDB_USER*, INFLUXDB_WRITE_USER*, INFLUXDB_READ_USER*,
# /docker-entrypoint-initdb.d on the first start), CMD influxd, run as root;
# every other INFLUXDB_* variable is read by influxd itself as a config
# override. scripts/harness/service-images.sh lists every difference.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG INFLUXDB_SERIES=1.6
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends influxdb influxdb-client \
 && version=$(dpkg-query -W -f '${Version}' influxdb) \
 && case "$version" in "$INFLUXDB_SERIES".*) ;; *) echo "influxdb $version is not $INFLUXDB_SERIES.x" >&2; exit 1 ;; esac \
 && apt-get clean && rm -rf /var/lib/influxdb/* /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /var/log/apt/* /var/log/dpkg.log \
 && rm /usr/sbin/policy-rc.d
COPY influxdb/influxdb.conf /etc/influxdb/influxdb.conf
COPY influxdb/entrypoint.sh /entrypoint.sh
COPY influxdb/init-influxdb.sh /init-influxdb.sh
EXPOSE 8086
VOLUME /var/lib/influxdb
ENTRYPOINT ["/entrypoint.sh"]
CMD ["influxd"]
