//! Validation: raw -> [`Config`]. Every error names the full dotted key; `locate.rs` places it
//! in the file, or on the variable that set it.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawAdmin, RawConfig, RawLearn, RawLog, RawPush, RawServer, RawTls, RawUpstream};
use super::units::{format_duration, parse_duration, parse_size};
use super::{
    AdminConfig, Config, EarlyHintsConfig, LearnConfig, LogConfig, LogFormat, PushConfig,
    ServerConfig, TlsConfig, UpstreamConfig,
};

/// A validation failure before it is placed in the file or attributed to a variable.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) key: String,
    pub(super) problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// RFC 9113 §5.1.1: stream identifiers are 31 bits, so no more streams than that can be open.
const MAX_STREAMS: i64 = (1 << 31) - 1;
/// Upper bound for counts that have no natural limit, so that nothing downstream overflows.
const MAX_COUNT: i64 = (1 << 31) - 1;
/// The pushed-URL LRU is allocated at its full capacity for every HTTP/2 connection.
const MAX_LRU_CAPACITY: i64 = 65_536;
/// The learned-routes LRU is allocated at its full capacity at start-up.
const MAX_ROUTES: i64 = 1_000_000;
/// Buffers are counted in u32 semaphore permits; far beyond any sensible setting anyway.
const MAX_BUFFER: u64 = 1 << 30;
/// h2 needs room for at least one full DATA frame's worth to make progress efficiently.
const MIN_SEND_BUFFER: u64 = 1024;
/// Far enough for any timeout or TTL, near enough that `Instant + d` cannot overflow anywhere.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Header fields that are meaningful for one connection only; RFC 9113 §8.2.2 forbids them in
/// HTTP/2, so they can never be copied into a promised request.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "http2-settings",
];

impl RawConfig {
    /// `base` is the directory relative TLS paths are resolved against.
    pub(super) fn validate(self, base: &Path) -> Result<Config, Invalid> {
        let server = self.server.validate(base)?;
        let upstream = self.upstream.validate()?;
        let push = self.push.validate()?;
        let early_hints = EarlyHintsConfig {
            enabled: self.early_hints.enabled,
            http1: self.early_hints.http1,
        };
        let learn = self.learn.validate()?;
        let admin = match self.admin {
            Some(admin) => Some(admin.validate(&server.listen)?),
            None => None,
        };
        let log = self.log.validate()?;
        Ok(Config {
            server,
            upstream,
            push,
            early_hints,
            learn,
            admin,
            log,
        })
    }
}

impl RawServer {
    fn validate(self, base: &Path) -> Result<ServerConfig, Invalid> {
        const KEY: &str = "server.listen";
        if self.listen.is_empty() {
            return Err(invalid(KEY, "needs at least one address"));
        }
        let mut listen: Vec<SocketAddr> = Vec::with_capacity(self.listen.len());
        for text in &self.listen {
            let addr = socket_addr(KEY, text)?;
            if let Some(other) = listen.iter().find(|other| overlaps(other, &addr)) {
                return Err(invalid(KEY, overlap_problem(&addr, other, None)));
            }
            listen.push(addr);
        }
        let tls = match self.tls {
            Some(tls) => Some(tls.validate(base)?),
            None => None,
        };
        Ok(ServerConfig {
            listen,
            max_concurrent_streams: bounded(
                "server.max_concurrent_streams",
                self.max_concurrent_streams,
                1,
                MAX_STREAMS,
            )?,
            idle_timeout: timeout("server.idle_timeout", &self.idle_timeout)?,
            shutdown_timeout: timeout("server.shutdown_timeout", &self.shutdown_timeout)?,
            shutdown_delay: delay("server.shutdown_delay", &self.shutdown_delay)?,
            tunnel_idle_timeout: timeout("server.tunnel_idle_timeout", &self.tunnel_idle_timeout)?,
            max_connections: bounded("server.max_connections", self.max_connections, 1, MAX_COUNT)?,
            stream_send_buffer: buffer_size(
                "server.stream_send_buffer",
                &self.stream_send_buffer,
                MIN_SEND_BUFFER,
            )? as usize,
            tls,
        })
    }
}

