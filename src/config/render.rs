//! Rendering: the effective configuration, as `linkpush check` prints it ([`Config::render`]).

use std::fmt;

use super::Config;
use super::units::{format_duration, format_size};

pub(super) struct Rendered<'a>(pub(super) &'a Config);

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
        writeln!(
            f,
            "shutdown_delay = {}",
            quote(&format_duration(server.shutdown_delay))
        )?;
        writeln!(
            f,
            "tunnel_idle_timeout = {}",
            quote(&format_duration(server.tunnel_idle_timeout))
        )?;
        writeln!(f, "max_connections = {}", server.max_connections)?;
        writeln!(
            f,
            "stream_send_buffer = {}",
            quote(&format_size(server.stream_send_buffer as u64))
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
        writeln!(
            f,
            "read_timeout = {}",
            quote(&format_duration(upstream.read_timeout))
        )?;
        writeln!(f, "max_idle_per_host = {}", upstream.max_idle_per_host)?;
        writeln!(f, "max_connections = {}", upstream.max_connections)?;
        writeln!(
            f,
            "max_connections_per_client = {}",
            upstream.max_connections_per_client
        )?;
        writeln!(
            f,
            "buffer_size = {}",
            quote(&format_size(upstream.buffer_size))
        )?;
        writeln!(
            f,
            "buffer_per_client = {}",
            quote(&format_size(upstream.buffer_per_client))
        )?;

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
        writeln!(f, "cache_digest = {}", push.cache_digest)?;

        writeln!(f, "\n[early_hints]")?;
        writeln!(f, "enabled = {}", early_hints.enabled)?;
        writeln!(f, "http1 = {}", early_hints.http1)?;

        writeln!(f, "\n[learn]")?;
        writeln!(f, "enabled = {}", learn.enabled)?;
        writeln!(f, "routes = {}", learn.routes)?;
        writeln!(f, "ttl = {}", quote(&format_duration(learn.ttl)))?;
        let quoted = |items: &[String]| items.iter().map(|i| quote(i)).collect::<Vec<_>>();
        writeln!(f, "exclude = [{}]", quoted(&learn.exclude).join(", "))?;
        writeln!(
            f,
            "ignore_query = [{}]",
            quoted(&learn.ignore_query).join(", ")
        )?;
        writeln!(f, "max_bytes = {}", quote(&format_size(learn.max_bytes)))?;

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
    push_quoted(&mut out, s);
    out
}

/// `s` quoted with backslash escapes and every control character as `\uXXXX`: a TOML basic
/// string (TOML 1.0) and a JSON string (RFC 8259 §7) alike.
pub(crate) fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::test_support::*;

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
            "exclude = []",
            "max_bytes = \"32MiB\"",
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
shutdown_delay = "5s"
tunnel_idle_timeout = "2h"
max_connections = 1
stream_send_buffer = "1KiB"
[server.tls]
cert = "certs/a \"quoted\" \\ name.pem"
key = "/keys/k.pem"
[upstream]
url = "http://[::1]:81"
connect_timeout = "1.5s"
response_timeout = "250us"
read_timeout = "90s"
max_idle_per_host = 0
max_connections = 1
max_connections_per_client = 1
buffer_size = 1000
buffer_per_client = "3MiB"
[push]
enabled = false
lru_capacity = 1
max_pushes_per_response = 0
max_concurrent_pushes = 0
max_asset_bytes = 1000001
request_headers = []
cache_digest = false
[early_hints]
enabled = false
http1 = true
[learn]
enabled = false
routes = 1
ttl = "1ns"
exclude = ["/account/", "/a\"q\\"]
ignore_query = ["ref", "mc_cid"]
max_bytes = 1000
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
}
