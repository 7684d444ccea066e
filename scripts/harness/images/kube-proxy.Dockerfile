# kube-proxy needs iptables and conntrack beside it (upstream: a distroless
# iptables base); Debian's iptables defaults to nft, as the kind node does.
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ipset kmod \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY kube-proxy /usr/local/bin/kube-proxy