impl RawTls {
    fn validate(self, base: &Path) -> Result<TlsConfig, Invalid> {
        const BOTH: &str = "[server.tls] needs both cert and key";
        let (cert, key) = match (self.cert, self.key) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls.key",
                    format!("missing: {BOTH} (set server.tls.key or LINKPUSH_SERVER_TLS_KEY)"),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls.cert",
                    format!("missing: {BOTH} (set server.tls.cert or LINKPUSH_SERVER_TLS_CERT)"),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "server.tls",
                    format!("cert and key are missing: {BOTH} (remove the table for cleartext)"),
                ));
            }
        };
        Ok(TlsConfig {
            cert: tls_path("server.tls.cert", base, &cert)?,
            key: tls_path("server.tls.key", base, &key)?,
        })
    }
}

/// Relative paths are relative to the config file, not to the working directory; they are made
/// absolute here so that the effective configuration means the same from anywhere. The files
/// are read by the listener, not here.
fn tls_path(key: &str, base: &Path, text: &str) -> Result<PathBuf, Invalid> {
    if text.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    let joined = base.join(text);
    if joined.is_absolute() {
        return Ok(joined);
    }
    Ok(std::path::absolute(&joined).unwrap_or(joined))
}

impl RawUpstream {
    fn validate(self) -> Result<UpstreamConfig, Invalid> {
        let (url, authority) =
            upstream_url(&self.url).map_err(|problem| invalid("upstream.url", problem))?;
        let max_connections: usize = bounded(
            "upstream.max_connections",
            self.max_connections,
            1,
            MAX_COUNT,
        )?;
        // The default share: a sixteenth of the pool (32 of the default 512). Sixteen
        // connections that never read are then needed to hold every slot, while a browser's page
        // load never waits on it: small responses hold no slot once read ahead, and a page
        // rarely has more than a few dozen large ones in flight. Each slot can also cost up to
        // 64 KiB of upstream read buffer, so the share bounds memory per connection too.
        let max_connections_per_client = match self.max_connections_per_client {
            Some(n) if n > max_connections as i64 => {
                return Err(invalid(
                    "upstream.max_connections_per_client",
                    format!("{n} is more than upstream.max_connections ({max_connections})"),
                ));
            }
            Some(n) => bounded("upstream.max_connections_per_client", n, 1, MAX_COUNT)?,
            None => (max_connections / 16).max(1),
        };
        let buffer_size = buffer_size("upstream.buffer_size", &self.buffer_size, 1)?;
        let buffer_per_client = buffer_size_at_least(
            "upstream.buffer_per_client",
            &self.buffer_per_client,
            buffer_size,
        )?;
        Ok(UpstreamConfig {
            url,
            authority,
            connect_timeout: timeout("upstream.connect_timeout", &self.connect_timeout)?,
            response_timeout: timeout("upstream.response_timeout", &self.response_timeout)?,
            read_timeout: timeout("upstream.read_timeout", &self.read_timeout)?,
            max_idle_per_host: bounded(
                "upstream.max_idle_per_host",
                self.max_idle_per_host,
                0,
                MAX_COUNT,
            )?,
            max_connections,
            max_connections_per_client,
            buffer_size,
            buffer_per_client,
        })
    }
}

/// `http://host[:port]` with at most a trailing `/`; returns it normalised to
/// `http://host:port/` with its `host:port` authority (port 80 when absent).
fn upstream_url(text: &str) -> Result<(http::Uri, http::uri::Authority), String> {
    const SHAPE: &str = "expected http://host[:port]";
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a valid URL ({e}); {SHAPE}"))?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!("https upstreams are not supported yet; {SHAPE}"));
        }
        Some(scheme) => return Err(format!("unsupported scheme {scheme:?}; {SHAPE}")),
        None => return Err(format!("{text:?} has no scheme; {SHAPE}")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{text:?} has no host; {SHAPE}"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("must not contain userinfo (user@); {SHAPE}"));
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host; {SHAPE}"));
    }
    if let Some(pq) = uri.path_and_query() {
        if pq.query().is_some() {
            return Err(format!(
                "must not have a query; {SHAPE} (each request's own path and query are forwarded)"
            ));
        }
        if !matches!(pq.path(), "" | "/") {
            return Err(format!(
                "must not have a path (got {:?}); {SHAPE} (each request's own path is forwarded)",
                pq.path()
            ));
        }
    }
    // http::Uri drops a fragment without a word; refuse it like a path.
    if text.contains('#') {
        return Err(format!("must not have a fragment; {SHAPE}"));
    }
    let port = match authority.port_u16() {
        Some(0) => return Err(format!("port 0 is not a valid upstream port; {SHAPE}")),
        Some(port) => port,
        None if authority.as_str().ends_with(':') => {
            return Err(format!("{text:?} has an empty port; {SHAPE}"));
        }
        None => 80,
    };
    let authority: http::uri::Authority = format!("{}:{port}", authority.host())
        .parse()
        .map_err(|e| format!("{text:?}: invalid host ({e}); {SHAPE}"))?;
    let url = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| format!("{text:?} is not a valid URL ({e}); {SHAPE}"))?;
    Ok((url, authority))
}

