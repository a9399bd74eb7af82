//! The client-facing protocols: `h2` (the h2 crate directly, for push and 103) and `h1`
//! (hyper's HTTP/1.1 server, no push). What both need lives here.

mod access_log;
pub mod h1;
pub mod h2;
pub mod tunnel;

pub use access_log::AccessLog;

use std::time::Duration;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use crate::headers::Single;
use crate::learn::{self, Links, RouteLinks};
use crate::push::policy;
use crate::push::target::RequestBase;

/// Deadline for a TLS or HTTP/2 handshake and for a client's first request head.
pub fn handshake_timeout(idle: Duration) -> Duration {
    idle.min(Duration::from_secs(10))
}

/// The request's authority: `:authority` (HTTP/2) or an absolute-form target's (HTTP/1.1,
/// RFC 9112 §3.2.2), else `Host` (RFC 9113 §8.3.1 allows it on HTTP/2 too); validated by
/// [`crate::headers::request_authority`] (one Host, valid syntax, no userinfo, no disagreement).
pub fn request_authority(
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<String, crate::error::ProxyError> {
    crate::headers::request_authority(uri, headers)
}

/// The request target as the access log and the upstream see it: path and query.
pub fn request_target(uri: &http::Uri) -> http::uri::PathAndQuery {
    // A clone shares the URI's bytes: no copy per request.
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}

/// Logs a failed request at the level its side calls for: an upstream failure is the
/// operator's concern (warn), a client's is not (debug).
pub fn log_error(err: &crate::error::ProxyError) {
    match err.side() {
        crate::error::Side::Upstream => {
            tracing::warn!(error = %err, kind = err.kind(), "upstream error")
        }
        _ => tracing::debug!(error = %err, kind = err.kind(), "request failed"),
    }
}

/// Logs a failed request ([`log_error`]) and counts a client-side one in
/// `linkpush_client_errors_total{kind}` (upstream errors are counted where they happen, in
/// `upstream`).
pub fn report_error(metrics: &crate::metrics::Metrics, err: &crate::error::ProxyError) {
    log_error(err);
    if err.side() == crate::error::Side::Client {
        metrics.client_error(err.kind());
    }
}

/// Requests whose head was over SPEC §8's bound, which hyper (HTTP/1.1) or h2 (HTTP/2,
/// vendor/h2 PATCHES.md 6) answered 431 without handing them to us: counted in the requests
/// counter and as client errors, and logged, as if the handler had answered them.
pub fn heads_too_large(
    metrics: &crate::metrics::Metrics,
    protocol: crate::metrics::Protocol,
    n: u64,
) {
    let err = crate::error::ProxyError::HeaderTooLarge;
    for _ in 0..n {
        report_error(metrics, &err);
        if let Some(status) = err.status() {
            metrics.request(protocol, status.as_u16());
        }
    }
}

/// SPEC §4: only final 2xx responses, except 204 and 206, to GET requests may push or teach.
pub fn may_push_final(method: &Method, status: http::StatusCode) -> bool {
    method == Method::GET
        && status.is_success()
        && status != http::StatusCode::NO_CONTENT
        && status != http::StatusCode::PARTIAL_CONTENT
}

/// SPEC §6, issue 12: only navigations get learned 103s — `Sec-Fetch-Mode: navigate`, or a
/// request that says `Sec-Fetch-Dest: document`. Every current browser sends them on
/// navigations (Fetch Metadata); curl, bots and load generators send neither and get none.
pub fn wants_learned_hints(headers: &HeaderMap) -> bool {
    headers
        .iter()
        .any(|(name, value)| is_navigation(name, value))
}

/// Whether this one field says the request is a navigation ([`wants_learned_hints`]), for a
/// caller that looks at every field anyway.
pub fn is_navigation(name: &http::HeaderName, value: &HeaderValue) -> bool {
    // Names made once: comparing with a `&str` parses it on every call.
    static SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");
    static SEC_FETCH_DEST: http::HeaderName = http::HeaderName::from_static("sec-fetch-dest");
    let is = |v: &[u8]| value.as_bytes().trim_ascii().eq_ignore_ascii_case(v);
    (*name == SEC_FETCH_MODE && is(b"navigate")) || (*name == SEC_FETCH_DEST && is(b"document"))
}

/// The 103s of one request (SPEC §5): Chromium acts only on the first 103, so the first one
/// carries everything known, and a later one only links not hinted yet, or is not sent.
#[derive(Default)]
pub struct EarlyHints {
    /// The links hinted so far, each with the length of its [`policy::hint_key`] (found once:
    /// comparing keys is then a plain slice comparison).
    sent: Vec<(HeaderValue, usize)>,
    /// What each 103 sent came from, for the access log.
    pub sources: Vec<&'static str>,
    /// The set last admitted, until [`EarlyHints::sent`] confirms it went out.
    admitted: Vec<HeaderValue>,
    /// The links of every 103 sent, for the access log.
    links: Vec<HeaderValue>,
}

impl EarlyHints {
    /// The links of `hints` this request has not hinted yet (each once), now counted as
    /// hinted; empty when a 103 would say nothing new.
    pub fn admit<'a>(
        &mut self,
        hints: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Vec<HeaderValue> {
        let mut fresh = Vec::new();
        for hint in hints {
            let key = policy::hint_key(hint.as_bytes());
            if !self
                .sent
                .iter()
                .any(|(s, n)| s.as_bytes().get(..*n) == Some(key))
            {
                self.sent.push((hint.clone(), key.len()));
                fresh.push(hint.clone());
            }
        }
        self.admitted.clear();
        self.admitted.extend_from_slice(&fresh);
        fresh
    }

    /// Links the client gets another way (promised on this stream or connection): counted as
    /// hinted, so no 103 of this request announces them.
    pub fn covered<'a>(&mut self, links: impl IntoIterator<Item = &'a HeaderValue>) {
        self.admit(links);
    }

    pub fn sent(&mut self, source: crate::metrics::HintSource, metrics: &crate::metrics::Metrics) {
        metrics.early_hint(source);
        self.sources.push(source.as_str());
        self.links.append(&mut self.admitted);
    }

    /// The targets of the links sent in 103s, comma-separated, for the access log.
    pub fn hinted_paths(&self) -> impl std::fmt::Display + '_ {
        LinkTargets(&self.links)
    }
}

