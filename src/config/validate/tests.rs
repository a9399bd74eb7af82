//! Each validation rule and its message, through the whole path from text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::test_support::*;
use crate::config::{AdminConfig, Config, LogConfig, LogFormat, TlsConfig};

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
        "upstream.read_timeout",
        "server.tunnel_idle_timeout",
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
fn shutdown_delay_is_a_duration_that_may_be_zero() {
    assert_eq!(parse_ok("").server.shutdown_delay, Duration::ZERO);
    assert_eq!(
        parse_ok("server.shutdown_delay = \"0s\"")
            .server
            .shutdown_delay,
        Duration::ZERO
    );
    assert_eq!(
        parse_ok("server.shutdown_delay = \"5s\"")
            .server
            .shutdown_delay,
        Duration::from_secs(5)
    );
    refused(&[
        (
            "server.shutdown_delay = \"5\"",
            "server.shutdown_delay: \"5\" has no unit",
        ),
        (
            "server.shutdown_delay = \"-1s\"",
            "server.shutdown_delay: \"-1s\": a duration cannot be negative",
        ),
        (
            "server.shutdown_delay = \"9000d\"",
            "server.shutdown_delay: \"9000d\" is too long (at most 8760h)",
        ),
        (
            "server.shutdown_delay = 5",
            "server.shutdown_delay: invalid type: integer `5`, expected a duration string",
        ),
    ]);
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
fn learn_exclude_ignore_query_and_max_bytes() {
    refused(&[
        (
            "learn.max_bytes = 0",
            "learn.max_bytes: must be at least 1 byte",
        ),
        ("learn.max_bytes = \"lots\"", "learn.max_bytes: "),
        (
            "learn.exclude = [\"account/\"]",
            "learn.exclude: \"account/\" is not a path prefix",
        ),
        (
            "learn.exclude = [\"/my account/\"]",
            "learn.exclude: \"/my account/\" is not a path prefix",
        ),
        (
            "learn.ignore_query = [\"a=b\"]",
            "learn.ignore_query: \"a=b\" is not a query parameter name",
        ),
        (
            "learn.ignore_query = [\"\"]",
            "learn.ignore_query: \"\" is not a query parameter name",
        ),
    ]);
    let config = parse_ok(
        "[learn]\nexclude = [\"/account/\", \"/api/\"]\nignore_query = \"ref\"\nmax_bytes = \"1MiB\"",
    );
    assert_eq!(config.learn.exclude, ["/account/", "/api/"]);
    assert_eq!(config.learn.ignore_query, ["ref"]);
    assert_eq!(config.learn.max_bytes, 1024 * 1024);
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
    let config = parse_ok("server.listen = \"127.0.0.1:8443\"\n[admin]\nlisten = \"[::1]:8443\"");
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
fn fairness_and_memory_limits() {
    refused(&[
        (
            "server.max_connections = 0",
            "server.max_connections: expected a positive integer, got 0",
        ),
        (
            "server.stream_send_buffer = \"512B\"",
            "server.stream_send_buffer: must be at least 1KiB",
        ),
        (
            "server.stream_send_buffer = \"2GiB\"",
            "server.stream_send_buffer: must be at most 1GiB",
        ),
        (
            "upstream.max_connections_per_client = 0",
            "upstream.max_connections_per_client: expected a positive integer, got 0",
        ),
        (
            "[upstream]\nmax_connections = 8\nmax_connections_per_client = 9",
            "upstream.max_connections_per_client: 9 is more than upstream.max_connections (8)",
        ),
        (
            "upstream.buffer_size = 0",
            "upstream.buffer_size: must be at least 1B",
        ),
        (
            "[upstream]\nbuffer_size = \"128KiB\"\nbuffer_per_client = \"64KiB\"",
            "upstream.buffer_per_client: must be at least upstream.buffer_size (128KiB)",
        ),
    ]);
    // The share defaults to a sixteenth of the pool, at least 1.
    let share = |text: &str| parse_ok(text).upstream.max_connections_per_client;
    assert_eq!(share(""), 32);
    assert_eq!(share("[upstream]\nmax_connections = 8"), 1);
    assert_eq!(share("[upstream]\nmax_connections = 1000"), 62);
    assert_eq!(
        share("[upstream]\nmax_connections = 8\nmax_connections_per_client = 8"),
        8
    );
    let config = parse_ok(
        "[server]\nmax_connections = 3\nstream_send_buffer = \"1KiB\"\n\
         [upstream]\nbuffer_size = 1\nbuffer_per_client = \"1GiB\"",
    );
    assert_eq!(
        (
            config.server.max_connections,
            config.server.stream_send_buffer,
            config.upstream.buffer_size,
            config.upstream.buffer_per_client
        ),
        (3, 1024, 1, 1 << 30)
    );
}
