//! The overrides: variable names, value forms, precedence over the file, and messages that
//! name the variable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{SETTINGS, Setting};
use crate::config::raw::RawConfig;
use crate::config::test_support::*;
use crate::config::{AdminConfig, Config, ConfigError, LogFormat, TlsConfig};

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
    // Nothing reads a bare LINKPUSH_LOG: RUST_LOG or LINKPUSH_LOG_LEVEL set the level.
    let message = env_error("", &[("LINKPUSH_LOG", "debug")]);
    assert_contains(&message, "LINKPUSH_LOG: not a linkpush setting");
    let message = env_error("", &[("linkpush_upstream_url", "http://a")]);
    assert_contains(&message, "linkpush_upstream_url: not a linkpush setting");
    // Reserved names and other variables are not settings and not errors.
    with_env_ok(
        "",
        &[
            ("LINKPUSH_CONFIG", "/x.toml"),
            ("PATH", "/bin"),
            ("LINKPUSHX", "1"),
        ],
    );
    assert_eq!(
        Config::unknown_env_vars([
            "LINKPUSH_PUSH_B",
            "LINKPUSH_LOG_A",
            "LINKPUSH_PUSH_B",
            "LINKPUSH_UPSTREAM_URL",
            "LINKPUSH_SERVICE_HOST",
            "HOME"
        ]),
        vec!["LINKPUSH_LOG_A".to_owned(), "LINKPUSH_PUSH_B".to_owned()]
    );
}

/// What Kubernetes puts in the environment of every pod in a namespace that has a Service named
/// `<service>` (upper-cased, `-` → `_`) with ports `https` 8443 and `admin` 9901, at 10.0.0.5.
pub(crate) fn kubernetes_service_links(service: &str) -> Vec<(String, String)> {
    let p = service.to_ascii_uppercase().replace('-', "_");
    let mut vars = vec![
        (format!("{p}_SERVICE_HOST"), "10.0.0.5".to_owned()),
        (format!("{p}_SERVICE_PORT"), "8443".to_owned()),
        (format!("{p}_SERVICE_PORT_HTTPS"), "8443".to_owned()),
        (format!("{p}_SERVICE_PORT_ADMIN"), "9901".to_owned()),
        (format!("{p}_PORT"), "tcp://10.0.0.5:8443".to_owned()),
    ];
    for port in [8443, 9901] {
        let base = format!("{p}_PORT_{port}_TCP");
        vars.push((base.clone(), format!("tcp://10.0.0.5:{port}")));
        vars.push((format!("{base}_PROTO"), "tcp".to_owned()));
        vars.push((format!("{base}_PORT"), port.to_string()));
        vars.push((format!("{base}_ADDR"), "10.0.0.5".to_owned()));
    }
    vars
}

fn with_vars(text: &str, vars: &[(String, String)]) -> Result<Config, ConfigError> {
    Config::from_toml_with_vars(text, Path::new(ORIGIN), vars)
}

#[test]
fn kubernetes_service_links_are_ignored_and_settings_still_apply() {
    // A Service named linkpush (kubernetes/kubernetes#35189), and Services whose names start
    // like a real section once prefixed: linkpush-upstream, linkpush-admin, linkpush-server.
    let mut vars = vec![(
        "LINKPUSH_UPSTREAM_URL".to_owned(),
        "http://10.1.1.1:8080".to_owned(),
    )];
    for service in [
        "linkpush",
        "linkpush-upstream",
        "linkpush-admin",
        "linkpush-server",
    ] {
        vars.extend(kubernetes_service_links(service));
    }
    let config = match with_vars("", &vars) {
        Ok(config) => config,
        Err(e) => panic!("a pod next to these Services must start: {e}"),
    };
    assert_eq!(config.upstream.authority.as_str(), "10.1.1.1:8080");
    // Nothing injected changed a setting.
    assert_eq!(config.server.listen, vec![addr("0.0.0.0:8443")]);
    assert_eq!(config.admin, None);

    let names: Vec<&str> = vars.iter().map(|(name, _)| name.as_str()).collect();
    let ignored = Config::ignored_env_vars(names.iter().copied());
    assert_eq!(ignored.len(), vars.len() - 1, "{ignored:?}");
    assert!(ignored.contains(&"LINKPUSH_PORT_8443_TCP_ADDR".to_owned()));
    assert!(ignored.contains(&"LINKPUSH_ADMIN_PORT".to_owned()));
    assert!(!ignored.contains(&"LINKPUSH_UPSTREAM_URL".to_owned()));
}

#[test]
fn a_typo_in_a_real_section_is_refused_even_beside_service_links() {
    let mut vars = kubernetes_service_links("linkpush");
    vars.extend(kubernetes_service_links("linkpush-upstream"));
    vars.push((
        "LINKPUSH_UPSTREAM_URLL".to_owned(),
        "http://10.1.1.1".to_owned(),
    ));
    let message = match with_vars("", &vars) {
        Ok(config) => panic!("the typo must be refused, got {config:?}"),
        Err(e) => e.to_string(),
    };
    assert_contains(
        &message,
        "LINKPUSH_UPSTREAM_URLL: not a linkpush setting (did you mean LINKPUSH_UPSTREAM_URL?)",
    );
    // Nothing close: no guess.
    let message = env_error("", &[("LINKPUSH_PUSH_COLOUR", "red")]);
    assert_contains(
        &message,
        "LINKPUSH_PUSH_COLOUR: not a linkpush setting; variables are",
    );
    let message = env_error("", &[("linkpush_server_tls_crt", "c.pem")]);
    assert_contains(
        &message,
        "linkpush_server_tls_crt: not a linkpush setting (did you mean LINKPUSH_SERVER_TLS_CERT?)",
    );
    // Without the Service's own LINKPUSH_ADMIN_SERVICE_HOST, LINKPUSH_ADMIN_PORT is a typo.
    for var in [
        "LINKPUSH_SERVER_TLS_CRT",
        "LINKPUSH_EARLY_HINTS_HTTP2",
        "LINKPUSH_ADMIN_PORT",
        "LINKPUSH_UPSTREAM_PORT_80_TCP",
    ] {
        let message = env_error("", &[(var, "x")]);
        assert_contains(&message, &format!("{var}: not a linkpush setting"));
    }
    // Outside the sections: not ours, ignored without a Service around it too.
    for var in [
        "LINKPUSH_PORT",
        "LINKPUSH_SERVICE_HOST",
        "LINKPUSH_NAME",
        "LINKPUSH_SERVERS",
        "LINKPUSH_LOGGING",
    ] {
        with_env_ok("", &[(var, "tcp://10.0.0.5:8443")]);
        assert_eq!(Config::ignored_env_vars([var]), vec![var.to_owned()]);
    }
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
    let env = |name: &str| (name == "LINKPUSH_UPSTREAM_URL").then(|| "http://envhost".to_owned());
    let config = Config::from_toml_str("", Path::new(ORIGIN), &env).expect("loads");
    assert_eq!(config.upstream.authority.as_str(), "envhost:80");
}