/// `</a.css>; rel=preload, </b.js>; …` → `/a.css,/b.js`: the URI-references of link values.
struct LinkTargets<'a>(&'a [HeaderValue]);

impl std::fmt::Display for LinkTargets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, value) in self.0.iter().enumerate() {
            let text = String::from_utf8_lossy(value.as_bytes());
            // Hint values are built by `RouteLinks`: `<target>` comes first.
            let target = text
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map_or(text.as_ref(), |(target, _)| target);
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(target)?;
        }
        Ok(())
    }
}

/// The final response's links (SPEC §4, §6), together with those of the response's own 103s
/// (`early`): reused from the learned entry when all these Link fields are byte for byte the
/// same (no parsing on the hot path), else classified anew. They are learned for the route if
/// a shared cache could store the response (RFC 9111; see `learn::learnable`), else the skip
/// is counted.
pub fn final_links(
    app: &crate::app::App,
    route: String,
    learned: Option<Links>,
    early: &[HeaderValue],
    headers: &HeaderMap,
    base: &RequestBase<'_>,
    request_has_authorization: bool,
) -> Links {
    let fields = headers.get_all(http::header::LINK);
    // Most responses (assets) carry no links, on a route with nothing learned (`learned` is
    // looked up for every GET, and expired entries are dropped then): nothing to classify,
    // learn or forget. Callgrind: classifying, the checks and the store's lock and lookup were
    // ~1,000 instructions per asset.
    if learned.is_none() && early.is_empty() && fields.iter().next().is_none() {
        return learn::no_links();
    }
    let had_learned = learned.is_some();
    let links = match learned {
        Some(l) if l.same_fields(early, fields.iter()) => l,
        _ if early.is_empty() => Arc::new(RouteLinks::classify(fields.iter(), base)),
        _ => Arc::new(RouteLinks::classify(fields.iter(), base).with_early(
            &RouteLinks::classify(early, base),
            learn::FieldsSeen::of(early, fields.iter()),
        )),
    };
    // Links that all classify to nothing (a `rel=canonical`), on a route with nothing learned:
    // nothing to learn or forget either.
    if links.is_empty() && !had_learned {
        return links;
    }
    if let Some(store) = &app.learn {
        let exclude = &app.config.learn.exclude;
        match learn::learnable(
            request_has_authorization,
            base.path_and_query,
            headers,
            exclude,
        ) {
            Ok(()) => store.learn(route, links.clone()),
            // Nothing to learn is not a skip worth counting.
            Err(_) if links.is_empty() => {}
            Err(reason) => {
                tracing::debug!(route = %route, reason = reason.as_str(), "links not learned");
                app.metrics.learn_skipped(reason);
            }
        }
    }
    links
}

/// `X-Request-Id`: kept from the client when sane, else generated; forwarded upstream and logged.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The longest client `X-Request-Id` kept (a UUID is 36; some tracers use 64).
const MAX_REQUEST_ID: usize = 128;

