# Stands in for apache/kafka:4.4.0 (scripts/kind/kafka.yaml), built from the
# Apache Kafka 4.4.0 jars of Maven Central (scripts/harness/kafka-fetch.sh)
# and Debian 12's openjdk-17-jre-headless instead of the release tarball on
# eclipse-temurin:21-jre-alpine. Same contract: /opt/kafka/{bin,config,libs},
# user appuser 1000:1000, CMD /etc/kafka/docker/run (KAFKA_* variables ->
# server.properties by Kafka's own kafka.docker.KafkaDockerWrapper, CLUSTER_ID,
# storage formatted on the first start), /var/lib/kafka/data,
# /etc/kafka/secrets and /mnt/shared/config volumes, EXPOSE 9092. The jars
# carry no shell scripts: bin/ holds Millrace's minimal kafka-run-class.sh,
# kafka-server-start.sh and kafka-server-stop.sh, and one-line tool scripts
# (kafka/tools.list). scripts/harness/service-images.sh lists every difference.
#
# Build context (made by service-images.sh): kafka/ (this directory's
# scripts and configs) and libs/ (the jars).
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG KAFKA_VERSION=4.4.0
# openjdk's postinst needs the man directory that the slim base lacks.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /var/log/apt/* /var/log/dpkg.log \
 && java -version
RUN groupadd --gid 1000 appuser \
 && useradd --uid 1000 --gid 1000 --home-dir /home/appuser --create-home --shell /bin/bash appuser \
 && mkdir -p /opt/kafka/bin /opt/kafka/config /opt/kafka/libs /opt/kafka/logs \
      /var/lib/kafka/data /etc/kafka/secrets /etc/kafka/docker /usr/logs /mnt/shared/config \
 && chown -R appuser:appuser /opt/kafka /usr/logs /mnt/shared/config \
 && chown -R appuser:root /var/lib/kafka /etc/kafka \
 && chmod -R ug+w /etc/kafka /var/lib/kafka
COPY --chown=appuser:appuser libs/ /opt/kafka/libs/
COPY --chown=appuser:appuser kafka/kafka-run-class.sh kafka/kafka-server-start.sh kafka/kafka-server-stop.sh /opt/kafka/bin/
COPY --chown=appuser:root kafka/server.properties kafka/log4j2.yaml kafka/tools-log4j2.yaml /etc/kafka/docker/
COPY --chown=appuser:appuser kafka/server.properties kafka/log4j2.yaml kafka/tools-log4j2.yaml /opt/kafka/config/
COPY --chown=appuser:root kafka/run /etc/kafka/docker/run
COPY --chown=appuser:appuser kafka/tools.list /opt/kafka/bin/.tools.list
USER appuser
RUN test -f "/opt/kafka/libs/kafka_2.13-$KAFKA_VERSION.jar" && test -f "/opt/kafka/libs/kafka-clients-$KAFKA_VERSION.jar" \
 && grep -vE '^(#|$)' /opt/kafka/bin/.tools.list | while read -r script class; do \
      printf '#!/usr/bin/env bash\nexec "$(dirname "$0")/kafka-run-class.sh" %s "$@"\n' "$class" >"/opt/kafka/bin/$script.sh"; \
    done \
 && rm /opt/kafka/bin/.tools.list \
 && chmod 755 /opt/kafka/bin/*.sh /etc/kafka/docker/run \
 && chmod ug+w /etc/kafka/docker/*
EXPOSE 9092
VOLUME ["/etc/kafka/secrets", "/var/lib/kafka/data", "/mnt/shared/config"]
CMD ["/etc/kafka/docker/run"]
