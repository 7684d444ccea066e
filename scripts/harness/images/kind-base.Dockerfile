# The kind node's base, as kind's images/base/Dockerfile (v0.33) builds it,
# from Debian bookworm's own packages instead of containerd 2, runc 1.4 and CNI
# plugins built from git: systemd 252 (bookworm; systemd >= 256 drops the
# cgroup v1 that these hosts have), containerd 1.6, runc 1.1, CNI plugins 1.1.
# Build context: kind's images/base/files plus containerd.toml (made by
# images.sh from kind's config).
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

# Packages first, then kind's files: containerd's package would otherwise stop
# at a conffile prompt over kind's /etc/containerd/config.toml.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd containerd runc containernetworking-plugins \
      conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz e2fsprogs bash ca-certificates curl jq procps \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/* /usr/share/doc/* /usr/share/man/*

COPY usr/local/bin/ /usr/local/bin/
COPY kind/ /kind/
COPY etc/ /etc/
COPY containerd.toml /etc/containerd/config.toml

# kind's units call /usr/local/bin/containerd and look for CNI plugins in
# /opt/cni/bin; Debian installs them in /usr/bin and /usr/lib/cni.
# The sysctl.d files that systemd would apply to the HOST's global keys from a
# privileged node (fs.protected_*, kernel.pid_max) are removed.
RUN chmod 0755 /usr/local/bin/* /kind/bin/* \
 && ln -s /usr/bin/containerd /usr/local/bin/containerd \
 && mkdir -p /opt/cni && ln -s /usr/lib/cni /opt/cni/bin \
 && rm -f /usr/lib/sysctl.d/99-protect-links.conf /usr/lib/sysctl.d/50-pid-max.conf \
 && ctr oci spec \
      | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
      | jq 'del(.process.rlimits)' >/etc/containerd/cri-base.json \
 && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >>/etc/systemd/journald.conf \
 && ln -sf /usr/lib/systemd/systemd /sbin/init \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && mkdir -p /etc/kubernetes/manifests

ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
