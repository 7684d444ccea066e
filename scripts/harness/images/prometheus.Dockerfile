# Stands in for prom/prometheus (v3), with Prometheus built here from its Go
# module (scripts/harness/k8s-build.sh prometheus): Debian's 2.42 package has
# no Kubernetes service discovery. Same layout as the official image:
# /bin/prometheus and /bin/promtool, the default /etc/prometheus/prometheus.yml
# (Prometheus scrapes itself), /prometheus (the TSDB) and /etc/prometheus owned
# by nobody (65534), USER nobody, WORKDIR and VOLUME /prometheus, EXPOSE 9090,
# the official ENTRYPOINT and CMD. scripts/harness/service-images.sh lists
# every difference. Build context: bin/ and prometheus/.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
COPY bin/prometheus bin/promtool /bin/
COPY prometheus/prometheus.yml /etc/prometheus/prometheus.yml
RUN mkdir -p /prometheus && chown -R 65534:65534 /etc/prometheus /prometheus \
 && /bin/prometheus --version
USER nobody
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
