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
//!
//! The files follow that path: `raw.rs` (the shape and its defaults), `env.rs` (the overrides),
//! `validate.rs` (raw → [`Config`], every error naming its key), `locate.rs` (spans → `line:col`
//! and dotted keys), `render.rs` (the printout) and `units.rs` (durations and sizes).

mod env;
mod locate;
mod raw;
pub(crate) mod render;
#[cfg(test)]
mod test_support;
mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use env::{CONFIG_ENV, ENV_PREFIX};
pub use units::{format_duration, format_size, parse_duration, parse_size};

use locate::{Source, syntax_error};
use raw::RawConfig;

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
    /// On SIGTERM, how long to keep accepting while `/healthz` answers 503 before draining;
    /// zero: drain at once.
    pub shutdown_delay: Duration,
    /// A WebSocket tunnel with no bytes in either direction for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Client connections open at once; at the limit new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Bytes HTTP/2 may queue per stream beyond what the client's socket takes (h2's
    /// `max_send_buffer_size`).
    pub stream_send_buffer: usize,
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
    /// The longest wait for the next bytes of an upstream response, head or body (nginx's
    /// `proxy_read_timeout`).
    pub read_timeout: Duration,
    pub max_idle_per_host: usize,
    pub max_connections: usize,
    /// How many of `max_connections` one client connection may hold (pushes included).
    pub max_connections_per_client: usize,
    /// How many bytes of one response are read ahead of the client.
    pub buffer_size: u64,
    /// How many bytes of responses one client connection may have read ahead in total.
    pub buffer_per_client: u64,
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
    /// Skip pushes the client's cache digest cookie says it still has, and set that cookie.
    pub cache_digest: bool,
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
    /// Path prefixes never learned.
    pub exclude: Vec<String>,
    /// Query parameter names removed from route keys, besides `utm_*`, `gclid` and `fbclid`.
    pub ignore_query: Vec<String>,
    /// The learned store's bound in accounted bytes.
    pub max_bytes: u64,
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
    /// `{var}: not a linkpush setting; …`: a `LINKPUSH_*` variable that names a config section
    /// but no key in it (a typo must not be silently ignored). Variables outside the sections,
    /// such as Kubernetes service links, are ignored instead.
    #[error(
        "{var}: not a linkpush setting{}; variables are LINKPUSH_<SECTION>_<KEY>, such as LINKPUSH_UPSTREAM_URL",
        did_you_mean(.var)
    )]
    UnknownEnv { var: String },
}

fn did_you_mean(var: &str) -> String {
    env::closest_var(var)
        .map(|name| format!(" (did you mean {name}?)"))
        .unwrap_or_default()
}

fn at(location: &Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

/// Messages from serde and toml are kept, but always on one line.
fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
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
        Config::from_toml_with_vars(&text, path, &env::process_env()?)
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
        let overridden = env::apply_overrides(&mut table, env)?;
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| source.shape_error(&e))?;
        let base = origin.parent().unwrap_or(Path::new(""));
        raw.validate(base)
            .map_err(|e| source.validation_error(e, &overridden))
    }

    /// The `LINKPUSH_*` names among `names` that name a config section but no key in it
    /// (sorted, each once), such as `LINKPUSH_UPSTREAM_URLL`. [`Config::load`] refuses to start
    /// when there is one. `LINKPUSH_CONFIG` (the file's path) is not reported, nor names without
    /// the prefix, nor the ones [`Config::ignored_env_vars`] returns.
    pub fn unknown_env_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        env::unknown_vars(names)
    }

    /// The `LINKPUSH_*` names among `names` that are not settings and not typos either (sorted,
    /// each once): outside every config section (`LINKPUSH_SERVICE_HOST`, `LINKPUSH_PORT`), or
    /// Kubernetes service links of a Service whose `<NAME>_SERVICE_HOST` is among `names`
    /// (`LINKPUSH_ADMIN_PORT` next to `LINKPUSH_ADMIN_SERVICE_HOST`). They are skipped; `main`
    /// logs them at debug.
    pub fn ignored_env_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        env::ignored_vars(names)
    }

    /// The effective configuration as TOML text: every key, durations and sizes written as
    /// strings ("60s", "2MiB"); [`Config::from_toml_str`] reads it back to an equal `Config`.
    pub fn render(&self) -> String {
        render::Rendered(self).to_string()
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

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    // -- defaults and reference files -----------------------------------------------------------

    #[test]
    fn defaults_are_spec_section_2() {
        let expected = Config {
            server: ServerConfig {
                listen: vec![addr("0.0.0.0:8443")],
                max_concurrent_streams: 128,
                idle_timeout: Duration::from_secs(60),
                shutdown_timeout: Duration::from_secs(10),
                shutdown_delay: Duration::ZERO,
                tunnel_idle_timeout: Duration::from_secs(300),
                max_connections: 10_000,
                stream_send_buffer: 16 * 1024,
                tls: None,
            },
            upstream: UpstreamConfig {
                url: http::Uri::from_static("http://127.0.0.1:8080/"),
                authority: http::uri::Authority::from_static("127.0.0.1:8080"),
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(30),
                read_timeout: Duration::from_secs(60),
                max_idle_per_host: 64,
                max_connections: 512,
                max_connections_per_client: 32,
                buffer_size: 64 * 1024,
                buffer_per_client: 1024 * 1024,
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
                cache_digest: true,
            },
            early_hints: EarlyHintsConfig {
                enabled: true,
                http1: false,
            },
            learn: LearnConfig {
                enabled: true,
                routes: nz(10_000),
                ttl: Duration::from_secs(600),
                exclude: Vec::new(),
                ignore_query: Vec::new(),
                max_bytes: 32 * 1024 * 1024,
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
}
