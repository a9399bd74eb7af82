//! Helpers shared by the config tests: load from text with no environment, and check that a
//! message says what it should, on one line.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;

use super::{Config, ConfigError};

pub(super) const ORIGIN: &str = "/etc/linkpush/linkpush.toml";

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(ORIGIN), &no_env)
}

pub(super) fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("{text:?} should load, got: {e}"),
    }
}

pub(super) fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("{text:?} should be refused, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn assert_contains(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "expected {expected:?} in the message:\n{message}"
    );
    assert!(
        !message.contains('\n'),
        "a message is one line: {message:?}"
    );
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub(super) fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test value")
}

pub(super) fn headers(names: &[&'static str]) -> Vec<http::HeaderName> {
    names
        .iter()
        .map(|n| http::HeaderName::from_static(n))
        .collect()
}

pub(super) const SPEC_EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8443"          # or a list: ["0.0.0.0:8443", "[::]:8443"]
max_concurrent_streams = 128     # advertised to clients
idle_timeout = "60s"             # close a connection with no open streams after this
shutdown_timeout = "10s"         # on SIGTERM/SIGINT: stop accepting, GOAWAY, wait this long for streams to finish
shutdown_delay = "0s"            # on SIGTERM: keep accepting this long first, /healthz answering 503

[server.tls]                     # present: TLS 1.2/1.3 with ALPN h2 and http/1.1
cert = "certs/cert.pem"          # absent: cleartext, HTTP/1.1 and h2c (prior knowledge) on the same port
key  = "certs/key.pem"

[upstream]
url = "http://127.0.0.1:8080"    # the HTTP/1.1 backend (http only; https upstreams may come later)
connect_timeout = "2s"
response_timeout = "30s"         # until the upstream's response headers arrive
max_idle_per_host = 64           # keep-alive pool
max_connections = 512            # upstream connections open at once, at most

[push]
enabled = true
lru_capacity = 256               # per connection: how many pushed URLs are remembered
max_pushes_per_response = 16
max_concurrent_pushes = 16       # per connection, and never more than the client's MAX_CONCURRENT_STREAMS allows
max_asset_bytes = "2MiB"         # a pushed response larger than this is cut off with RST_STREAM
request_headers = ["accept-encoding", "accept-language", "user-agent", "cache-control"]

[early_hints]
enabled = true                   # forward upstream 103s to HTTP/2 clients; send learned hints as 103
http1 = false                    # also send 103 to HTTP/1.1 clients (some old clients mishandle 1xx)

[learn]
enabled = true                   # remember each route's preload links and act on them at request time
routes = 10000                   # how many routes are remembered (LRU)
ttl = "10m"                      # a route's links are forgotten after this
exclude = []                     # path prefixes never learned, e.g. ["/account/", "/api/"]

[admin]                          # absent: no admin listener
listen = "127.0.0.1:9901"        # GET /metrics (Prometheus text format), GET /healthz

[log]
level = "info"                   # RUST_LOG, when set, wins
format = "text"                  # or "json"
access_log = true                # one line per request: method, path, status, bytes, duration, pushes
"#;
