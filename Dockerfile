# syntax=docker/dockerfile:1
#
# One image for both roles: `ingress-tap webhook` (the Deployment in manifests/) and
# `ingress-tap collect` (the sidecar the webhook injects). Build and tag it with the crate
# version, the tag the manifests and the injection config's default image use:
#
#   docker build -t ghcr.io/ingress-tap/ingress-tap:0.1.0 .
#
# The binary is built exactly as scripts/test.sh builds it (`cargo build --release --locked`,
# the host target, from Cargo.lock); tests/manifests.rs checks that the two commands stay the
# same. The final image is distroless: glibc and libgcc (what the binary links against, the
# same Debian 12 release as the builder), CA certificates, no shell, no package manager.

FROM docker.io/library/rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The caches speed up rebuilds only; the binary is copied out of the cached target directory
# inside the same step, so the image never depends on what the cache held.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/ingress-tap /out/ingress-tap

# The same binary laid out as the image below, from a binary built on the host, for builds
# where the base images cannot be pulled (and for the node tests, tests/control-plane/images.sh,
# which write this layout straight into an OCI archive): the binary, exactly the libraries it
# links against, /etc/passwd with user 65532, /tmp. The published image is the default
# (last) stage; this one is built only when asked for by name:
#
#   cargo build --release --locked
#   tests/control-plane/rootfs.sh target/image-root \
#       --binary target/release/ingress-tap=/ingress-tap --dir /tmp=1777 --passwd nonroot:65532:65532
#   docker build --target host-binary --build-context host-root=target/image-root \
#       -t ghcr.io/ingress-tap/ingress-tap:0.1.0-host .
FROM scratch AS host-binary
COPY --from=host-root / /
USER 65532:65532
ENTRYPOINT ["/ingress-tap"]

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ingress-tap" \
      org.opencontainers.image.description="Injects and runs the Calico ingress log collector" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ingress-tap /ingress-tap
# distroless's "nonroot" user; the manifests and the injected sidecar run as 65532 as well.
USER 65532:65532
ENTRYPOINT ["/ingress-tap"]
