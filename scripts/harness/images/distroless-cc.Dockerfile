# Stands in for gcr.io/distroless/cc-debian12:nonroot (the Dockerfiles'
# RUNTIME_IMAGE): the files of Debian 12's libc6, libgcc-s1, libssl3, tzdata,
# netbase and base-files, the CA bundle, and the passwd/group entries root,
# nobody and nonroot (65532); no shell, no package manager; user 65532,
# workdir /home/nonroot. (distroless/cc also has libgomp and libstdc++,
# which the Millrace binaries do not link.)
ARG DEBIAN_IMAGE=localhost/debian:bookworm-slim
FROM ${DEBIAN_IMAGE} AS files
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tzdata libgcc-s1 libssl3 netbase \
 && mkdir -p /rootfs/usr/bin /rootfs/usr/sbin /rootfs/usr/lib /rootfs/usr/lib64 \
 && cp -a /bin /sbin /lib /lib64 /rootfs/ \
 && for p in libc6 libgcc-s1 libssl3 tzdata netbase base-files; do dpkg -L "$p"; done \
      | grep -vE '^/usr/share/(doc|man|lintian|bug|common-licenses|info)' \
      | while read -r f; do if [ -f "$f" ] || [ -L "$f" ]; then echo "$f"; fi; done >/tmp/files \
 && tar -cf - -T /tmp/files | tar -xf - -C /rootfs --keep-directory-symlink \
 && { rm -f /rootfs/usr/bin/* /rootfs/usr/sbin/* || true; } \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/home/nonroot /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >/rootfs/etc/group \
 && chmod 1777 /rootfs/tmp && chown 65532:65532 /rootfs/home/nonroot

FROM scratch
COPY --from=files /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
