//! Configuration: the raw TOML shape, the validated [`Config`] the rest of the code uses,
//! `LINKPUSH_<SECTION>_<KEY>` environment overrides, and the effective-config printout of
//! `linkpush check`. No other module sees an `Option` or an unparsed duration.
//!
//! The path from text to [`Config`], in order (SPEC §2):
//!
//! 1. the text is parsed as TOML (syntax errors: `file:line:col: message`);
//! 2. it is deserialized into the raw structs, which deny unknown keys and check types, while the
//!    spans are still known (errors: `file:line:col: dotted.key: problem`);
//! 3. `LINKPUSH_<SECTION>_<KEY>` variables are applied to the parsed table, each value checked on
//!    its own so that a bad one is reported under the variable's name;
//! 4. the merged table is deserialized again and validated into [`Config`]: every error names
//!    the dotted key (or the variable, when the value came from one).
//!
//! Defaults live in one place, the `Default` impls of the raw structs; [`Config::default`] is
//! their validated form.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The validated configuration. Built only through `Config::load` / `Config::from_toml_str`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub push: PushConfig,
    pub early_hints: EarlyHintsConfig,
    pub learn: LearnConfig,
    /// `None` when the `[admin]` table is absent: no admin listener.
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// One or more addresses; never empty.
    pub listen: Vec<SocketAddr>,
    pub max_concurrent_streams: u32,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `None`: cleartext (HTTP/1.1 and h2c prior knowledge on the same port).
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Paths as written, resolved against the config file's directory when relative.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Always `http://host[:port]` (no path, query or userinfo): scheme "http" only for now.
    pub url: http::Uri,
    /// The authority (`host:port`) of `url`, precomputed.
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_idle_per_host: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    pub enabled: bool,
    pub lru_capacity: std::num::NonZeroUsize,
    pub max_pushes_per_response: usize,
    pub max_concurrent_pushes: usize,
    pub max_asset_bytes: u64,
    /// Lower-case header names, validated as `http::HeaderName`.
    pub request_headers: Vec<http::HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyHintsConfig {
    pub enabled: bool,
    pub http1: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnConfig {
    pub enabled: bool,
    pub routes: std::num::NonZeroUsize,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The spelling used in the config file: `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing-subscriber EnvFilter directive, validated ("info", "linkpush=debug,h2=warn").
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the configuration could not be loaded. Every variant displays as one line that says where
/// the problem is: the file (with line and column when known) and the dotted key, or the
/// environment variable the value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `{file}: {io error}`: the file could not be read.
    #[error("{}: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `{file}:{line}:{column}: {message}`: the file is not valid TOML.
    #[error("{}:{line}:{column}: {message}", .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// `{file}[:{line}:{column}]: {key}: {problem}`: a key is unknown, has the wrong type, or an
    /// invalid value. `location` points at the offending key or value when the file has it.
    #[error("{}{}: {key}: {problem}", .file.display(), at(.location))]
    Invalid {
        file: PathBuf,
        location: Option<(usize, usize)>,
        key: String,
        problem: String,
    },
    /// `{var}: {problem}`: the value of a `LINKPUSH_*` variable is invalid.
    #[error("{var}: {problem}")]
    Env { var: String, problem: String },
    /// `{var}: not a linkpush setting; …`: a `LINKPUSH_*` variable that names no key (a typo
    /// must not be silently ignored).
    #[error(
        "{var}: not a linkpush setting; variables are LINKPUSH_<SECTION>_<KEY>, such as LINKPUSH_UPSTREAM_URL"
    )]
    UnknownEnv { var: String },
}

fn at(location: &Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

/// A validation failure before it is placed in the file or attributed to a variable.
#[derive(Debug)]
struct Invalid {
    key: String,
    problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// Messages from serde and toml are kept, but always on one line.
fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

// ---------------------------------------------------------------------------------------------
// Raw shape: what the file may contain. Every field has a default, here and nowhere else.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    upstream: RawUpstream,
    push: RawPush,
    early_hints: RawEarlyHints,
    learn: RawLearn,
    admin: Option<RawAdmin>,
    log: RawLog,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    #[serde(deserialize_with = "address_list")]
    listen: Vec<String>,
    #[serde(deserialize_with = "integer")]
    max_concurrent_streams: i64,
    #[serde(deserialize_with = "duration_text")]
    idle_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    shutdown_timeout: String,
    tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["0.0.0.0:8443".to_owned()],
            max_concurrent_streams: 128,
            idle_timeout: "60s".to_owned(),
            shutdown_timeout: "10s".to_owned(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(deserialize_with = "duration_text")]
    connect_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    response_timeout: String,
    #[serde(deserialize_with = "integer")]
    max_idle_per_host: i64,
    #[serde(deserialize_with = "integer")]
    max_connections: i64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:8080".to_owned(),
            connect_timeout: "2s".to_owned(),
            response_timeout: "30s".to_owned(),
            max_idle_per_host: 64,
            max_connections: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPush {
    enabled: bool,
    #[serde(deserialize_with = "integer")]
    lru_capacity: i64,
    #[serde(deserialize_with = "integer")]
    max_pushes_per_response: i64,
    #[serde(deserialize_with = "integer")]
    max_concurrent_pushes: i64,
    #[serde(deserialize_with = "size_text")]
    max_asset_bytes: String,
    #[serde(deserialize_with = "header_list")]
    request_headers: Vec<String>,
}

impl Default for RawPush {
    fn default() -> Self {
        RawPush {
            enabled: true,
            lru_capacity: 256,
            max_pushes_per_response: 16,
            max_concurrent_pushes: 16,
            max_asset_bytes: "2MiB".to_owned(),
            request_headers: [
                "accept-encoding",
                "accept-language",
                "user-agent",
                "cache-control",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawEarlyHints {
    enabled: bool,
    http1: bool,
}

impl Default for RawEarlyHints {
    fn default() -> Self {
        RawEarlyHints {
            enabled: true,
            http1: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLearn {
    enabled: bool,
    #[serde(deserialize_with = "integer")]
    routes: i64,
    #[serde(deserialize_with = "duration_text")]
    ttl: String,
}

impl Default for RawLearn {
    fn default() -> Self {
        RawLearn {
            enabled: true,
            routes: 10_000,
            ttl: "10m".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9901".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: String,
    format: String,
    access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            format: "text".to_owned(),
            access_log: true,
        }
    }
}

// Field deserializers: they only check the TOML type (with an `expecting` text that reads well
// in an error); ranges and formats are checked by `validate`, which knows the key.

/// Any TOML integer, kept as i64 so that a negative value reaches validation and gets a
/// message instead of a serde type error.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
    }
    d.deserialize_i64(V)
}

/// A duration string; a bare number is refused here, because its unit would be a guess.
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"10s\" or \"250ms\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V)
}

/// A size string, or an integer number of bytes (kept as its decimal text for `parse_size`).
fn size_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as \"2MiB\", or a number of bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// One string or a list of strings.
struct StringList(&'static str);

impl<'de> Visitor<'de> for StringList {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(items)
    }
}

fn address_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(StringList(
        "an address such as \"0.0.0.0:8443\", or a list of them",
    ))
}

fn header_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(StringList("a list of header names"))
}

// ---------------------------------------------------------------------------------------------
// Validation: raw -> Config. Every error names the full dotted key.
// ---------------------------------------------------------------------------------------------

/// RFC 9113 §5.1.1: stream identifiers are 31 bits, so no more streams than that can be open.
const MAX_STREAMS: i64 = (1 << 31) - 1;
/// Upper bound for counts that have no natural limit, so that nothing downstream overflows.
const MAX_COUNT: i64 = (1 << 31) - 1;
/// The pushed-URL LRU is allocated at its full capacity for every HTTP/2 connection.
const MAX_LRU_CAPACITY: i64 = 65_536;
/// The learned-routes LRU is allocated at its full capacity at start-up.
const MAX_ROUTES: i64 = 1_000_000;
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
    fn validate(self, base: &Path) -> Result<Config, Invalid> {
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
        Ok(UpstreamConfig {
            url,
            authority,
            connect_timeout: timeout("upstream.connect_timeout", &self.connect_timeout)?,
            response_timeout: timeout("upstream.response_timeout", &self.response_timeout)?,
            max_idle_per_host: bounded(
                "upstream.max_idle_per_host",
                self.max_idle_per_host,
                0,
                MAX_COUNT,
            )?,
            max_connections: bounded(
                "upstream.max_connections",
                self.max_connections,
                1,
                MAX_COUNT,
            )?,
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
        Ok(LearnConfig {
            enabled: self.enabled,
            routes: non_zero("learn.routes", self.routes, MAX_ROUTES)?,
            ttl: timeout("learn.ttl", &self.ttl)?,
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

/// A duration that must be greater than zero (timeouts, TTLs).
fn timeout(key: &str, text: &str) -> Result<Duration, Invalid> {
    let d = parse_duration(text).map_err(|problem| invalid(key, problem))?;
    if d.is_zero() {
        return Err(invalid(key, format!("{text:?}: must be greater than 0")));
    }
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

// ---------------------------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------------------------

/// Every `LINKPUSH_*` variable starts with this.
pub const ENV_PREFIX: &str = "LINKPUSH_";
/// The variable that names the config file (SPEC §1); read by `main`, not here.
pub const CONFIG_ENV: &str = "LINKPUSH_CONFIG";
/// `LINKPUSH_*` variables that are not keys but are not typos either.
const RESERVED_ENV: &[&str] = &[CONFIG_ENV, "LINKPUSH_LOG"];

/// One key of SPEC §2. Variable names are generated from this list and matched whole, never
/// split at `_`: `LINKPUSH_EARLY_HINTS_HTTP1` is `early_hints.http1`, and
/// `LINKPUSH_SERVER_TLS_CERT` is `server.tls.cert`.
struct Setting {
    /// The table, dotted (`server.tls`).
    section: &'static str,
    key: &'static str,
    /// Takes a list; a variable may then also be a comma-separated string.
    list: bool,
}

const fn setting(section: &'static str, key: &'static str) -> Setting {
    Setting {
        section,
        key,
        list: false,
    }
}

const fn list(section: &'static str, key: &'static str) -> Setting {
    Setting {
        section,
        key,
        list: true,
    }
}

/// Must name the same keys as the raw structs (pinned by a test against `render`).
const SETTINGS: &[Setting] = &[
    list("server", "listen"),
    setting("server", "max_concurrent_streams"),
    setting("server", "idle_timeout"),
    setting("server", "shutdown_timeout"),
    setting("server.tls", "cert"),
    setting("server.tls", "key"),
    setting("upstream", "url"),
    setting("upstream", "connect_timeout"),
    setting("upstream", "response_timeout"),
    setting("upstream", "max_idle_per_host"),
    setting("upstream", "max_connections"),
    setting("push", "enabled"),
    setting("push", "lru_capacity"),
    setting("push", "max_pushes_per_response"),
    setting("push", "max_concurrent_pushes"),
    setting("push", "max_asset_bytes"),
    list("push", "request_headers"),
    setting("early_hints", "enabled"),
    setting("early_hints", "http1"),
    setting("learn", "enabled"),
    setting("learn", "routes"),
    setting("learn", "ttl"),
    setting("admin", "listen"),
    setting("log", "level"),
    setting("log", "format"),
    setting("log", "access_log"),
];

impl Setting {
    fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}_{}",
            self.section.replace('.', "_").to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }

    /// Puts `value` at this key, creating the tables on the way (so `LINKPUSH_ADMIN_LISTEN`
    /// alone creates `[admin]`).
    fn insert(&self, root: &mut toml::Table, value: toml::Value) -> Result<(), String> {
        let mut table = root;
        for name in self.section.split('.') {
            let entry = table
                .entry(name)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(format!(
                        "cannot set {}: {name} is not a table",
                        self.dotted()
                    ));
                }
            };
        }
        table.insert(self.key.to_owned(), value);
        Ok(())
    }

    /// The TOML value for a variable's text. The text is read as a TOML value when it is one
    /// (`128`, `true`, `["a", "b"]`, `"quoted"`), else as a string; for a list key a plain
    /// string is a comma-separated list. Each candidate is checked against the raw shape on its
    /// own, so a string key keeps a value that merely looks like a number (`cert = 1234`).
    fn env_value(&self, var: &str, text: &str) -> Result<toml::Value, ConfigError> {
        let parsed = toml_value(text);
        let comma_list = |text: &str| {
            toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            )
        };
        let candidates = if self.list {
            match parsed {
                Some(array @ toml::Value::Array(_)) => vec![array],
                Some(toml::Value::String(quoted)) => vec![comma_list(&quoted)],
                _ => vec![comma_list(text)],
            }
        } else {
            match parsed {
                Some(value @ toml::Value::String(_)) => vec![value],
                Some(value) => vec![value, toml::Value::String(text.to_owned())],
                None => vec![toml::Value::String(text.to_owned())],
            }
        };
        let mut first_problem = None;
        for candidate in candidates {
            match self.check_alone(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        Err(ConfigError::Env {
            var: var.to_owned(),
            problem: first_problem.unwrap_or_else(|| "invalid value".to_owned()),
        })
    }

    /// Deserializes a document holding only this key, to catch a wrong type before the value
    /// is merged and its origin forgotten.
    fn check_alone(&self, value: &toml::Value) -> Result<(), String> {
        let mut table = toml::Table::new();
        self.insert(&mut table, value.clone())?;
        toml::Value::Table(table)
            .try_into::<RawConfig>()
            .map(drop)
            .map_err(|e| one_line(e.message()))
    }
}

/// `text` as a single TOML value, if it is one.
fn toml_value(text: &str) -> Option<toml::Value> {
    let mut table: toml::Table = format!("value = {text}").parse().ok()?;
    if table.len() != 1 {
        return None;
    }
    table.remove("value")
}

/// Applies every override `env` has to `table`; returns `(dotted key, variable)` for each.
fn apply_overrides(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for setting in SETTINGS {
        let var = setting.env_var();
        let Some(text) = env(&var) else { continue };
        let value = setting.env_value(&var, &text)?;
        setting
            .insert(table, value)
            .map_err(|problem| ConfigError::Env {
                var: var.clone(),
                problem,
            })?;
        applied.push((setting.dotted(), var));
    }
    Ok(applied)
}

/// The `LINKPUSH_*` variables of the process (names matched case-insensitively, so that a
/// lower-case typo is reported rather than ignored), except the reserved ones.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let lossy = name.to_string_lossy();
        if !lossy.to_ascii_uppercase().starts_with(ENV_PREFIX) || RESERVED_ENV.contains(&&*lossy) {
            continue;
        }
        let Some(name) = name.to_str() else {
            return Err(ConfigError::UnknownEnv {
                var: lossy.into_owned(),
            });
        };
        let Some(value) = value.to_str() else {
            return Err(ConfigError::Env {
                var: name.to_owned(),
                problem: "the value is not valid UTF-8".to_owned(),
            });
        };
        vars.push((name.to_owned(), value.to_owned()));
    }
    Ok(vars)
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Read the file at `path`, apply `LINKPUSH_*` overrides from the process environment,
    /// validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with_vars(&text, path, &process_env()?)
    }

    /// Same from text; `origin` names the file in messages and is the base for relative TLS
    /// paths; `env` is the environment to read overrides from (`LINKPUSH_UPSTREAM_URL` → value).
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let doc = toml::de::DeTable::parse(text).map_err(|e| syntax_error(origin, text, &e))?;
        let source = Source {
            file: origin,
            text,
            doc: doc.get_ref(),
        };
        // Unknown keys and wrong types, while the spans are still known.
        RawConfig::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|e| source.shape_error(&e))?;

        let mut table: toml::Table = text.parse().map_err(|e| syntax_error(origin, text, &e))?;
        let overridden = apply_overrides(&mut table, env)?;
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| source.shape_error(&e))?;
        let base = origin.parent().unwrap_or(Path::new(""));
        raw.validate(base)
            .map_err(|e| source.validation_error(e, &overridden))
    }

    /// The `LINKPUSH_*` names among `names` that are not keys (sorted, each once):
    /// `LINKPUSH_CONFIG` and `LINKPUSH_LOG` are not reported, nor names without the prefix.
    /// [`Config::load`] refuses to start when there is one.
    pub fn unknown_env_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let known: BTreeSet<String> = SETTINGS.iter().map(Setting::env_var).collect();
        let unknown: BTreeSet<String> = names
            .into_iter()
            .filter(|name| name.to_ascii_uppercase().starts_with(ENV_PREFIX))
            .filter(|name| !RESERVED_ENV.contains(name) && !known.contains(*name))
            .map(str::to_owned)
            .collect();
        unknown.into_iter().collect()
    }

    /// [`Config::from_toml_str`] with the overrides given as a list of variables, of which
    /// unknown `LINKPUSH_*` ones are an error.
    fn from_toml_with_vars(
        text: &str,
        origin: &Path,
        vars: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let names = vars.iter().map(|(name, _)| name.as_str());
        if let Some(var) = Config::unknown_env_vars(names).into_iter().next() {
            return Err(ConfigError::UnknownEnv { var });
        }
        let lookup = |name: &str| {
            vars.iter()
                .find(|(candidate, _)| candidate == name)
                .map(|(_, value)| value.clone())
        };
        Config::from_toml_str(text, origin, &lookup)
    }
}

impl Default for Config {
    /// SPEC §2's defaults, without `[server.tls]` and `[admin]`.
    fn default() -> Self {
        RawConfig::default()
            .validate(Path::new(""))
            .expect("the built-in defaults are valid (pinned by a test)")
    }
}

/// The parsed file, to turn spans into `line:col` and dotted keys.
struct Source<'a, 'i> {
    file: &'a Path,
    text: &'a str,
    doc: &'a toml::de::DeTable<'i>,
}

impl Source<'_, '_> {
    /// An error from deserializing the raw shape: unknown key or wrong type.
    fn shape_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let key = span
            .as_ref()
            .and_then(|span| path_at(self.doc, span.start))
            .map(|path| path.join("."))
            .unwrap_or_else(|| "(document)".to_owned());
        // Serde says "field"; in TOML it is a key.
        let problem = one_line(e.message()).replacen("unknown field", "unknown key", 1);
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            location: span.map(|span| line_col(self.text, span.start)),
            key,
            problem,
        }
    }

    /// A validation error, placed at the key in the file or attributed to the variable that
    /// set it.
    fn validation_error(&self, e: Invalid, overridden: &[(String, String)]) -> ConfigError {
        if let Some((_, var)) = overridden.iter().find(|(key, _)| *key == e.key) {
            return ConfigError::Env {
                var: var.clone(),
                problem: e.problem,
            };
        }
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            location: span_of(self.doc, &e.key).map(|span| line_col(self.text, span.start)),
            key: e.key,
            problem: e.problem,
        }
    }
}

fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = line_col(text, e.span().map_or(0, |span| span.start));
    ConfigError::Syntax {
        file: file.to_path_buf(),
        line,
        column,
        message: one_line(e.message()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn span_contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The deepest key whose name or value covers `offset` (the key of an unknown field, or the
/// value of a wrong type), as path segments.
fn path_at(table: &toml::de::DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    let mut best: Option<Vec<String>> = None;
    for (key, value) in table.iter() {
        let candidate = match path_in_value(value.get_ref(), offset) {
            Some(mut inner) => {
                inner.insert(0, key.get_ref().to_string());
                Some(inner)
            }
            None if span_contains(&key.span(), offset) || span_contains(&value.span(), offset) => {
                Some(vec![key.get_ref().to_string()])
            }
            None => None,
        };
        let longer =
            |candidate: &Vec<String>| best.as_ref().is_none_or(|b| candidate.len() > b.len());
        if let Some(candidate) = candidate.filter(longer) {
            best = Some(candidate);
        }
    }
    best
}

fn path_in_value(value: &toml::de::DeValue<'_>, offset: usize) -> Option<Vec<String>> {
    match value {
        toml::de::DeValue::Table(table) => path_at(table, offset),
        toml::de::DeValue::Array(items) => items
            .iter()
            .find_map(|item| path_in_value(item.get_ref(), offset)),
        _ => None,
    }
}

/// Where a dotted key is in the file: its value, or the nearest table on its path that is
/// there (`server.tls.key` missing → the `[server.tls]` header).
fn span_of(doc: &toml::de::DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut table = doc;
    let mut found = None;
    let mut segments = dotted.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Some((key, value)) = table.iter().find(|(key, _)| key.get_ref() == segment) else {
            break;
        };
        found = Some(if segments.peek().is_none() {
            value.span()
        } else {
            key.span()
        });
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Rendering: the effective configuration, as `linkpush check` prints it
// ---------------------------------------------------------------------------------------------

impl Config {
    /// The effective configuration as TOML text: every key, durations and sizes written as
    /// strings ("60s", "2MiB"); [`Config::from_toml_str`] reads it back to an equal `Config`.
    pub fn render(&self) -> String {
        Rendered(self).to_string()
    }
}

struct Rendered<'a>(&'a Config);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            server,
            upstream,
            push,
            early_hints,
            learn,
            admin,
            log,
        } = self.0;
        writeln!(
            f,
            "# linkpush: effective configuration (defaults and LINKPUSH_* overrides applied)"
        )?;
        writeln!(f, "[server]")?;
        let listen: Vec<String> = server
            .listen
            .iter()
            .map(|a| quote(&a.to_string()))
            .collect();
        match listen.as_slice() {
            [one] => writeln!(f, "listen = {one}")?,
            many => writeln!(f, "listen = [{}]", many.join(", "))?,
        }
        writeln!(
            f,
            "max_concurrent_streams = {}",
            server.max_concurrent_streams
        )?;
        writeln!(
            f,
            "idle_timeout = {}",
            quote(&format_duration(server.idle_timeout))
        )?;
        writeln!(
            f,
            "shutdown_timeout = {}",
            quote(&format_duration(server.shutdown_timeout))
        )?;
        match &server.tls {
            Some(tls) => {
                writeln!(f, "\n[server.tls]")?;
                writeln!(f, "cert = {}", quote(&tls.cert.to_string_lossy()))?;
                writeln!(f, "key = {}", quote(&tls.key.to_string_lossy()))?;
            }
            None => writeln!(f, "# [server.tls] absent: cleartext (HTTP/1.1 and h2c)")?,
        }

        writeln!(f, "\n[upstream]")?;
        writeln!(f, "url = {}", quote(&upstream.url.to_string()))?;
        writeln!(
            f,
            "connect_timeout = {}",
            quote(&format_duration(upstream.connect_timeout))
        )?;
        writeln!(
            f,
            "response_timeout = {}",
            quote(&format_duration(upstream.response_timeout))
        )?;
        writeln!(f, "max_idle_per_host = {}", upstream.max_idle_per_host)?;
        writeln!(f, "max_connections = {}", upstream.max_connections)?;

        writeln!(f, "\n[push]")?;
        writeln!(f, "enabled = {}", push.enabled)?;
        writeln!(f, "lru_capacity = {}", push.lru_capacity)?;
        writeln!(
            f,
            "max_pushes_per_response = {}",
            push.max_pushes_per_response
        )?;
        writeln!(f, "max_concurrent_pushes = {}", push.max_concurrent_pushes)?;
        writeln!(
            f,
            "max_asset_bytes = {}",
            quote(&format_size(push.max_asset_bytes))
        )?;
        let headers: Vec<String> = push
            .request_headers
            .iter()
            .map(|h| quote(h.as_str()))
            .collect();
        writeln!(f, "request_headers = [{}]", headers.join(", "))?;

        writeln!(f, "\n[early_hints]")?;
        writeln!(f, "enabled = {}", early_hints.enabled)?;
        writeln!(f, "http1 = {}", early_hints.http1)?;

        writeln!(f, "\n[learn]")?;
        writeln!(f, "enabled = {}", learn.enabled)?;
        writeln!(f, "routes = {}", learn.routes)?;
        writeln!(f, "ttl = {}", quote(&format_duration(learn.ttl)))?;

        match admin {
            Some(admin) => {
                writeln!(f, "\n[admin]")?;
                writeln!(f, "listen = {}", quote(&admin.listen.to_string()))?;
            }
            None => writeln!(f, "\n# [admin] absent: no admin listener")?,
        }

        writeln!(f, "\n[log]")?;
        writeln!(f, "level = {}", quote(&log.level))?;
        writeln!(f, "format = {}", quote(log.format.as_str()))?;
        writeln!(f, "access_log = {}", log.access_log)
    }
}

/// A TOML basic string, always on one line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes
// ---------------------------------------------------------------------------------------------

const NANOS_PER_SEC: u128 = 1_000_000_000;

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

const DURATION_HINT: &str =
    "expected a number and a unit (ns, us, ms, s, m, h, d) such as \"250ms\" or \"10s\"";

/// Parses `"250ms"`, `"2s"`, `"10m"`, `"1h"`, `"1500us"`, `"1.5s"`, `"1h30m"`. A bare number
/// is refused (its unit would be a guess); `"0s"` is accepted (the caller decides).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("{text:?}: a duration cannot be negative"));
    }
    let too_large = || format!("{text:?} is too large");
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let (unit, next) = split_unit(after.trim_start());
        if number.is_empty() {
            return Err(format!("{text:?} is not a duration; {DURATION_HINT}"));
        }
        if unit.is_empty() {
            return Err(format!("{text:?} has no unit; {DURATION_HINT}"));
        }
        let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{text:?}: unknown unit {unit:?}; {DURATION_HINT}"));
        };
        let (nanos, _) = scale_number(number, scale).map_err(|e| e.describe(text, number))?;
        total = total.checked_add(nanos).ok_or_else(too_large)?;
        rest = next.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

/// The shortest exact form: `"60s"`, `"10m"`, `"250ms"`; read back by [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    // Minutes and hours only from 2 up: "60s" and "60m" read better than "1m" and "1h" next
    // to the seconds an operator usually writes, and SPEC §2 writes "60s".
    for (unit, scale) in [("h", 3_600 * NANOS_PER_SEC), ("m", 60 * NANOS_PER_SEC)] {
        if nanos % scale == 0 && nanos / scale >= 2 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    for (unit, scale) in [("s", NANOS_PER_SEC), ("ms", 1_000_000), ("us", 1_000)] {
        if nanos % scale == 0 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

const SIZE_HINT: &str =
    "expected a number of bytes or a size such as \"512KiB\", \"2MiB\" or \"1MB\"";

/// Parses `"2MiB"`, `"512KiB"`, `"1GiB"`, `"1MB"`, `"1kB"`, `"100B"`, `"1.5KiB"`, or a bare
/// integer number of bytes. Units are case-insensitive; the result must be whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty size; {SIZE_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("{text:?}: a size cannot be negative"));
    }
    let (number, unit) = split_number(text);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!("{text:?} is not a size; {SIZE_HINT}"));
    }
    let scale = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
            return Err(format!("{text:?}: unknown unit {unit:?}; {SIZE_HINT}"));
        };
        scale
    };
    let (bytes, exact) = scale_number(number, scale).map_err(|e| e.describe(text, number))?;
    if !exact {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

/// The shortest exact form, binary units preferred: `"2MiB"`, `"1MB"`, `"100B"`; read back by
/// [`parse_size`].
pub fn format_size(n: u64) -> String {
    let mut best = (n, "B");
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
    ] {
        if n != 0 && n % scale == 0 && n / scale < best.0 {
            best = (n / scale, unit);
        }
    }
    format!("{}{}", best.0, best.1)
}

/// Splits leading digits and dots from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Splits leading letters (a unit) from the rest.
fn split_unit(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_alphabetic()).unwrap_or(s.len());
    s.split_at(end)
}

enum NumberError {
    NotANumber,
    TooLarge,
}

/// `number` (digits, optionally `.` and more digits) times `scale`, rounded down, and whether
/// that was exact. Integer arithmetic only: `"1.1s"` is exactly 1 100 000 000 ns.
fn scale_number(number: &str, scale: u128) -> Result<(u128, bool), NumberError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(NumberError::NotANumber);
    }
    // Only digits are left, so a parse error is an overflow.
    let whole: u128 = whole.parse().map_err(|_| NumberError::TooLarge)?;
    let mut value = whole.checked_mul(scale).ok_or(NumberError::TooLarge)?;
    let mut exact = true;
    if !fraction.is_empty() {
        // 18 digits are below a nanosecond of a day and a byte of a TiB; the rest only
        // decide exactness.
        let (digits, dropped) = fraction.split_at(fraction.len().min(18));
        let numerator: u128 = digits.parse().map_err(|_| NumberError::TooLarge)?;
        let denominator = 10u128.pow(digits.len() as u32);
        let product = numerator * scale;
        exact = product % denominator == 0 && dropped.bytes().all(|b| b == b'0');
        value = value
            .checked_add(product / denominator)
            .ok_or(NumberError::TooLarge)?;
    }
    Ok((value, exact))
}

impl NumberError {
    fn describe(self, text: &str, number: &str) -> String {
        match self {
            NumberError::NotANumber => format!("{text:?}: {number:?} is not a number"),
            NumberError::TooLarge => format!("{text:?} is too large"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "/etc/linkpush/linkpush.toml";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new(ORIGIN), &no_env)
    }

    fn parse_ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(e) => panic!("{text:?} should load, got: {e}"),
        }
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("{text:?} should be refused, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Config::from_toml_with_vars(text, Path::new(ORIGIN), &vars)
    }

    fn with_env_ok(text: &str, vars: &[(&str, &str)]) -> Config {
        match with_env(text, vars) {
            Ok(config) => config,
            Err(e) => panic!("{vars:?} should load, got: {e}"),
        }
    }

    fn env_error(text: &str, vars: &[(&str, &str)]) -> String {
        match with_env(text, vars) {
            Ok(config) => panic!("{vars:?} should be refused, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_contains(message: &str, expected: &str) {
        assert!(
            message.contains(expected),
            "expected {expected:?} in the message:\n{message}"
        );
        assert!(
            !message.contains('\n'),
            "a message is one line: {message:?}"
        );
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("test value")
    }

    fn headers(names: &[&'static str]) -> Vec<http::HeaderName> {
        names
            .iter()
            .map(|n| http::HeaderName::from_static(n))
            .collect()
    }

    // -- defaults and reference files -----------------------------------------------------------

    #[test]
    fn defaults_are_spec_section_2() {
        let expected = Config {
            server: ServerConfig {
                listen: vec![addr("0.0.0.0:8443")],
                max_concurrent_streams: 128,
                idle_timeout: Duration::from_secs(60),
                shutdown_timeout: Duration::from_secs(10),
                tls: None,
            },
            upstream: UpstreamConfig {
                url: http::Uri::from_static("http://127.0.0.1:8080/"),
                authority: http::uri::Authority::from_static("127.0.0.1:8080"),
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(30),
                max_idle_per_host: 64,
                max_connections: 512,
            },
            push: PushConfig {
                enabled: true,
                lru_capacity: nz(256),
                max_pushes_per_response: 16,
                max_concurrent_pushes: 16,
                max_asset_bytes: 2 * 1024 * 1024,
                request_headers: headers(&[
                    "accept-encoding",
                    "accept-language",
                    "user-agent",
                    "cache-control",
                ]),
            },
            early_hints: EarlyHintsConfig {
                enabled: true,
                http1: false,
            },
            learn: LearnConfig {
                enabled: true,
                routes: nz(10_000),
                ttl: Duration::from_secs(600),
            },
            admin: None,
            log: LogConfig {
                level: "info".to_owned(),
                format: LogFormat::Text,
                access_log: true,
            },
        };
        assert_eq!(Config::default(), expected);
        assert_eq!(parse_ok(""), expected);
    }

    #[test]
    fn an_empty_admin_table_turns_the_admin_listener_on_with_its_default() {
        let config = parse_ok("[admin]");
        assert_eq!(
            config.admin,
            Some(AdminConfig {
                listen: addr("127.0.0.1:9901")
            })
        );
    }

    const SPEC_EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8443"          # or a list: ["0.0.0.0:8443", "[::]:8443"]
max_concurrent_streams = 128     # advertised to clients
idle_timeout = "60s"             # close a connection with no open streams after this
shutdown_timeout = "10s"         # on SIGTERM/SIGINT: stop accepting, GOAWAY, wait this long for streams to finish

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

[admin]                          # absent: no admin listener
listen = "127.0.0.1:9901"        # GET /metrics (Prometheus text format), GET /healthz

[log]
level = "info"                   # RUST_LOG, when set, wins
format = "text"                  # or "json"
access_log = true                # one line per request: method, path, status, bytes, duration, pushes
"#;

    #[test]
    fn the_spec_example_is_the_defaults_plus_tls_and_admin() {
        let mut expected = Config {
            admin: Some(AdminConfig {
                listen: addr("127.0.0.1:9901"),
            }),
            ..Config::default()
        };
        expected.server.tls = Some(TlsConfig {
            cert: PathBuf::from("/etc/linkpush/certs/cert.pem"),
            key: PathBuf::from("/etc/linkpush/certs/key.pem"),
        });
        assert_eq!(parse_ok(SPEC_EXAMPLE), expected);
    }

    #[test]
    fn the_reference_config_file_is_the_defaults_plus_admin() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/linkpush.toml"));
        let expected = Config {
            admin: Some(AdminConfig {
                listen: addr("127.0.0.1:9901"),
            }),
            ..Config::default()
        };
        assert_eq!(parse_ok(text), expected);
    }

    #[test]
    fn the_reference_config_file_shows_every_key() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/linkpush.toml"));
        for setting in SETTINGS {
            let shown = text.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{} =", setting.key))
            });
            assert!(shown, "{} is not in config/linkpush.toml", setting.dotted());
        }
    }

    // -- shape: unknown keys, types, syntax -------------------------------------------------------

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let message = error("[server]\nlisen = \"0.0.0.0:8443\"\n");
        assert_contains(
            &message,
            "/etc/linkpush/linkpush.toml:2:1: server.lisen: unknown key `lisen`",
        );

        let message = error("[upstream]\nurl = \"http://a\"\n\n[serve]\n");
        assert_contains(&message, "linkpush.toml:4:2: serve: unknown key `serve`");

        let message = error("server.tls.certificate = \"c.pem\"");
        assert_contains(
            &message,
            "linkpush.toml:1:12: server.tls.certificate: unknown key",
        );

        let message = error("[log]\nlevel = \"info\"\n  colour = true\n");
        assert_contains(&message, "linkpush.toml:3:3: log.colour: unknown key");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_points_at_the_value() {
        let message = error("[push]\nlru_capacity = \"many\"\n");
        assert_contains(
            &message,
            "linkpush.toml:2:16: push.lru_capacity: invalid type: string \"many\", expected an integer",
        );
        let message = error("[server]\nidle_timeout = 60\n");
        assert_contains(
            &message,
            "linkpush.toml:2:16: server.idle_timeout: invalid type: integer `60`, expected a duration string",
        );
        let message = error("[early_hints]\nhttp1 = \"yes\"\n");
        assert_contains(
            &message,
            "early_hints.http1: invalid type: string \"yes\", expected a boolean",
        );
        let message = error("[push]\nrequest_headers = [\"accept\", 5]\n");
        assert_contains(
            &message,
            "linkpush.toml:2:30: push.request_headers: invalid type: integer `5`",
        );
        let message = error("server = 5");
        assert_contains(
            &message,
            "linkpush.toml:1:10: server: invalid type: integer `5`",
        );
        let message = error("[upstream]\nmax_connections = 99999999999999999999\n");
        assert_contains(
            &message,
            "upstream.max_connections: integer 99999999999999999999 is out of range",
        );
        let message = error("[push]\nmax_pushes_per_response = 1.5\n");
        assert_contains(
            &message,
            "push.max_pushes_per_response: invalid type: floating point `1.5`",
        );
    }

    #[test]
    fn a_syntax_error_is_file_line_col() {
        let message = error("[server]\nlisten = [\"0.0.0.0:8443\",\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:2:26: unclosed array"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message:?}");

        let message = error("[push]\nenabled = tru\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:2:11: "),
            "{message}"
        );

        let message = error("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:3:1: "),
            "{message}"
        );
    }

    #[test]
    fn an_unreadable_file_names_it_and_keeps_the_io_error() {
        let path =
            std::env::temp_dir().join(format!("linkpush-no-such-{}.toml", std::process::id()));
        let err = Config::load(&path).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(std::error::Error::source(&err).is_some());
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let path = std::env::temp_dir().join(format!("linkpush-load-{}.toml", std::process::id()));
        std::fs::write(&path, "[upstream]\nurl = \"http://10.1.2.3\"\n").expect("write temp file");
        let loaded = Config::load(&path);
        let _ = std::fs::remove_file(&path);
        // Assumes the test process has no LINKPUSH_* variables of its own.
        let config = loaded.expect("loads");
        assert_eq!(config.upstream.authority.as_str(), "10.1.2.3:80");
    }

    // -- validation: each rule, each message ------------------------------------------------------

    /// (file, expected substring of the error)
    fn refused(cases: &[(&str, &str)]) {
        for (text, expected) in cases {
            assert_contains(&error(text), expected);
        }
    }

    #[test]
    fn server_listen() {
        refused(&[
            (
                "[server]\nlisten = \"localhost:8443\"",
                "linkpush.toml:2:10: server.listen: \"localhost:8443\" is not an IP address and port",
            ),
            (
                "[server]\nlisten = \"8443\"",
                "server.listen: \"8443\" is not an IP address and port",
            ),
            (
                "[server]\nlisten = []",
                "server.listen: needs at least one address",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:8443\", \"0.0.0.0:8443\"]",
                "server.listen: 0.0.0.0:8443 is listed twice",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:8443\", \"127.0.0.1:8443\"]",
                "server.listen: 127.0.0.1:8443 overlaps 0.0.0.0:8443: both bind port 8443",
            ),
        ]);
        let config = parse_ok(
            "[server]\nlisten = [\"0.0.0.0:8443\", \"[::]:8443\", \"127.0.0.1:0\", \"127.0.0.1:0\"]",
        );
        assert_eq!(
            config.server.listen,
            vec![
                addr("0.0.0.0:8443"),
                addr("[::]:8443"),
                addr("127.0.0.1:0"),
                addr("127.0.0.1:0")
            ]
        );
    }

    #[test]
    fn server_max_concurrent_streams_is_1_to_2_pow_31_minus_1() {
        refused(&[
            (
                "[server]\nmax_concurrent_streams = 0",
                "linkpush.toml:2:26: server.max_concurrent_streams: expected a positive integer, got 0",
            ),
            (
                "server.max_concurrent_streams = -5",
                "server.max_concurrent_streams: expected a positive integer, got -5",
            ),
            (
                "server.max_concurrent_streams = 2147483648",
                "server.max_concurrent_streams: 2147483648 is too large (at most 2147483647)",
            ),
        ]);
        assert_eq!(
            parse_ok("server.max_concurrent_streams = 2147483647")
                .server
                .max_concurrent_streams,
            2_147_483_647
        );
        assert_eq!(
            parse_ok("server.max_concurrent_streams = 1")
                .server
                .max_concurrent_streams,
            1
        );
    }

    #[test]
    fn timeouts_and_ttl_are_positive_durations() {
        for key in [
            "server.idle_timeout",
            "server.shutdown_timeout",
            "upstream.connect_timeout",
            "upstream.response_timeout",
            "learn.ttl",
        ] {
            assert_contains(
                &error(&format!("{key} = \"0s\"")),
                &format!("{key}: \"0s\": must be greater than 0"),
            );
            assert_contains(
                &error(&format!("{key} = \"10\"")),
                &format!("{key}: \"10\" has no unit"),
            );
            assert_contains(
                &error(&format!("{key} = \"-1s\"")),
                &format!("{key}: \"-1s\": a duration cannot be negative"),
            );
            assert_contains(
                &error(&format!("{key} = \"9000d\"")),
                &format!("{key}: \"9000d\" is too long (at most 8760h)"),
            );
        }
        assert_eq!(
            parse_ok("learn.ttl = \"1h30m\"").learn.ttl,
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_ok("upstream.connect_timeout = \"250ms\"")
                .upstream
                .connect_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn tls_needs_cert_and_key_resolved_against_the_config_directory() {
        refused(&[
            (
                "[server.tls]\ncert = \"c.pem\"",
                "linkpush.toml:1:9: server.tls.key: missing: [server.tls] needs both cert and key",
            ),
            (
                "[server.tls]\nkey = \"k.pem\"",
                "server.tls.cert: missing: [server.tls] needs both cert and key",
            ),
            ("[server.tls]", "server.tls: cert and key are missing"),
            (
                "[server.tls]\ncert = \"\"\nkey = \"k.pem\"",
                "server.tls.cert: must not be empty",
            ),
        ]);
        let config = parse_ok("[server.tls]\ncert = \"certs/c.pem\"\nkey = \"/keys/k.pem\"");
        assert_eq!(
            config.server.tls,
            Some(TlsConfig {
                cert: PathBuf::from("/etc/linkpush/certs/c.pem"),
                key: PathBuf::from("/keys/k.pem"),
            })
        );
        // A config file named relatively: its paths are made absolute, not left to the cwd.
        let text = "[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"";
        let config =
            Config::from_toml_str(text, Path::new("conf/linkpush.toml"), &no_env).expect("loads");
        let tls = config.server.tls.expect("tls");
        assert!(
            tls.cert.is_absolute() && tls.cert.ends_with("conf/c.pem"),
            "{tls:?}"
        );
    }

    #[test]
    fn upstream_url_is_http_host_port() {
        refused(&[
            (
                "upstream.url = \"https://backend\"",
                "upstream.url: https upstreams are not supported yet",
            ),
            (
                "upstream.url = \"http://backend/app\"",
                "upstream.url: must not have a path (got \"/app\")",
            ),
            (
                "upstream.url = \"http://backend/?a=1\"",
                "upstream.url: must not have a query",
            ),
            (
                "upstream.url = \"http://user:pw@backend\"",
                "upstream.url: must not contain userinfo",
            ),
            (
                "upstream.url = \"http://backend/#top\"",
                "upstream.url: must not have a fragment",
            ),
            (
                "upstream.url = \"127.0.0.1:8080\"",
                "upstream.url: \"127.0.0.1:8080\" has no scheme",
            ),
            (
                "upstream.url = \"ftp://backend\"",
                "upstream.url: unsupported scheme \"ftp\"",
            ),
            (
                "upstream.url = \"http://:8080\"",
                "upstream.url: \"http://:8080\" has no host",
            ),
            (
                "upstream.url = \"http://backend:/\"",
                "upstream.url: \"http://backend:/\" has an empty port",
            ),
            (
                "upstream.url = \"http://backend:0\"",
                "upstream.url: port 0 is not a valid upstream port",
            ),
            (
                "upstream.url = \"http://back end\"",
                "upstream.url: \"http://back end\" is not a valid URL",
            ),
            (
                "upstream.url = \"\"",
                "upstream.url: \"\" is not a valid URL",
            ),
        ]);
        for (url, authority) in [
            ("http://backend", "backend:80"),
            ("http://backend/", "backend:80"),
            ("HTTP://Backend:8080", "backend:8080"),
            ("http://10.0.0.1:9000", "10.0.0.1:9000"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ] {
            let config = parse_ok(&format!("upstream.url = \"{url}\""));
            assert_eq!(
                config.upstream.authority.as_str().to_ascii_lowercase(),
                authority,
                "{url}"
            );
            assert_eq!(
                config.upstream.url.to_string().to_ascii_lowercase(),
                format!("http://{authority}/"),
                "{url}"
            );
        }
    }

    #[test]
    fn upstream_pool_limits() {
        refused(&[
            (
                "upstream.max_idle_per_host = -1",
                "upstream.max_idle_per_host: expected a non-negative integer, got -1",
            ),
            (
                "upstream.max_connections = 0",
                "upstream.max_connections: expected a positive integer, got 0",
            ),
        ]);
        let config = parse_ok("[upstream]\nmax_idle_per_host = 0\nmax_connections = 1");
        assert_eq!(
            (
                config.upstream.max_idle_per_host,
                config.upstream.max_connections
            ),
            (0, 1)
        );
    }

    #[test]
    fn push_counts() {
        refused(&[
            (
                "push.lru_capacity = 0",
                "push.lru_capacity: expected a positive integer, got 0",
            ),
            (
                "push.lru_capacity = 65537",
                "push.lru_capacity: 65537 is too large (at most 65536)",
            ),
            (
                "push.max_pushes_per_response = -1",
                "push.max_pushes_per_response: expected a non-negative integer, got -1",
            ),
            (
                "push.max_concurrent_pushes = -1",
                "push.max_concurrent_pushes: expected a non-negative integer, got -1",
            ),
        ]);
        let config = parse_ok(
            "[push]\nmax_pushes_per_response = 0\nmax_concurrent_pushes = 0\nlru_capacity = 1",
        );
        assert_eq!(config.push.max_pushes_per_response, 0);
        assert_eq!(config.push.max_concurrent_pushes, 0);
        assert_eq!(config.push.lru_capacity, nz(1));
    }

    #[test]
    fn push_max_asset_bytes_is_a_size_of_at_least_one_byte() {
        refused(&[
            (
                "push.max_asset_bytes = 0",
                "push.max_asset_bytes: must be at least 1 byte",
            ),
            (
                "push.max_asset_bytes = \"0MiB\"",
                "push.max_asset_bytes: must be at least 1 byte",
            ),
            (
                "push.max_asset_bytes = -5",
                "push.max_asset_bytes: \"-5\": a size cannot be negative",
            ),
            (
                "push.max_asset_bytes = \"2XB\"",
                "push.max_asset_bytes: \"2XB\": unknown unit \"XB\"",
            ),
            (
                "push.max_asset_bytes = true",
                "push.max_asset_bytes: invalid type: boolean `true`, expected a size",
            ),
        ]);
        assert_eq!(
            parse_ok("push.max_asset_bytes = 1048576")
                .push
                .max_asset_bytes,
            1 << 20
        );
        assert_eq!(
            parse_ok("push.max_asset_bytes = \"512KiB\"")
                .push
                .max_asset_bytes,
            512 << 10
        );
    }

    #[test]
    fn push_request_headers_are_header_names_that_may_be_forwarded() {
        refused(&[
            (
                "push.request_headers = [\":authority\"]",
                "push.request_headers: \":authority\" is a pseudo-header",
            ),
            (
                "push.request_headers = [\"connection\"]",
                "push.request_headers: \"connection\" is connection-specific and never forwarded (RFC 9113 §8.2.2)",
            ),
            (
                "push.request_headers = [\"Keep-Alive\"]",
                "push.request_headers: \"Keep-Alive\" is connection-specific",
            ),
            (
                "push.request_headers = [\"proxy-connection\"]",
                "\"proxy-connection\" is connection-specific",
            ),
            (
                "push.request_headers = [\"transfer-encoding\"]",
                "\"transfer-encoding\" is connection-specific",
            ),
            (
                "push.request_headers = [\"upgrade\"]",
                "\"upgrade\" is connection-specific",
            ),
            (
                "push.request_headers = [\"te\"]",
                "\"te\" is connection-specific",
            ),
            (
                "push.request_headers = [\"http2-settings\"]",
                "\"http2-settings\" is connection-specific",
            ),
            (
                "push.request_headers = [\"host\"]",
                "push.request_headers: \"host\" cannot be copied: a promised request carries the target's :authority",
            ),
            (
                "push.request_headers = [\"user agent\"]",
                "push.request_headers: \"user agent\" is not a valid header name",
            ),
            (
                "push.request_headers = [\"\"]",
                "push.request_headers: an empty string is not a header name",
            ),
            (
                "push.request_headers = [\"accept\", \"Accept\"]",
                "push.request_headers: \"accept\" is listed twice",
            ),
        ]);
        let config = parse_ok("push.request_headers = [\"Accept-Encoding\", \"cookie\"]");
        assert_eq!(
            config.push.request_headers,
            headers(&["accept-encoding", "cookie"])
        );
        assert!(
            parse_ok("push.request_headers = []")
                .push
                .request_headers
                .is_empty()
        );
    }

    #[test]
    fn learn_routes() {
        refused(&[
            (
                "learn.routes = 0",
                "learn.routes: expected a positive integer, got 0",
            ),
            (
                "learn.routes = 1000001",
                "learn.routes: 1000001 is too large (at most 1000000)",
            ),
        ]);
        assert_eq!(parse_ok("learn.routes = 1").learn.routes, nz(1));
    }

    #[test]
    fn admin_listen_is_an_address_apart_from_the_server() {
        refused(&[
            (
                "[admin]\nlisten = \"localhost:9901\"",
                "linkpush.toml:2:10: admin.listen: \"localhost:9901\" is not an IP address and port",
            ),
            (
                "[admin]\nlisten = \"0.0.0.0:8443\"",
                "admin.listen: 0.0.0.0:8443 is also in server.listen",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:8443\"",
                "admin.listen: 127.0.0.1:8443 overlaps 0.0.0.0:8443 in server.listen: both bind port 8443",
            ),
        ]);
        let config = parse_ok("server.listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"");
        assert_eq!(
            config.admin,
            Some(AdminConfig {
                listen: addr("127.0.0.1:0")
            })
        );
        let config =
            parse_ok("server.listen = \"127.0.0.1:8443\"\n[admin]\nlisten = \"[::1]:8443\"");
        assert_eq!(
            config.admin,
            Some(AdminConfig {
                listen: addr("[::1]:8443")
            })
        );
    }

    #[test]
    fn log_level_and_format() {
        refused(&[
            (
                "log.level = \"foo=bar\"",
                "log.level: \"foo=bar\" is not a valid filter directive: ",
            ),
            (
                "log.level = \"=info\"",
                "log.level: \"=info\" is not a valid filter directive",
            ),
            ("log.level = \"\"", "log.level: must not be empty"),
            (
                "log.format = \"xml\"",
                "log.format: \"xml\" is not a log format; expected \"text\" or \"json\"",
            ),
            (
                "log.format = \"JSON\"",
                "log.format: \"JSON\" is not a log format",
            ),
        ]);
        let config = parse_ok(
            "[log]\nlevel = \"linkpush=debug,h2=warn\"\nformat = \"json\"\naccess_log = false",
        );
        assert_eq!(
            config.log,
            LogConfig {
                level: "linkpush=debug,h2=warn".to_owned(),
                format: LogFormat::Json,
                access_log: false,
            }
        );
    }

    #[test]
    fn every_message_is_one_line() {
        for text in [
            "[a\n",
            "x = 1",
            "server.listen = 5",
            "push.lru_capacity = 0",
            "log.level = \"a=b=c\"",
        ] {
            assert!(!error(text).contains('\n'), "{text:?}");
        }
    }

    // -- environment overrides --------------------------------------------------------------------

    #[test]
    fn variable_names_are_generated_from_the_key_list_and_all_distinct() {
        let names: BTreeSet<String> = SETTINGS.iter().map(Setting::env_var).collect();
        assert_eq!(names.len(), SETTINGS.len());
        for name in [
            "LINKPUSH_SERVER_LISTEN",
            "LINKPUSH_SERVER_MAX_CONCURRENT_STREAMS",
            "LINKPUSH_SERVER_TLS_CERT",
            "LINKPUSH_SERVER_TLS_KEY",
            "LINKPUSH_UPSTREAM_URL",
            "LINKPUSH_PUSH_REQUEST_HEADERS",
            "LINKPUSH_EARLY_HINTS_ENABLED",
            "LINKPUSH_EARLY_HINTS_HTTP1",
            "LINKPUSH_ADMIN_LISTEN",
            "LINKPUSH_LOG_ACCESS_LOG",
        ] {
            assert!(names.contains(name), "{name}");
        }
    }

    #[test]
    fn the_key_list_matches_the_raw_structs() {
        // `render` writes every key of a config with every optional table present.
        let mut config = Config {
            admin: Some(AdminConfig {
                listen: addr("127.0.0.1:9901"),
            }),
            ..Config::default()
        };
        config.server.tls = Some(TlsConfig {
            cert: PathBuf::from("/c.pem"),
            key: PathBuf::from("/k.pem"),
        });
        let table: toml::Table = config.render().parse().expect("render is TOML");
        fn leaves(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
            for (key, value) in table {
                let dotted = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    toml::Value::Table(inner) => leaves(&dotted, inner, out),
                    _ => {
                        out.insert(dotted);
                    }
                }
            }
        }
        let mut rendered = BTreeSet::new();
        leaves("", &table, &mut rendered);
        let listed: BTreeSet<String> = SETTINGS.iter().map(Setting::dotted).collect();
        assert_eq!(rendered, listed);
        // And each listed key is accepted by the raw shape (no unknown-key error).
        for setting in SETTINGS {
            let mut table = toml::Table::new();
            let value = toml::Value::String("x".to_owned());
            setting.insert(&mut table, value).expect("insert");
            let err = toml::Value::Table(table).try_into::<RawConfig>().err();
            let message = err.map(|e| e.message().to_owned()).unwrap_or_default();
            assert!(
                !message.contains("unknown field"),
                "{}: {message}",
                setting.dotted()
            );
        }
    }

    #[test]
    fn env_overrides_scalars_and_beats_the_file() {
        let config = with_env_ok(
            "[upstream]\nurl = \"http://127.0.0.1:8080\"\n",
            &[
                ("LINKPUSH_UPSTREAM_URL", "http://backend:9000"),
                ("LINKPUSH_SERVER_MAX_CONCURRENT_STREAMS", "64"),
                ("LINKPUSH_LEARN_TTL", "1h"),
                ("LINKPUSH_PUSH_MAX_ASSET_BYTES", "512KiB"),
                ("LINKPUSH_LOG_LEVEL", "linkpush=debug"),
                ("LINKPUSH_LOG_FORMAT", "json"),
            ],
        );
        assert_eq!(config.upstream.authority.as_str(), "backend:9000");
        assert_eq!(config.server.max_concurrent_streams, 64);
        assert_eq!(config.learn.ttl, Duration::from_secs(3600));
        assert_eq!(config.push.max_asset_bytes, 512 << 10);
        assert_eq!(config.log.level, "linkpush=debug");
        assert_eq!(config.log.format, LogFormat::Json);

        let config = with_env_ok("", &[("LINKPUSH_PUSH_MAX_ASSET_BYTES", "1000")]);
        assert_eq!(config.push.max_asset_bytes, 1000);
    }

    #[test]
    fn env_overrides_booleans() {
        let config = with_env_ok(
            "[early_hints]\nhttp1 = false\n",
            &[
                ("LINKPUSH_EARLY_HINTS_HTTP1", "true"),
                ("LINKPUSH_PUSH_ENABLED", "false"),
                ("LINKPUSH_LOG_ACCESS_LOG", "false"),
            ],
        );
        assert!(config.early_hints.http1);
        assert!(config.early_hints.enabled);
        assert!(!config.push.enabled);
        assert!(!config.log.access_log);
    }

    #[test]
    fn env_overrides_lists_as_toml_arrays_or_comma_separated() {
        let config = with_env_ok(
            "",
            &[("LINKPUSH_SERVER_LISTEN", r#"["0.0.0.0:8443", "[::]:8443"]"#)],
        );
        assert_eq!(
            config.server.listen,
            vec![addr("0.0.0.0:8443"), addr("[::]:8443")]
        );

        let config = with_env_ok("", &[("LINKPUSH_SERVER_LISTEN", "127.0.0.1:9000")]);
        assert_eq!(config.server.listen, vec![addr("127.0.0.1:9000")]);

        let config = with_env_ok("", &[("LINKPUSH_SERVER_LISTEN", "0.0.0.0:80, [::]:80")]);
        assert_eq!(
            config.server.listen,
            vec![addr("0.0.0.0:80"), addr("[::]:80")]
        );

        let config = with_env_ok(
            "",
            &[("LINKPUSH_PUSH_REQUEST_HEADERS", "accept-encoding,cookie")],
        );
        assert_eq!(
            config.push.request_headers,
            headers(&["accept-encoding", "cookie"])
        );

        let config = with_env_ok("", &[("LINKPUSH_PUSH_REQUEST_HEADERS", "\"accept, dnt\"")]);
        assert_eq!(config.push.request_headers, headers(&["accept", "dnt"]));

        let config = with_env_ok("", &[("LINKPUSH_PUSH_REQUEST_HEADERS", "")]);
        assert!(config.push.request_headers.is_empty());
    }

    #[test]
    fn env_creates_the_admin_table() {
        let config = with_env_ok("", &[("LINKPUSH_ADMIN_LISTEN", "127.0.0.1:9999")]);
        assert_eq!(
            config.admin,
            Some(AdminConfig {
                listen: addr("127.0.0.1:9999")
            })
        );
    }

    #[test]
    fn env_turns_tls_on() {
        let config = with_env_ok(
            "",
            &[
                ("LINKPUSH_SERVER_TLS_CERT", "certs/cert.pem"),
                ("LINKPUSH_SERVER_TLS_KEY", "/run/secrets/key.pem"),
            ],
        );
        assert_eq!(
            config.server.tls,
            Some(TlsConfig {
                cert: PathBuf::from("/etc/linkpush/certs/cert.pem"),
                key: PathBuf::from("/run/secrets/key.pem"),
            })
        );
        // A string key keeps a value that merely looks like a number.
        let config = with_env_ok(
            "",
            &[
                ("LINKPUSH_SERVER_TLS_CERT", "1234"),
                ("LINKPUSH_SERVER_TLS_KEY", "\"5678\""),
            ],
        );
        let tls = config.server.tls.expect("tls");
        assert_eq!(
            (tls.cert, tls.key),
            (
                PathBuf::from("/etc/linkpush/1234"),
                PathBuf::from("/etc/linkpush/5678")
            )
        );

        let message = env_error("", &[("LINKPUSH_SERVER_TLS_CERT", "c.pem")]);
        assert_contains(
            &message,
            "server.tls.key: missing: [server.tls] needs both cert and key (set server.tls.key or LINKPUSH_SERVER_TLS_KEY)",
        );
    }

    #[test]
    fn an_unknown_linkpush_variable_is_refused() {
        let message = env_error("", &[("LINKPUSH_SERVER_LISEN", "0.0.0.0:1")]);
        assert_contains(&message, "LINKPUSH_SERVER_LISEN: not a linkpush setting");
        let message = env_error("", &[("LINKPUSH_EARLY_HINTS", "true")]);
        assert_contains(&message, "LINKPUSH_EARLY_HINTS: not a linkpush setting");
        let message = env_error("", &[("linkpush_upstream_url", "http://a")]);
        assert_contains(&message, "linkpush_upstream_url: not a linkpush setting");
        // Reserved names and other variables are not settings and not errors.
        with_env_ok(
            "",
            &[
                ("LINKPUSH_CONFIG", "/x.toml"),
                ("LINKPUSH_LOG", "debug"),
                ("PATH", "/bin"),
                ("LINKPUSHX", "1"),
            ],
        );
        assert_eq!(
            Config::unknown_env_vars([
                "LINKPUSH_B",
                "LINKPUSH_A",
                "LINKPUSH_B",
                "LINKPUSH_UPSTREAM_URL",
                "HOME"
            ]),
            vec!["LINKPUSH_A".to_owned(), "LINKPUSH_B".to_owned()]
        );
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        for (var, value, expected) in [
            (
                "LINKPUSH_PUSH_LRU_CAPACITY",
                "0",
                "LINKPUSH_PUSH_LRU_CAPACITY: expected a positive integer, got 0",
            ),
            (
                "LINKPUSH_PUSH_LRU_CAPACITY",
                "-3",
                "LINKPUSH_PUSH_LRU_CAPACITY: expected a positive integer, got -3",
            ),
            (
                "LINKPUSH_PUSH_LRU_CAPACITY",
                "many",
                "LINKPUSH_PUSH_LRU_CAPACITY: invalid type: string \"many\", expected an integer",
            ),
            (
                "LINKPUSH_PUSH_LRU_CAPACITY",
                "1.5",
                "LINKPUSH_PUSH_LRU_CAPACITY: invalid type: floating point `1.5`, expected an integer",
            ),
            (
                "LINKPUSH_EARLY_HINTS_HTTP1",
                "yes",
                "LINKPUSH_EARLY_HINTS_HTTP1: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "LINKPUSH_UPSTREAM_URL",
                "https://backend",
                "LINKPUSH_UPSTREAM_URL: https upstreams are not supported yet",
            ),
            (
                "LINKPUSH_SERVER_IDLE_TIMEOUT",
                "0s",
                "LINKPUSH_SERVER_IDLE_TIMEOUT: \"0s\": must be greater than 0",
            ),
            (
                "LINKPUSH_SERVER_IDLE_TIMEOUT",
                "10",
                "LINKPUSH_SERVER_IDLE_TIMEOUT: \"10\" has no unit",
            ),
            (
                "LINKPUSH_SERVER_LISTEN",
                "localhost:1",
                "LINKPUSH_SERVER_LISTEN: \"localhost:1\" is not an IP address",
            ),
            (
                "LINKPUSH_PUSH_REQUEST_HEADERS",
                "accept, te",
                "LINKPUSH_PUSH_REQUEST_HEADERS: \"te\" is connection-specific",
            ),
            (
                "LINKPUSH_ADMIN_LISTEN",
                "0.0.0.0:8443",
                "LINKPUSH_ADMIN_LISTEN: 0.0.0.0:8443 is also in server.listen",
            ),
            (
                "LINKPUSH_LOG_FORMAT",
                "xml",
                "LINKPUSH_LOG_FORMAT: \"xml\" is not a log format",
            ),
        ] {
            assert_contains(&env_error("", &[(var, value)]), expected);
        }
        // The file's own mistakes still point at the file.
        let message = env_error("push.lru_capacity = 0", &[("LINKPUSH_LEARN_ROUTES", "5")]);
        assert_contains(
            &message,
            "linkpush.toml:1:21: push.lru_capacity: expected a positive integer, got 0",
        );
    }

    #[test]
    fn env_closure_is_the_only_source_for_from_toml_str() {
        let env =
            |name: &str| (name == "LINKPUSH_UPSTREAM_URL").then(|| "http://envhost".to_owned());
        let config = Config::from_toml_str("", Path::new(ORIGIN), &env).expect("loads");
        assert_eq!(config.upstream.authority.as_str(), "envhost:80");
    }

    // -- render -----------------------------------------------------------------------------------

    fn round_trip(config: &Config) {
        let text = config.render();
        let again = Config::from_toml_str(&text, Path::new("/elsewhere/check.toml"), &no_env)
            .unwrap_or_else(|e| panic!("render does not load: {e}\n{text}"));
        assert_eq!(&again, config, "\n{text}");
    }

    #[test]
    fn render_round_trips_the_defaults() {
        let config = Config::default();
        round_trip(&config);
        let text = config.render();
        for line in [
            "listen = \"0.0.0.0:8443\"",
            "idle_timeout = \"60s\"",
            "ttl = \"10m\"",
            "max_asset_bytes = \"2MiB\"",
            "url = \"http://127.0.0.1:8080/\"",
            "request_headers = [\"accept-encoding\", \"accept-language\", \"user-agent\", \"cache-control\"]",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }

    #[test]
    fn render_round_trips_everything_set() {
        let text = r#"
[server]
listen = ["0.0.0.0:443", "[::]:443", "127.0.0.1:0"]
max_concurrent_streams = 2147483647
idle_timeout = "1500ms"
shutdown_timeout = "1h30m"
[server.tls]
cert = "certs/a \"quoted\" \\ name.pem"
key = "/keys/k.pem"
[upstream]
url = "http://[::1]:81"
connect_timeout = "1.5s"
response_timeout = "250us"
max_idle_per_host = 0
max_connections = 1
[push]
enabled = false
lru_capacity = 1
max_pushes_per_response = 0
max_concurrent_pushes = 0
max_asset_bytes = 1000001
request_headers = []
[early_hints]
enabled = false
http1 = true
[learn]
enabled = false
routes = 1
ttl = "1ns"
[admin]
listen = "[::1]:9901"
[log]
level = "linkpush=debug,h2=warn"
format = "json"
access_log = false
"#;
        let config = parse_ok(text);
        round_trip(&config);
        let mut config = parse_ok(SPEC_EXAMPLE);
        config.push.max_asset_bytes = 1_000_000;
        config.push.request_headers = headers(&["cookie"]);
        round_trip(&config);
    }

    // -- durations and sizes ----------------------------------------------------------------------

    #[test]
    fn parse_duration_table() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            (" 2 s ", Duration::from_secs(2)),
            ("0s", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
        let refused = [
            ("", "empty duration"),
            ("   ", "empty duration"),
            ("10", "\"10\" has no unit"),
            ("5x", "\"5x\": unknown unit \"x\""),
            ("5S", "unknown unit \"S\""),
            ("-1s", "\"-1s\": a duration cannot be negative"),
            (
                "99999999999999999999s",
                "\"99999999999999999999s\" is too large",
            ),
            (
                "999999999999999999999999999999999999999999h",
                "is too large",
            ),
            ("1.s", "\"1.\" is not a number"),
            (".5s", "\".5\" is not a number"),
            ("1.2.3s", "\"1.2.3\" is not a number"),
            ("s", "is not a duration"),
            ("1s2", "\"1s2\" has no unit"),
            ("1e3s", "unknown unit \"e\""),
            ("+1s", "is not a duration"),
            ("1_000s", "has no unit"),
        ];
        for (text, expected) in refused {
            match parse_duration(text) {
                Ok(d) => panic!("{text:?} should be refused, got {d:?}"),
                Err(message) => assert!(message.contains(expected), "{text:?}: {message}"),
            }
        }
    }

    #[test]
    fn format_duration_is_exact_and_parses_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "60m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
            (Duration::MAX, "18446744073709551615999999999ns"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn parse_size_table() {
        let ok = [
            ("2MiB", 2 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1TiB", 1 << 40),
            ("1MB", 1_000_000),
            ("1kB", 1_000),
            ("1KB", 1_000),
            ("2mib", 2 << 20),
            ("100B", 100),
            ("100", 100),
            ("2 MiB", 2 << 20),
            ("1.5KiB", 1536),
            ("0.5MB", 500_000),
            ("0", 0),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_size(text), Ok(expected), "{text:?}");
        }
        let refused = [
            ("", "empty size"),
            ("5x", "\"5x\": unknown unit \"x\""),
            ("2M", "unknown unit \"M\""),
            ("-1", "\"-1\": a size cannot be negative"),
            ("-1KiB", "cannot be negative"),
            ("18446744073709551616", "is too large"),
            ("16777216TiB", "is too large"),
            ("99999999999999999999999999999999999999999", "is too large"),
            ("1.5", "\"1.5\" is not a whole number of bytes"),
            ("1.1B", "is not a whole number of bytes"),
            ("0.1KiB", "is not a whole number of bytes"),
            ("MiB", "is not a size"),
            ("1..2MiB", "\"1..2\" is not a number"),
            ("2MiB extra", "unknown unit \"MiB extra\""),
        ];
        for (text, expected) in refused {
            match parse_size(text) {
                Ok(n) => panic!("{text:?} should be refused, got {n}"),
                Err(message) => assert!(message.contains(expected), "{text:?}: {message}"),
            }
        }
    }

    #[test]
    fn format_size_is_exact_and_parses_back() {
        for (n, text) in [
            (0, "0B"),
            (1, "1B"),
            (1000, "1kB"),
            (1024, "1KiB"),
            (2 << 20, "2MiB"),
            (1_000_000, "1MB"),
            (1_024_000, "1000KiB"),
            (1_000_001, "1000001B"),
            (u64::MAX, "18446744073709551615B"),
        ] {
            assert_eq!(format_size(n), text);
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
    }
}