impl RawPush {
    fn validate(self) -> Result<PushConfig, Invalid> {
        const MAX_ASSET: &str = "push.max_asset_bytes";
        let max_asset_bytes =
            parse_size(&self.max_asset_bytes).map_err(|problem| invalid(MAX_ASSET, problem))?;
        if max_asset_bytes == 0 {
            return Err(invalid(MAX_ASSET, "must be at least 1 byte"));
        }
        let mut request_headers: Vec<http::HeaderName> =
            Vec::with_capacity(self.request_headers.len());
        for name in &self.request_headers {
            let header =
                request_header(name).map_err(|problem| invalid("push.request_headers", problem))?;
            if request_headers.contains(&header) {
                return Err(invalid(
                    "push.request_headers",
                    format!("{header:?} is listed twice"),
                ));
            }
            request_headers.push(header);
        }
        Ok(PushConfig {
            enabled: self.enabled,
            lru_capacity: non_zero("push.lru_capacity", self.lru_capacity, MAX_LRU_CAPACITY)?,
            max_pushes_per_response: bounded(
                "push.max_pushes_per_response",
                self.max_pushes_per_response,
                0,
                MAX_COUNT,
            )?,
            max_concurrent_pushes: bounded(
                "push.max_concurrent_pushes",
                self.max_concurrent_pushes,
                0,
                MAX_COUNT,
            )?,
            max_asset_bytes,
            request_headers,
            cache_digest: self.cache_digest,
        })
    }
}

/// A header the operator wants copied from the client's request into promised requests (SPEC
/// §4). Case is normalised: field names are case-insensitive (RFC 9110 §5.1) and HTTP/2 sends
/// them in lower case (RFC 9113 §8.2.1).
fn request_header(name: &str) -> Result<http::HeaderName, String> {
    if name.is_empty() {
        return Err("an empty string is not a header name".to_owned());
    }
    if name.starts_with(':') {
        return Err(format!(
            "{name:?} is a pseudo-header; a promised request's :method, :scheme, :authority and \
             :path are set by linkpush (RFC 9113 §8.4)"
        ));
    }
    let header = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if header == http::header::HOST {
        return Err(format!(
            "{name:?} cannot be copied: a promised request carries the target's :authority \
             instead (RFC 9113 §8.3.1)"
        ));
    }
    if CONNECTION_SPECIFIC.contains(&header.as_str()) {
        return Err(format!(
            "{name:?} is connection-specific and never forwarded (RFC 9113 §8.2.2)"
        ));
    }
    Ok(header)
}

impl RawLearn {
    fn validate(self) -> Result<LearnConfig, Invalid> {
        const MAX_BYTES: &str = "learn.max_bytes";
        let max_bytes =
            parse_size(&self.max_bytes).map_err(|problem| invalid(MAX_BYTES, problem))?;
        if max_bytes == 0 {
            return Err(invalid(MAX_BYTES, "must be at least 1 byte"));
        }
        for prefix in &self.exclude {
            // Compared with the request's path, which always starts with `/` (SPEC §3).
            if !prefix.starts_with('/') || !prefix.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(invalid(
                    "learn.exclude",
                    format!(
                        "{prefix:?} is not a path prefix (starts with '/', visible ASCII only)"
                    ),
                ));
            }
        }
        for name in &self.ignore_query {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'&' | b'=' | b'#'));
            if !ok {
                return Err(invalid(
                    "learn.ignore_query",
                    format!("{name:?} is not a query parameter name"),
                ));
            }
        }
        Ok(LearnConfig {
            enabled: self.enabled,
            routes: non_zero("learn.routes", self.routes, MAX_ROUTES)?,
            ttl: timeout("learn.ttl", &self.ttl)?,
            exclude: self.exclude,
            ignore_query: self.ignore_query,
            max_bytes,
        })
    }
}

