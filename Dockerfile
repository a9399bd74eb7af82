# linkpush container image: one static binary and its config in an otherwise empty image.
#
#   docker build -t linkpush .
#       builds everything here; the build stage needs the rust image from a registry.
#   podman build --format docker --build-context build=DIR -t linkpush .
#       DIR holds a static `linkpush` built beforehand (tests/container.rs does this); it stands
#       in for the build stage, so nothing is pulled.
#
# Run it (README, "Docker"): certificates mounted at /etc/linkpush/certs (tls.crt, tls.key),
# proxy on 8443, admin (/healthz, /metrics) on 9901.

ARG RUST_VERSION=1.95

# ---- build stage: a static, stripped binary at /linkpush ----------------------------------

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS toolchain

# Dependency-cache input: the manifests, the patched crates in vendor/ (when there are any; an
# empty vendor/ otherwise) and stub sources. Copying the whole context here is cheap (see
# .dockerignore); what leaves this stage changes only when the dependencies do, so the
# dependency layer below is rebuilt only then.
FROM toolchain AS manifests
COPY . /context
RUN mkdir -p /out/src /out/benches /out/vendor \
 && cp /context/Cargo.toml /context/Cargo.lock /out/ \
 && if [ -d /context/vendor ]; then cp -a /context/vendor/. /out/vendor/; fi \
 && echo 'fn main() {}' > /out/src/main.rs \
 && touch /out/src/lib.rs \
 && for f in /context/benches/*.rs; do touch "/out/benches/${f##*/}"; done

FROM toolchain AS build
WORKDIR /src
# crt-static links glibc in, so the binary needs nothing from the image. `--target` keeps the
# flag off build scripts and proc macros, which must stay dynamic. The `container` profile
# (Cargo.toml) is the release profile without debug info, stripped.
ENV RUSTFLAGS="-C target-feature=+crt-static"
COPY --from=manifests /out/ ./
RUN cargo build --locked --profile container --target "$(uname -m)-unknown-linux-gnu" --bin linkpush
COPY src ./src
# COPY keeps the context's timestamps, which can be older than the stub build: touch the crate
# roots so cargo rebuilds linkpush itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --locked --profile container --target "$(uname -m)-unknown-linux-gnu" --bin linkpush \
 && cp "target/$(uname -m)-unknown-linux-gnu/container/linkpush" /linkpush

# ---- runtime: nothing but the binary and its config ----------------------------------------

FROM scratch
LABEL org.opencontainers.image.title="linkpush" \
      org.opencontainers.image.description="A reverse proxy that turns preload Link headers into HTTP/2 server push and 103 Early Hints" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /linkpush /linkpush
COPY config/container.toml /etc/linkpush/linkpush.toml
ENV LINKPUSH_CONFIG=/etc/linkpush/linkpush.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd (there is none).
USER 10001:10001
# 8443: the proxy (TLS, HTTP/2 and HTTP/1.1); 9901: admin, GET /healthz and GET /metrics.
EXPOSE 8443 9901
# The image has no shell and no curl: the binary asks its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/linkpush", "healthcheck"]
# SIGTERM drains: stop accepting, GOAWAY, wait up to server.shutdown_timeout, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/linkpush"]
