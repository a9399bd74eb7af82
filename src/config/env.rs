//! Environment overrides: `LINKPUSH_<SECTION>_<KEY>` variables, generated from one key list and
//! applied to the parsed table before it is validated.

use std::collections::BTreeSet;

use super::raw::RawConfig;
use super::{ConfigError, one_line};

/// Every `LINKPUSH_*` variable starts with this.
pub const ENV_PREFIX: &str = "LINKPUSH_";
/// The variable that names the config file (SPEC §1); read by `main`, not here.
pub const CONFIG_ENV: &str = "LINKPUSH_CONFIG";
/// `LINKPUSH_*` variables that are not keys but are not typos either.
const RESERVED_ENV: &[&str] = &[CONFIG_ENV];

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
    setting("server", "shutdown_delay"),
    setting("server", "tunnel_idle_timeout"),
    setting("server", "max_connections"),
    setting("server", "stream_send_buffer"),
    setting("server.tls", "cert"),
    setting("server.tls", "key"),
    setting("upstream", "url"),
    setting("upstream", "connect_timeout"),
    setting("upstream", "response_timeout"),
    setting("upstream", "read_timeout"),
    setting("upstream", "max_idle_per_host"),
    setting("upstream", "max_connections"),
    setting("upstream", "max_connections_per_client"),
    setting("upstream", "buffer_size"),
    setting("upstream", "buffer_per_client"),
    setting("push", "enabled"),
    setting("push", "lru_capacity"),
    setting("push", "max_pushes_per_response"),
    setting("push", "max_concurrent_pushes"),
    setting("push", "max_asset_bytes"),
    list("push", "request_headers"),
    setting("push", "cache_digest"),
    setting("early_hints", "enabled"),
    setting("early_hints", "http1"),
    setting("learn", "enabled"),
    setting("learn", "routes"),
    setting("learn", "ttl"),
    list("learn", "exclude"),
    list("learn", "ignore_query"),
    setting("learn", "max_bytes"),
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
pub(super) fn apply_overrides(
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
/// lower-case typo is reported rather than ignored), except the reserved ones. A name or value
/// that is not UTF-8 is an error only where it would be read or refused anyway: in a real
/// section.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let lossy = name.to_string_lossy();
        if !lossy.to_ascii_uppercase().starts_with(ENV_PREFIX) || RESERVED_ENV.contains(&&*lossy) {
            continue;
        }
        let Some(name) = name.to_str() else {
            if names_a_section(&lossy) {
                return Err(ConfigError::UnknownEnv {
                    var: lossy.into_owned(),
                });
            }
            continue;
        };
        let Some(value) = value.to_str() else {
            if !names_a_section(name) {
                continue;
            }
            return Err(ConfigError::Env {
                var: name.to_owned(),
                problem: "the value is not valid UTF-8".to_owned(),
            });
        };
        vars.push((name.to_owned(), value.to_owned()));
    }
    Ok(vars)
}

/// How a `LINKPUSH_*` name is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A key (`LINKPUSH_UPSTREAM_URL`) or a reserved name (`LINKPUSH_CONFIG`).
    Setting,
    /// Not in a config section: not ours, so not a typo either. Kubernetes injects
    /// `LINKPUSH_SERVICE_HOST`, `LINKPUSH_PORT=tcp://…`, `LINKPUSH_PORT_8443_TCP_ADDR`, … into
    /// every pod of a namespace with a Service named `linkpush` (kubernetes/kubernetes#35189);
    /// refusing them would crash-loop the pod.
    Ignored,
    /// In a real section but not a key (`LINKPUSH_UPSTREAM_URLL`): a typo, refused.
    Unknown,
}

/// `LINKPUSH_<SECTION>` or `LINKPUSH_<SECTION>_…` for a table of the file (`SERVER`,
/// `SERVER_TLS`, `EARLY_HINTS`, …), compared in upper case so that a lower-case typo counts.
fn names_a_section(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    SETTINGS.iter().any(|setting| {
        let section = setting.section.replace('.', "_").to_ascii_uppercase();
        rest.strip_prefix(&section)
            .is_some_and(|after| after.is_empty() || after.starts_with('_'))
    })
}

/// A Kubernetes service-link variable of a Service whose `<PREFIX>_SERVICE_HOST` is also set:
/// `<PREFIX>_SERVICE_HOST`, `<PREFIX>_SERVICE_PORT[_<NAME>]`, `<PREFIX>_PORT`,
/// `<PREFIX>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`. Needed beside the section rule because a
/// Service named `linkpush-upstream` or `linkpush-admin` injects `LINKPUSH_UPSTREAM_PORT`, …,
/// which start like a real section; no key ends in `_PORT` or `_SERVICE_HOST`.
fn is_service_link(name: &str, all: &BTreeSet<String>) -> bool {
    let upper = name.to_ascii_uppercase();
    let service_of = |prefix: &str| all.contains(&format!("{prefix}_SERVICE_HOST"));
    if let Some(prefix) = upper.strip_suffix("_SERVICE_HOST") {
        return !prefix.is_empty();
    }
    if upper
        .split_once("_SERVICE_PORT")
        .is_some_and(|(prefix, _)| service_of(prefix))
        || upper.strip_suffix("_PORT").is_some_and(service_of)
    {
        return true;
    }
    // `<PREFIX>_PORT_<port>_<PROTO>…`: find the `_PORT_<digits>_` that starts the suffix.
    let mut from = 0;
    while let Some(at) = upper[from..].find("_PORT_").map(|i| i + from) {
        let (prefix, tail) = (&upper[..at], &upper[at + "_PORT_".len()..]);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let after = &tail[digits..];
        let protocol = ["_TCP", "_UDP", "_SCTP"]
            .iter()
            .find_map(|p| after.strip_prefix(p));
        if digits > 0
            && protocol.is_some_and(|rest| matches!(rest, "" | "_PROTO" | "_PORT" | "_ADDR"))
            && service_of(prefix)
        {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The variable of a key that `name` most likely misspells: at most two edits away (a letter
/// missing, doubled, swapped or wrong), compared in upper case.
pub(super) fn closest_var(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    SETTINGS
        .iter()
        .map(Setting::env_var)
        .map(|var| (edit_distance(&upper, &var), var))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, var)| var)
}

/// Levenshtein distance over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, y) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(x != y);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn classify(name: &str, all: &BTreeSet<String>, known: &BTreeSet<String>) -> Kind {
    if RESERVED_ENV.contains(&name) || known.contains(name) {
        Kind::Setting
    } else if !names_a_section(name) || is_service_link(name, all) {
        Kind::Ignored
    } else {
        Kind::Unknown
    }
}

/// The `LINKPUSH_*` names among `names` that are not keys but name a real section, for
/// [`Config::unknown_env_vars`](super::Config::unknown_env_vars).
pub(super) fn unknown_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    vars_of_kind(names, Kind::Unknown)
}

/// The `LINKPUSH_*` names among `names` that are ignored, for
/// [`Config::ignored_env_vars`](super::Config::ignored_env_vars).
pub(super) fn ignored_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    vars_of_kind(names, Kind::Ignored)
}

fn vars_of_kind<'a>(names: impl IntoIterator<Item = &'a str>, kind: Kind) -> Vec<String> {
    let known: BTreeSet<String> = SETTINGS.iter().map(Setting::env_var).collect();
    let all: BTreeSet<String> = names
        .into_iter()
        .filter(|name| name.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .map(str::to_owned)
        .collect();
    all.iter()
        .filter(|name| classify(name, &all, &known) == kind)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