impl RawAdmin {
    fn validate(self, server: &[SocketAddr]) -> Result<AdminConfig, Invalid> {
        const KEY: &str = "admin.listen";
        let listen = socket_addr(KEY, &self.listen)?;
        if let Some(other) = server.iter().find(|other| overlaps(other, &listen)) {
            return Err(invalid(
                KEY,
                overlap_problem(&listen, other, Some("server.listen")),
            ));
        }
        Ok(AdminConfig { listen })
    }
}

impl RawLog {
    fn validate(self) -> Result<LogConfig, Invalid> {
        if self.level.trim().is_empty() {
            return Err(invalid(
                "log.level",
                "must not be empty (for example \"info\")",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a valid filter directive: {e}", self.level),
            ));
        }
        let format = match self.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not a log format; expected \"text\" or \"json\""),
                ));
            }
        };
        Ok(LogConfig {
            level: self.level,
            format,
            access_log: self.access_log,
        })
    }
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, Invalid> {
    text.trim().parse().map_err(|_| {
        invalid(
            key,
            format!(
                "{text:?} is not an IP address and port such as \"0.0.0.0:8443\" or \
                 \"[::]:8443\" (host names are not resolved)"
            ),
        )
    })
}

/// Two listen addresses that cannot both be bound: the same port in the same family, on the
/// same address or with either one the wildcard. Port 0 asks the kernel for a free port, so it
/// never conflicts. (IPv4 and IPv6 wildcards may coexist, as in SPEC §2's example.)
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `other_key` names the list `other` comes from, when it is not the key being validated.
fn overlap_problem(addr: &SocketAddr, other: &SocketAddr, other_key: Option<&str>) -> String {
    let port = addr.port();
    match other_key {
        None if addr == other => format!("{addr} is listed twice"),
        None => format!("{addr} overlaps {other}: both bind port {port}"),
        Some(key) if addr == other => format!("{addr} is also in {key}"),
        Some(key) => format!("{addr} overlaps {other} in {key}: both bind port {port}"),
    }
}

/// An integer in `min..=max`, converted to the field's type.
fn bounded<T: TryFrom<i64>>(key: &str, value: i64, min: i64, max: i64) -> Result<T, Invalid> {
    if value < min {
        let expected = if min == 1 {
            "a positive integer"
        } else {
            "a non-negative integer"
        };
        return Err(invalid(key, format!("expected {expected}, got {value}")));
    }
    if value > max {
        return Err(invalid(
            key,
            format!("{value} is too large (at most {max})"),
        ));
    }
    T::try_from(value).map_err(|_| invalid(key, format!("{value} is out of range")))
}

fn non_zero(key: &str, value: i64, max: i64) -> Result<NonZeroUsize, Invalid> {
    let n: usize = bounded(key, value, 1, max)?;
    NonZeroUsize::new(n).ok_or_else(|| invalid(key, "expected a positive integer, got 0"))
}

/// A memory size between `min` and [`MAX_BUFFER`].
fn buffer_size(key: &str, text: &str, min: u64) -> Result<u64, Invalid> {
    let n = parse_size(text).map_err(|problem| invalid(key, problem))?;
    if n < min {
        return Err(invalid(
            key,
            format!("must be at least {}", super::units::format_size(min)),
        ));
    }
    if n > MAX_BUFFER {
        return Err(invalid(
            key,
            format!("must be at most {}", super::units::format_size(MAX_BUFFER)),
        ));
    }
    Ok(n)
}

/// [`buffer_size`] that must hold at least one whole `upstream.buffer_size`.
fn buffer_size_at_least(key: &str, text: &str, per_response: u64) -> Result<u64, Invalid> {
    let n = buffer_size(key, text, 1)?;
    if n < per_response {
        return Err(invalid(
            key,
            format!(
                "must be at least upstream.buffer_size ({})",
                super::units::format_size(per_response)
            ),
        ));
    }
    Ok(n)
}

/// A duration that may be zero (a delay that can be turned off).
fn delay(key: &str, text: &str) -> Result<Duration, Invalid> {
    let d = parse_duration(text).map_err(|problem| invalid(key, problem))?;
    if d > MAX_DURATION {
        return Err(invalid(
            key,
            format!(
                "{text:?} is too long (at most {})",
                format_duration(MAX_DURATION)
            ),
        ));
    }
    Ok(d)
}

/// A duration that must be greater than zero (timeouts, TTLs).
fn timeout(key: &str, text: &str) -> Result<Duration, Invalid> {
    let d = delay(key, text)?;
    if d.is_zero() {
        return Err(invalid(key, format!("{text:?}: must be greater than 0")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
