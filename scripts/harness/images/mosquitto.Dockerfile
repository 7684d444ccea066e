# Stands in for eclipse-mosquitto:2.0 (the operator's default managed broker
# image, operator/src/build/mosquitto.rs), built from Debian 12's mosquitto
# 2.0.11 instead of the official Alpine build. Same contract: user and group
# mosquitto 1883:1883, /mosquitto/{config,data,log} owned by it, the upstream
# example mosquitto.conf (everything commented out: local-only mode) at
# /mosquitto/config/mosquitto.conf, /mosquitto-no-auth.conf, the clients and
# mosquitto_passwd/mosquitto_ctrl in /usr/bin, the dynamic-security plugin,
# /docker-entrypoint.sh (chowns /mosquitto when started as root, then execs
# the command), CMD /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf,
# EXPOSE 1883. scripts/harness/service-images.sh lists every difference.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG MOSQUITTO_SERIES=2.0
# The user first, so that the package's postinst finds it and keeps 1883.
RUN groupadd --system --gid 1883 mosquitto \
 && useradd --system --uid 1883 --gid 1883 --home-dir /var/empty --no-create-home --shell /usr/sbin/nologin mosquitto \
 && printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
 && version=$(dpkg-query -W -f '${Version}' mosquitto) \
 && case "$version" in "$MOSQUITTO_SERIES".*) ;; *) echo "mosquitto $version is not $MOSQUITTO_SERIES.x" >&2; exit 1 ;; esac \
 && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
 && install -m 644 /usr/share/doc/mosquitto/examples/mosquitto.conf /mosquitto/config/mosquitto.conf \
 && printf '# Config that listens on all interfaces and allows anonymous access.\nlistener 1883\nallow_anonymous true\n' >/mosquitto-no-auth.conf \
 && ln -s /usr/lib/*-linux-gnu/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so \
 && chown -R mosquitto:mosquitto /mosquitto \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /var/log/apt/* /var/log/dpkg.log \
 && rm /usr/sbin/policy-rc.d
COPY mosquitto/docker-entrypoint.sh /docker-entrypoint.sh
VOLUME ["/mosquitto/data", "/mosquitto/log"]
EXPOSE 1883
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
