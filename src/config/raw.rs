//! The raw shape: what the file may contain. Serde checks unknown keys and TOML types only;
//! ranges and formats are checked by `validate.rs`, which knows the key. Every field has a
//! default, here and nowhere else.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) upstream: RawUpstream,
    pub(super) push: RawPush,
    pub(super) early_hints: RawEarlyHints,
    pub(super) learn: RawLearn,
    pub(super) admin: Option<RawAdmin>,
    pub(super) log: RawLog,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(deserialize_with = "address_list")]
    pub(super) listen: Vec<String>,
    #[serde(deserialize_with = "integer")]
    pub(super) max_concurrent_streams: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) idle_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) shutdown_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) shutdown_delay: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) tunnel_idle_timeout: String,
    #[serde(deserialize_with = "integer")]
    pub(super) max_connections: i64,
    #[serde(deserialize_with = "size_text")]
    pub(super) stream_send_buffer: String,
    pub(super) tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["0.0.0.0:8443".to_owned()],
            max_concurrent_streams: 128,
            idle_timeout: "60s".to_owned(),
            shutdown_timeout: "10s".to_owned(),
            shutdown_delay: "0s".to_owned(),
            tunnel_idle_timeout: "5m".to_owned(),
            max_connections: 10_000,
            stream_send_buffer: "16KiB".to_owned(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) connect_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) response_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) read_timeout: String,
    #[serde(deserialize_with = "integer")]
    pub(super) max_idle_per_host: i64,
    #[serde(deserialize_with = "integer")]
    pub(super) max_connections: i64,
    /// Absent: a sixteenth of `max_connections` (see `validate`).
    #[serde(deserialize_with = "optional_integer")]
    pub(super) max_connections_per_client: Option<i64>,
    #[serde(deserialize_with = "size_text")]
    pub(super) buffer_size: String,
    #[serde(deserialize_with = "size_text")]
    pub(super) buffer_per_client: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:8080".to_owned(),
            connect_timeout: "2s".to_owned(),
            response_timeout: "30s".to_owned(),
            read_timeout: "60s".to_owned(),
            max_idle_per_host: 64,
            max_connections: 512,
            max_connections_per_client: None,
            buffer_size: "64KiB".to_owned(),
            buffer_per_client: "1MiB".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPush {
    pub(super) enabled: bool,
    #[serde(deserialize_with = "integer")]
    pub(super) lru_capacity: i64,
    #[serde(deserialize_with = "integer")]
    pub(super) max_pushes_per_response: i64,
    #[serde(deserialize_with = "integer")]
    pub(super) max_concurrent_pushes: i64,
    #[serde(deserialize_with = "size_text")]
    pub(super) max_asset_bytes: String,
    #[serde(deserialize_with = "header_list")]
    pub(super) request_headers: Vec<String>,
    pub(super) cache_digest: bool,
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
            cache_digest: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawEarlyHints {
    pub(super) enabled: bool,
    pub(super) http1: bool,
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
pub(super) struct RawLearn {
    pub(super) enabled: bool,
    #[serde(deserialize_with = "integer")]
    pub(super) routes: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) ttl: String,
    #[serde(deserialize_with = "text_list")]
    pub(super) exclude: Vec<String>,
    #[serde(deserialize_with = "text_list")]
    pub(super) ignore_query: Vec<String>,
    #[serde(deserialize_with = "size_text")]
    pub(super) max_bytes: String,
}

impl Default for RawLearn {
    fn default() -> Self {
        RawLearn {
            enabled: true,
            routes: 10_000,
            ttl: "10m".to_owned(),
            exclude: Vec::new(),
            ignore_query: Vec::new(),
            max_bytes: "32MiB".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
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
pub(super) struct RawLog {
    pub(super) level: String,
    pub(super) format: String,
    pub(super) access_log: bool,
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

/// [`integer`], for a key whose absence means a derived default.
fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    integer(d).map(Some)
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

fn text_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(StringList("a list of strings"))
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

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
}
