# linkpush: multi-stage build; the runtime image holds only the binary and its config.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --locked --release --bin linkpush

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin linkpush
COPY --from=build /src/target/release/linkpush /usr/local/bin/linkpush
COPY config/linkpush.toml /etc/linkpush/linkpush.toml
# Every key can be overridden: LINKPUSH_<SECTION>_<KEY>, e.g. LINKPUSH_UPSTREAM_URL.
ENV LINKPUSH_CONFIG=/etc/linkpush/linkpush.toml
USER linkpush
EXPOSE 8443 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/linkpush"]
