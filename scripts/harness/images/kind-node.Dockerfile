# The kind node image (what `kind build node-image` makes, which cannot run
# offline here): kubeadm, kubelet and kubectl on the node base, every
# control-plane image already in containerd's store (containerd 1.6 has no
# pinned images: the kubelet's image GC would only remove them above 85% disk
# use), the local pause image as the sandbox image,
# and a bridge CNI for the single node's 10.244.0.0/24 (no kindnetd image).
# Build context: bin/ (kubeadm, kubelet, kubectl), images.tar, version.
ARG KIND_BASE
FROM ${KIND_BASE}
ARG PAUSE_IMAGE
COPY bin/ /usr/bin/
COPY 10-bridge.conflist /etc/cni/net.d/10-bridge.conflist
COPY version /kind/version
# The images tar is bind-mounted, never stored in a layer.
RUN --mount=type=bind,source=images.tar,target=/tmp/images.tar \
    set -e; \
    containerd >/tmp/containerd.log 2>&1 & pid=$!; \
    for i in $(seq 1 50); do timeout 2 ctr version >/dev/null 2>&1 && break; sleep 0.2; done; \
    ctr -n k8s.io images import --no-unpack --digests /tmp/images.tar; \
    ctr -n k8s.io images ls -q; \
    kill $pid; wait $pid || true; rm -f /tmp/containerd.log; \
    sed -i "s|sandbox_image = .*|sandbox_image = \"${PAUSE_IMAGE}\"|" /etc/containerd/config.toml; \
    grep -q "sandbox_image = \"${PAUSE_IMAGE}\"" /etc/containerd/config.toml
