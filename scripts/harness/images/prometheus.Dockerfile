# Stands in for prom/prometheus:v2.42.0, built from Debian 12's prometheus
# 2.42.0+ds instead of the official busybox image. Same layout: /bin/prometheus
# and /bin/promtool, the default /etc/prometheus/prometheus.yml (Prometheus
# scrapes itself at localhost:9090 every 15 s), console directories under
# /usr/share/prometheus linked from /etc/prometheus, /prometheus (the TSDB)
# and /etc/prometheus owned by nobody (65534), USER nobody, WORKDIR and VOLUME
# /prometheus, EXPOSE 9090, the official ENTRYPOINT and CMD.
# scripts/harness/service-images.sh lists every difference.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE} AS package
ARG PROMETHEUS_VERSION=2.42.0
# Debian's web UI (the classic one) links its JavaScript libraries from
# /usr/share/javascript; only the files its pages load are kept (the whole of
# libjs-moment-timezone alone is 218 MB).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && version=$(dpkg-query -W -f '${Version}' prometheus) \
 && case "$version" in "$PROMETHEUS_VERSION"+*|"$PROMETHEUS_VERSION"-*) ;; *) echo "prometheus $version is not $PROMETHEUS_VERSION" >&2; exit 1 ;; esac \
 && mkdir -p /out/usr/bin /out/usr/share/prometheus/console_libraries /out/usr/share/prometheus/consoles /out/etc/prometheus /out/prometheus \
 && cp /usr/bin/prometheus /usr/bin/promtool /out/usr/bin/ \
 && cp -a /etc/prometheus/console_libraries/. /out/usr/share/prometheus/console_libraries/ \
 && cp -a /etc/prometheus/consoles/. /out/usr/share/prometheus/consoles/ \
 && ln -s /usr/share/prometheus/console_libraries /usr/share/prometheus/consoles /out/etc/prometheus/ \
 && cp -rL /usr/share/prometheus/web /out/usr/share/prometheus/ \
 && cd /out/usr/share/prometheus/web/static/moment-timezone && find . -mindepth 1 ! -name moment-timezone-with-data.min.js -exec rm -rf {} + \
 && cd / && grep -rhoE 'static/[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+\.(js|css)' /out/usr/share/prometheus/web/templates \
      | sort -u | while read -r f; do test -s "/out/usr/share/prometheus/web/$f" || { echo "missing $f" >&2; exit 1; }; done

FROM ${DEBIAN_IMAGE}
# /bin is /usr/bin in Debian 12 (merged /usr).
COPY --from=package /out/ /
COPY prometheus/prometheus.yml /etc/prometheus/prometheus.yml
RUN chown -R 65534:65534 /etc/prometheus /prometheus
USER nobody
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", \
     "--storage.tsdb.path=/prometheus", \
     "--web.console.libraries=/usr/share/prometheus/console_libraries", \
     "--web.console.templates=/usr/share/prometheus/consoles"]
