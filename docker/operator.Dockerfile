# millrace-operator: reconciles StreamPipeline resources into worker
# Deployments, Kafka topics, a managed Mosquitto and Grafana.
#
#   docker build -f docker/operator.Dockerfile --build-arg VERSION=0.1.0 \
#       -t millrace/operator:0.1.0 .
#
# Build context: the repository root (see .dockerignore). Needs BuildKit
# (the default builder since Docker 23) for the cache mounts.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- build --------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# The operator links rdkafka too (the Kafka admin API), with its bundled
# librdkafka built by ./configure and make; rust:1-bookworm has all it needs.
# LIBZ_SYS_STATIC=1 links zlib statically (distroless has no libz.so.1);
# keep it equal to the worker's so that both images share the target cache.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY join/ join/
COPY config/ config/
COPY health/ health/
COPY worker/ worker/
COPY operator/ operator/
COPY testkit/ testkit/

# Cargo decides what to rebuild by file times: a source file older than
# the cached build of an earlier version (a checkout edited before that
# build ran) would be taken as built, and the image would hold old code.
# Touching the workspace's sources makes cargo rebuild its own crates (never
# the dependencies) every time.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=millrace-target,sharing=locked \
    find join config health worker operator testkit -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p millrace-operator \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/millrace-operator /out/millrace-operator \
 && /out/millrace-operator --version

# --- run ----------------------------------------------------------------------
# distroless/cc as for the worker: glibc and libgcc_s, CA certificates, no
# shell; ":nonroot" is uid/gid 65532. The operator talks to the API server
# with rustls (the in-cluster ServiceAccount CA) and needs no OpenSSL.
FROM ${RUNTIME_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="millrace-operator" \
      org.opencontainers.image.description="Millrace operator: reconciles StreamPipeline resources into a running pipeline (workers, Kafka topics, Mosquitto, Grafana)" \
      org.opencontainers.image.source="https://example.invalid/millrace" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=builder /out/millrace-operator /millrace-operator

# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532

# /metrics, /healthz, /readyz (--metrics-addr, default [::]:8080).
EXPOSE 8080

ENTRYPOINT ["/millrace-operator"]
CMD ["run"]
