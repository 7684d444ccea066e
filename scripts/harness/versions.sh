# The versions of everything the harness builds or fetches; each is part of
# its cache key under $MILLRACE_CACHE. Sourced by scripts/deps.sh and the
# harness scripts.
K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.35}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
# Prometheus 3.16 (its Go module numbers v3.X.Y as v0.3XX.Y): Debian's 2.42
# is built without Kubernetes service discovery.
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v3.16.0}
PROMETHEUS_MODULE_VERSION=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
