# One Kubernetes component image (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, coredns, pause): the static binary on an empty base,
# entrypoint the binary, as the upstream distroless images are (kubeadm's
# CoreDNS Deployment and the pause sandbox give only arguments).
# A template: images.sh replaces @BINARY@ (ENTRYPOINT takes no build args).
FROM scratch
COPY @BINARY@ /usr/local/bin/@BINARY@
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["/usr/local/bin/@BINARY@"]
