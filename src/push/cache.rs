//! Whether a response may be kept by a cache: the `Cache-Control` directives linkpush acts on,
//! and which fetched asset responses are pushed (docs/push-lifecycle.md). Pure.
//!
//! Enforced here:
//! - RFC 9111 §5.2: directives are `token [ "=" ( token / quoted-string ) ]`, several fields
//!   are one list (RFC 9110 §5.3), names compare case-insensitively.
//! - RFC 9113 §8.4 / §8.4.2 and RFC 9111 §3: a pushed response is only worth pushing if the
//!   client may store it; see [`pushable_response`].

use http::{HeaderMap, StatusCode};

/// What a response's `Cache-Control` fields say, as far as linkpush needs to know (RFC 9111
/// §5.2.2). Several fields are one list (RFC 9110 §5.3); directive names compare
/// case-insensitively; commas inside quoted strings do not split.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// `private`, qualified or not (a qualified `private="…"` is treated as unqualified: the
    /// safe reading for a shared cache).
    pub private: bool,
    pub public: bool,
    pub max_age: bool,
}

impl CacheControl {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut out = CacheControl::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            for name in directive_names(value.as_bytes()) {
                let name = name.trim_ascii();
                if name.eq_ignore_ascii_case(b"no-store") {
                    out.no_store = true;
                } else if name.eq_ignore_ascii_case(b"private") {
                    out.private = true;
                } else if name.eq_ignore_ascii_case(b"public") {
                    out.public = true;
                } else if name.eq_ignore_ascii_case(b"max-age") {
                    out.max_age = true;
                }
            }
        }
        out
    }
}

/// The names of the comma-separated directives of one field value (RFC 9111 §5.2:
/// `token [ "=" ( token / quoted-string ) ]`).
fn directive_names(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut directives = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in value.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                directives.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    directives.push(&value[start..]);
    directives
        .into_iter()
        .map(|d| d.split(|&b| b == b'=').next().unwrap_or(d))
}

/// Why a fetched asset is reset instead of pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPushable {
    /// SPEC §4: a 4xx or 5xx asset is never pushed.
    ErrorStatus,
    /// `Cache-Control: no-store` (RFC 9111 §5.2.2.5): the client may not keep it.
    NoStore,
    /// Neither a heuristically cacheable status nor explicit freshness (RFC 9111 §3): a 302 or
    /// 307 without `max-age`/`Expires`, a 304 to an unconditional request.
    NotCacheable,
}

impl NotPushable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotPushable::ErrorStatus => "error_status",
            NotPushable::NoStore => "no_store",
            NotPushable::NotCacheable => "not_cacheable",
        }
    }
}

/// Whether a promised asset's response is pushed as it is (see docs/push-lifecycle.md).
///
/// RFC 9113 §8.4 asks that promised requests be cacheable and §8.4.2 lets the client store a
/// pushed response only if it is cacheable (RFC 9111 §3), so a response the client may not
/// store would be fetched, sent and thrown away. Pushed as they are: every status RFC 9110
/// §15.1 makes heuristically cacheable (200, 203, 204, 206, 300, 301, 308, …; a 301/308 keeps
/// its `Location`, and the client then requests or is pushed the target), and any other
/// non-error status with explicit freshness (`max-age`, `Expires`, `public` or `private`: the
/// client's cache is a private one). Never a `no-store` response, never 4xx/5xx.
pub fn pushable_response(status: StatusCode, headers: &HeaderMap) -> Result<(), NotPushable> {
    if status.is_client_error() || status.is_server_error() {
        return Err(NotPushable::ErrorStatus);
    }
    let cc = CacheControl::of(headers);
    if cc.no_store {
        return Err(NotPushable::NoStore);
    }
    // RFC 9110 §15.1: the non-error statuses that are heuristically cacheable.
    let heuristic = matches!(status.as_u16(), 200 | 203 | 204 | 206 | 300 | 301 | 308);
    let explicit =
        cc.max_age || cc.public || cc.private || headers.contains_key(http::header::EXPIRES);
    if status.is_informational() || status == StatusCode::NOT_MODIFIED || !(heuristic || explicit) {
        return Err(NotPushable::NotCacheable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cache_control_directives() {
        let all = CacheControl::of(&cc(&["Public, MAX-AGE=60", "no-store"]));
        assert!(all.public && all.max_age && all.no_store && !all.private);
        let quoted = CacheControl::of(&cc(&["no-cache=\"private, no-store\", x"]));
        assert_eq!(quoted, CacheControl::default(), "commas inside quotes");
        let private = CacheControl::of(&cc(&["private=\"set-cookie\""]));
        assert!(private.private);
        assert_eq!(CacheControl::of(&HeaderMap::new()), CacheControl::default());
    }

    #[test]
    fn which_asset_responses_are_pushed() {
        let ok =
            |code: u16, h: &HeaderMap| pushable_response(StatusCode::from_u16(code).unwrap(), h);
        let none = HeaderMap::new();
        for code in [200, 203, 204, 300, 301, 308] {
            assert_eq!(ok(code, &none), Ok(()), "{code}");
        }
        for code in [302, 303, 307, 201] {
            assert_eq!(ok(code, &none), Err(NotPushable::NotCacheable), "{code}");
            assert_eq!(ok(code, &cc(&["max-age=60"])), Ok(()), "{code}");
        }
        let mut expires = HeaderMap::new();
        expires.insert(
            http::header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
        );
        assert_eq!(ok(302, &expires), Ok(()));
        assert_eq!(
            ok(304, &cc(&["max-age=60"])),
            Err(NotPushable::NotCacheable)
        );
        assert_eq!(ok(200, &cc(&["no-store"])), Err(NotPushable::NoStore));
        assert_eq!(
            ok(301, &cc(&["max-age=5, No-Store"])),
            Err(NotPushable::NoStore)
        );
        assert_eq!(
            ok(200, &cc(&["private"])),
            Ok(()),
            "the client's cache is private"
        );
        assert_eq!(ok(404, &none), Err(NotPushable::ErrorStatus));
        assert_eq!(ok(503, &cc(&["max-age=60"])), Err(NotPushable::ErrorStatus));
    }
}
