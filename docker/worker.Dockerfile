# millrace-worker: the pipeline stages (ingest, join, export), the simulator
# and join-file, in one binary.
#
#   docker build -f docker/worker.Dockerfile --build-arg VERSION=0.1.0 \
#       -t millrace/worker:0.1.0 .
#
# Build context: the repository root (see .dockerignore). Needs BuildKit
# (the default builder since Docker 23) for the cache mounts.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- build --------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# rdkafka builds its bundled librdkafka with ./configure and make (no cmake:
# the workspace uses rdkafka's default features, only zlib of the optional
# libraries). rust:1-bookworm already has gcc, make, perl, pkg-config and
# zlib1g-dev.
#
# LIBZ_SYS_STATIC=1: libz-sys compiles zlib into the binary instead of
# linking the system's libz.so.1, which the distroless runtime image does not
# have. The binary then needs only glibc and libgcc_s.
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

# The registry and the target directory are BuildKit caches: a rebuild after
# a source change recompiles only the workspace crates. The binary is copied
# out of the cache in the same step, and its debug info (the release
# profile keeps line tables for profiling) stripped to keep the image small.
# Cargo decides what to rebuild by file times: a source file older than
# the cached build of an earlier version (a checkout edited before that
# build ran) would be taken as built, and the image would hold old code.
# Touching the workspace's sources makes cargo rebuild its own crates (never
# the dependencies) every time.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,id=millrace-target,sharing=locked \
    find join config health worker operator testkit -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p millrace-worker \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/millrace-worker /out/millrace-worker \
 && /out/millrace-worker --version

# --- run ----------------------------------------------------------------------
# distroless/cc: glibc, libgcc_s, CA certificates and tzdata, no shell, no
# package manager; ":nonroot" runs as uid/gid 65532, the user the operator's
# worker Pods ask for (runAsUser/runAsGroup 65532, runAsNonRoot). zlib, the
# one library it lacks, is linked statically above (check with
# `ldd target/release/millrace-worker` on the builder: only libc, libm,
# libgcc_s and the loader remain).
FROM ${RUNTIME_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="millrace-worker" \
      org.opencontainers.image.description="Millrace worker: MQTT ingest, the deterministic time-series join and InfluxDB export, as Kafka stages or embedded" \
      org.opencontainers.image.source="https://example.invalid/millrace" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=builder /out/millrace-worker /millrace-worker

# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532

# /metrics, /healthz, /readyz (--metrics-addr, default [::]:9090).
EXPOSE 9090

# The operator runs: run --config /etc/millrace/pipeline.yaml --stage <stage>
ENTRYPOINT ["/millrace-worker"]
CMD ["--help"]
