//! What may be learned, and under which key (SPEC §6, issue 12 items 3–4). Pure.
//!
//! Enforced here (RFC 9111, as a shared cache would, because learned links reach other users):
//! - §5.2.2.5 / §5.2.2.7: nothing from a response with `Cache-Control: no-store` or `private`;
//! - §4.1: nothing from a response with `Vary: *` or a `Vary` naming `Cookie` or
//!   `Authorization` (the links may differ per user);
//! - §3.5: nothing from a request with `Authorization` unless the response is explicitly
//!   `public` (stricter than §3.5, which also admits `s-maxage` and `must-revalidate`:
//!   issue 12 asks for `public`).

use http::HeaderMap;

use crate::push::cache::CacheControl;

/// Why a response's links were not learned: the `reason` label of
/// `linkpush_learn_skipped_total` and the log field, through [`LearnSkip::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnSkip {
    /// `Cache-Control: private` (RFC 9111 §5.2.2.7).
    Private,
    /// `Cache-Control: no-store` (RFC 9111 §5.2.2.5).
    NoStore,
    /// `Vary: *`, or a `Vary` naming `Cookie` or `Authorization` (RFC 9111 §4.1).
    Vary,
    /// The request carried `Authorization` and the response is not `public` (RFC 9111 §3.5).
    Authorization,
    /// The path is under a `learn.exclude` prefix.
    Excluded,
    /// The route's cleaned links alone exceed `learn.max_bytes`.
    TooLarge,
}

impl LearnSkip {
    pub const ALL: [LearnSkip; 6] = [
        LearnSkip::Private,
        LearnSkip::NoStore,
        LearnSkip::Vary,
        LearnSkip::Authorization,
        LearnSkip::Excluded,
        LearnSkip::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LearnSkip::Private => "private",
            LearnSkip::NoStore => "no_store",
            LearnSkip::Vary => "vary",
            LearnSkip::Authorization => "authorization",
            LearnSkip::Excluded => "excluded",
            LearnSkip::TooLarge => "too_large",
        }
    }
}

/// Whether a final response's links may be learned (see the module docs for the RFC 9111
/// rules). `path` is the request's path and query; `exclude` the `learn.exclude` prefixes.
pub fn learnable(
    request_has_authorization: bool,
    path: &str,
    response: &HeaderMap,
    exclude: &[String],
) -> Result<(), LearnSkip> {
    if exclude
        .iter()
        .any(|prefix| path.starts_with(prefix.as_str()))
    {
        return Err(LearnSkip::Excluded);
    }
    let cc = CacheControl::of(response);
    if cc.no_store {
        return Err(LearnSkip::NoStore);
    }
    if cc.private {
        return Err(LearnSkip::Private);
    }
    let per_user = |name: &str| {
        let name = name.trim();
        name == "*"
            || name.eq_ignore_ascii_case("cookie")
            || name.eq_ignore_ascii_case("authorization")
    };
    let varies = response
        .get_all(http::header::VARY)
        .iter()
        // A Vary value that is not even visible ASCII cannot be trusted to name nothing.
        .any(|v| v.to_str().map_or(true, |v| v.split(',').any(per_user)));
    if varies {
        return Err(LearnSkip::Vary);
    }
    if request_has_authorization && !cc.public {
        return Err(LearnSkip::Authorization);
    }
    Ok(())
}

/// Query parameters that only say where a visitor came from: they never split a route.
const TRACKING_PARAMS: [&str; 2] = ["gclid", "fbclid"];

/// The key of a route: authority (lower-cased) and path with query, without the tracking
/// parameters (`utm_*`, `gclid`, `fbclid` and the operator's `learn.ignore_query`, names
/// compared ASCII case-insensitively); the other parameters keep their order and spelling.
pub fn route_key(authority: &str, path_and_query: &str, ignore_query: &[String]) -> String {
    let mut key = String::with_capacity(authority.len() + path_and_query.len());
    key.push_str(authority);
    key.make_ascii_lowercase();
    let Some((path, query)) = path_and_query.split_once('?') else {
        key.push_str(path_and_query);
        return key;
    };
    key.push_str(path);
    let tracking = |param: &str| {
        let name = param.split('=').next().unwrap_or(param);
        name.get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("utm_"))
            || TRACKING_PARAMS.iter().any(|t| t.eq_ignore_ascii_case(name))
            || ignore_query.iter().any(|t| t.eq_ignore_ascii_case(name))
    };
    let mut first = true;
    for param in query.split('&').filter(|p| !tracking(p)) {
        key.push(if first { '?' } else { '&' });
        key.push_str(param);
        first = false;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn route_key_lowercases_authority_and_drops_tracking_parameters() {
        let key = |pq: &str| route_key("Example.COM", pq, &["ref".to_owned()]);
        assert_eq!(key("/A?b=C"), "example.com/A?b=C");
        assert_eq!(key("/p"), "example.com/p");
        assert_eq!(key("/p?utm_source=x&UTM_Medium=y"), "example.com/p");
        assert_eq!(
            key("/p?a=1&gclid=z&b=2&fbclid&ref=t&c"),
            "example.com/p?a=1&b=2&c"
        );
        assert_eq!(
            key("/p?utm=1&utmx=2&xutm_a=3"),
            "example.com/p?utm=1&utmx=2&xutm_a=3"
        );
        assert_eq!(key("/p?"), "example.com/p?");
        assert_eq!(key("/p?&"), "example.com/p?&");
    }

    fn response(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn learns_only_what_a_shared_cache_could_store() {
        let exclude = ["/account/".to_owned(), "/api/".to_owned()];
        let check = |auth: bool, path: &str, fields: &[(&'static str, &'static str)]| {
            learnable(auth, path, &response(fields), &exclude)
        };
        assert_eq!(check(false, "/", &[]), Ok(()));
        assert_eq!(check(false, "/", &[("vary", "Accept-Encoding")]), Ok(()));
        assert_eq!(
            check(false, "/", &[("cache-control", "max-age=60")]),
            Ok(())
        );
        use LearnSkip::*;
        assert_eq!(
            check(false, "/", &[("cache-control", "Private")]),
            Err(Private)
        );
        assert_eq!(
            check(false, "/", &[("cache-control", "x, no-store")]),
            Err(NoStore)
        );
        assert_eq!(check(false, "/", &[("vary", "*")]), Err(Vary));
        assert_eq!(check(false, "/", &[("vary", "accept, Cookie")]), Err(Vary));
        assert_eq!(
            check(false, "/", &[("vary", "accept"), ("vary", "authorization")]),
            Err(Vary)
        );
        assert_eq!(check(true, "/", &[]), Err(Authorization));
        assert_eq!(
            check(true, "/", &[("cache-control", "max-age=60")]),
            Err(Authorization)
        );
        assert_eq!(
            check(true, "/", &[("cache-control", "public, max-age=60")]),
            Ok(())
        );
        assert_eq!(
            check(true, "/", &[("cache-control", "public, private")]),
            Err(Private)
        );
        assert_eq!(check(false, "/account/me", &[]), Err(Excluded));
        assert_eq!(check(false, "/api/x?y", &[]), Err(Excluded));
        assert_eq!(check(false, "/accounts", &[]), Ok(()));
    }

    #[test]
    fn skip_reason_labels() {
        let labels: Vec<_> = LearnSkip::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "private",
                "no_store",
                "vary",
                "authorization",
                "excluded",
                "too_large"
            ]
        );
    }
}