/// A request's id: logged, and sent upstream as `X-Request-Id` (see [`Forward::request_id`]).
#[derive(Clone, Debug, PartialEq)]
pub enum RequestId {
    /// The client's single `X-Request-Id`, when it is 1–128 visible ASCII characters (it lands
    /// in logs verbatim, so no spaces, no control characters, bounded): forwarded as it came.
    Given(HeaderValue),
    /// Made here ([`new_request_id`]); it replaces the client's fields, if any, upstream.
    Made([u8; 16]),
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        match self {
            // `Given` holds visible ASCII only; `Made`, hex digits.
            RequestId::Given(v) => v.to_str().unwrap_or(""),
            RequestId::Made(hex) => std::str::from_utf8(hex).unwrap_or(""),
        }
    }
}

/// The request's id from its X-Request-Id fields (found by [`RequestInfo::take`]'s pass): the
/// client's, when sane, else a new one. The client's map is left as it is; a made id is written
/// in place of the client's fields as the upstream request's head is (no insert into the map per
/// request: callgrind, ~300 instructions).
fn request_id_of(given: Single<'_>) -> RequestId {
    if let (Some(id), false) = (given.first, given.more) {
        let bytes = id.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return RequestId::Given(id.clone());
        }
    }
    RequestId::Made(new_request_id())
}

