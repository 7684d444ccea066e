# Stands in for rust:1-bookworm (the Dockerfiles' RUST_IMAGE): Debian
# bookworm with the C toolchain that rdkafka's bundled librdkafka needs, and
# this machine's own Rust toolchain (no rustup; the tag carries its version).
# Same layout as the official image: CARGO_HOME=/usr/local/cargo, cargo and
# rustc on PATH. The host's own CAs (/usr/local/share/ca-certificates) are
# trusted too, so that cargo reaches crates.io through the same TLS-inspecting
# egress proxy as the host does. Build context: toolchain/ (the toolchain
# minus its docs) and ca/.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc g++ libc6-dev make perl pkg-config zlib1g-dev binutils ca-certificates curl git \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain/ /usr/local/rust/
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