/// 16 hex characters, unique within the process: a counter through a bijective mixer
/// (SplitMix64's finaliser), seeded per process so ids differ across restarts. No syscall,
/// no lock: one atomic add.
fn new_request_id() -> [u8; 16] {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        // RandomState's keys come from the OS once per process.
        RandomState::new().hash_one(std::process::id())
    });
    let mut z = seed.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((z >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// What the access log needs from a request head, taken before the head is handed on.
pub struct RequestInfo {
    pub method: Method,
    /// Path and query, as the upstream sees it.
    pub path: http::uri::PathAndQuery,
    pub host: String,
    pub user_agent: Option<HeaderValue>,
    pub request_id: RequestId,
    pub started: crate::clock::Stamp,
}

impl RequestInfo {
    /// Reads the head, and its `X-Request-Id` (see [`request_id_of`]).
    pub fn take<B>(req: &mut http::Request<B>) -> Self {
        let started = crate::clock::stamp();
        // No `reserve` for what the proxy adds (the request id here; Host and X-Forwarded-* for
        // the upstream, five fields at most): reserving six grew the map whenever its length
        // plus six passed its capacity, which a later insert passes less often (callgrind,
        // h2load's requests: 59,859 -> 59,519 instructions on /small.txt, 83,723 -> 82,919 on
        // /index.html).
        // The three fields it reads, found in one pass over the fields rather than a lookup
        // each (a lookup of a name the request does not have costs as much as one that finds it).
        let (mut hosts, mut ids, mut user_agent) = (Single::default(), Single::default(), None);
        for (name, value) in req.headers() {
            if name == http::header::HOST {
                hosts.see(value);
            } else if name == X_REQUEST_ID {
                ids.see(value);
            } else if name == http::header::USER_AGENT && user_agent.is_none() {
                user_agent = Some(value.clone());
            }
        }
        RequestInfo {
            method: req.method().clone(),
            path: request_target(req.uri()),
            host: crate::headers::authority_of(req.uri(), hosts).unwrap_or_default(),
            user_agent,
            request_id: request_id_of(ids),
            started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn only_get_2xx_but_204_206_push() {
        assert!(may_push_final(&Method::GET, StatusCode::OK));
        assert!(!may_push_final(&Method::HEAD, StatusCode::OK));
        assert!(!may_push_final(&Method::POST, StatusCode::OK));
        assert!(!may_push_final(&Method::GET, StatusCode::NO_CONTENT));
        assert!(!may_push_final(&Method::GET, StatusCode::PARTIAL_CONTENT));
        assert!(!may_push_final(&Method::GET, StatusCode::NOT_MODIFIED));
        assert!(!may_push_final(&Method::GET, StatusCode::NOT_FOUND));
    }

    #[test]
    fn a_later_103_carries_only_links_not_hinted_yet() {
        let mut hints = EarlyHints::default();
        let v = |s: &'static str| HeaderValue::from_static(s);
        let first = [
            v("</a>; rel=preload; as=style"),
            v("<https://c>; rel=preconnect"),
        ];
        assert!(hints.admit(&[]).is_empty());
        assert_eq!(hints.admit(&first), first);
        let later = [
            v("</a>; rel=preload"),
            v("<https://c>; rel=preconnect; crossorigin"),
            v("</b>; rel=preload"),
            v("</b>; rel=preload"),
        ];
        assert_eq!(hints.admit(&later), [v("</b>; rel=preload")]);
        assert!(hints.admit(&later).is_empty(), "nothing new: no 103");
        assert_eq!(
            hints.admit(&[v("</a>; rel=preconnect")]).len(),
            1,
            "another rel"
        );
    }

    #[test]
    fn hinted_paths_are_the_targets_of_the_103s_sent() {
        let metrics = crate::metrics::Metrics::new();
        let mut hints = EarlyHints::default();
        let a = [
            HeaderValue::from_static("</a.css>; rel=preload; as=style"),
            HeaderValue::from_static("<https://cdn.example/b.js>; rel=preload; as=script"),
        ];
        assert!(!hints.admit(&a).is_empty());
        hints.sent(crate::metrics::HintSource::Learned, &metrics);
        // Admitted but never sent (the 103 failed): not logged.
        assert!(
            !hints
                .admit(&[HeaderValue::from_static("</c.css>; rel=preload")])
                .is_empty()
        );
        assert_eq!(
            hints.hinted_paths().to_string(),
            "/a.css,https://cdn.example/b.js"
        );
        assert_eq!(hints.sources, ["learned"]);
    }

    /// The request's id as `RequestInfo::take` finds it, from a lookup.
    fn request_id(headers: &HeaderMap) -> RequestId {
        request_id_of(Single::of(headers, &X_REQUEST_ID))
    }

    #[test]
    fn a_sane_request_id_is_kept_and_others_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, "abc-123_XYZ".parse().unwrap());
        let kept = request_id(&h);
        assert_eq!(
            kept,
            RequestId::Given(HeaderValue::from_static("abc-123_XYZ"))
        );
        assert_eq!(kept.as_str(), "abc-123_XYZ");
        let made = |h: &HeaderMap| {
            let id = request_id(h);
            assert!(matches!(id, RequestId::Made(_)), "kept {id:?}");
            assert_eq!(id.as_str().len(), 16, "{id:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
        };
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, bad.parse().unwrap());
            made(&h);
        }
        let mut two = HeaderMap::new();
        two.append(X_REQUEST_ID, "a".parse().unwrap());
        two.append(X_REQUEST_ID, "b".parse().unwrap());
        made(&two);
        made(&HeaderMap::new());
    }

    /// `RequestInfo::take` finds Host, X-Request-Id and User-Agent in one pass: it must agree
    /// with the lookups `request_authority`, `request_id` and `get` on every mix of them.
    #[test]
    fn request_info_agrees_with_the_lookups() {
        let fields: [(&str, &[&str]); 4] = [
            ("host", &["a.example", "b.example", "bad host"]),
            ("x-request-id", &["id-1", "id-2", "has space"]),
            ("user-agent", &["ua/1", "ua/2"]),
            ("accept", &["*/*"]),
        ];
        // Every combination of none, one or two values of each field, in either order.
        let mut cases = vec![Vec::new()];
        for (name, values) in fields {
            let mut next = Vec::new();
            for case in &cases {
                next.push(case.clone());
                for v in values {
                    let mut one = case.clone();
                    one.push((name, *v));
                    next.push(one.clone());
                    one.push((name, values[0]));
                    next.push(one);
                }
            }
            cases = next;
        }
        assert_eq!(cases.len(), 7 * 7 * 5 * 3);
        let reversed = cases
            .iter()
            .map(|c| c.iter().rev().copied().collect::<Vec<_>>());
        let all: Vec<_> = cases.iter().cloned().chain(reversed).collect();
        for case in all {
            for uri in ["/p", "http://t.example/p"] {
                let mut req = http::Request::get(uri).body(()).expect("request");
                for (name, value) in &case {
                    req.headers_mut()
                        .append(*name, HeaderValue::from_static(value));
                }
                let info = RequestInfo::take(&mut req);
                let headers = req.headers();
                let host = request_authority(req.uri(), headers).unwrap_or_default();
                assert_eq!(info.host, host, "{case:?} {uri}");
                let user_agent = headers.get(http::header::USER_AGENT);
                assert_eq!(info.user_agent.as_ref(), user_agent, "{case:?}");
                match (info.request_id, request_id(headers)) {
                    (RequestId::Given(a), RequestId::Given(b)) => assert_eq!(a, b, "{case:?}"),
                    (RequestId::Made(_), RequestId::Made(_)) => {}
                    (a, b) => panic!("{case:?}: {a:?} against {b:?}"),
                }
            }
        }
    }

    #[test]
    fn generated_request_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn only_navigations_get_learned_hints() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, HeaderValue::from_static(v));
            }
            wants_learned_hints(&h)
        };
        assert!(!with(&[]), "curl, bots, h2load");
        assert!(with(&[("sec-fetch-mode", "navigate")]));
        assert!(with(&[("sec-fetch-mode", "Navigate")]));
        assert!(!with(&[("sec-fetch-mode", "cors")]));
        assert!(!with(&[
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "script")
        ]));
        assert!(with(&[("sec-fetch-dest", "document")]));
        assert!(with(&[
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "document")
        ]));
    }
}
