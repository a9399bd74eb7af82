//! The client-facing protocols: `h2` (the h2 crate directly, for push and 103) and `h1`
//! (hyper's HTTP/1.1 server, no push). What both need lives here.

pub mod h1;
pub mod h2;
pub mod tunnel;

use std::time::Duration;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use crate::learn::{Links, RouteLinks};
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
pub fn request_target(uri: &http::Uri) -> String {
    uri.path_and_query().map_or("/", |p| p.as_str()).to_owned()
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

/// SPEC §4: only final 2xx responses, except 204 and 206, to GET requests may push or teach.
pub fn may_push_final(method: &Method, status: http::StatusCode) -> bool {
    method == Method::GET
        && status.is_success()
        && status != http::StatusCode::NO_CONTENT
        && status != http::StatusCode::PARTIAL_CONTENT
}

/// SPEC §6: requests with `Sec-Fetch-Mode` other than `navigate` get no learned 103.
pub fn wants_learned_hints(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-mode") {
        None => true,
        Some(v) => v.as_bytes().eq_ignore_ascii_case(b"navigate"),
    }
}

/// The 103s of one request: at most one per distinct set of links (SPEC §5).
#[derive(Default)]
pub struct EarlyHints {
    /// An order-independent digest of each link set sent.
    sent: Vec<u64>,
    /// What each 103 sent came from, for the access log.
    pub sources: Vec<&'static str>,
}

impl EarlyHints {
    /// Whether a 103 with `hints` should go out: not empty, and not a set already sent (the
    /// set, not the order, identifies a 103; the 103 itself keeps the given order).
    pub fn admit(&mut self, hints: &[HeaderValue]) -> bool {
        if hints.is_empty() {
            return false;
        }
        let digest = set_digest(hints);
        if self.sent.contains(&digest) {
            return false;
        }
        self.sent.push(digest);
        true
    }

    pub fn sent(&mut self, source: crate::metrics::HintSource, metrics: &crate::metrics::Metrics) {
        metrics.early_hint(source);
        self.sources.push(source.as_str());
    }
}

/// Sum of per-value hashes over the distinct values: equal for equal sets in any order.
fn set_digest(hints: &[HeaderValue]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    hints
        .iter()
        .enumerate()
        .filter(|(i, h)| !hints[..*i].contains(h))
        .fold(0u64, |acc, (_, h)| {
            acc.wrapping_add(hasher.hash_one(h.as_bytes()))
        })
}

/// The hints a forwarded upstream 103 carries: its preloads, cleaned, same-origin or not.
pub fn upstream_hints(links: &RouteLinks) -> Vec<HeaderValue> {
    links.hints.iter().chain(&links.foreign).cloned().collect()
}

/// The final response's links (SPEC §4, §6): reused from the learned entry when the Link fields
/// are byte for byte the same (no parsing on the hot path), else classified anew; the learned
/// store is updated either way, so changed links replace the old ones.
pub fn final_links(
    app: &crate::app::App,
    route: String,
    learned: Option<Links>,
    headers: &HeaderMap,
    base: &RequestBase<'_>,
) -> Links {
    let fields = headers.get_all(http::header::LINK);
    let links = match learned {
        Some(l) if l.same_fields(fields.iter()) => l,
        _ => Arc::new(RouteLinks::classify(fields.iter(), base)),
    };
    if let Some(learn) = &app.learn {
        learn.learn(route, links.clone());
    }
    links
}

/// One access-log line per request (SPEC §7).
pub struct AccessLog<'a> {
    pub protocol: &'static str,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub started: std::time::Instant,
    pub pushed: &'a [String],
    /// How many of `pushed` were pushed from learned links, before the upstream answered.
    pub pushed_learned: usize,
    /// The source (`upstream`, `learned`) of each 103 sent.
    pub hinted: &'a [&'static str],
    pub error: Option<&'static str>,
}

impl AccessLog<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "linkpush::access",
            protocol = self.protocol,
            method = %self.method,
            path = self.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            pushed = %self.pushed.join(","),
            pushed_learned = self.pushed_learned,
            hinted = %self.hinted.join(","),
            error = self.error.unwrap_or(""),
        );
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
    fn one_103_per_distinct_link_set() {
        let mut hints = EarlyHints::default();
        let a = vec![
            HeaderValue::from_static("</a>; rel=preload"),
            HeaderValue::from_static("</b>; rel=preload"),
        ];
        let b_then_a = vec![a[1].clone(), a[0].clone()];
        assert!(!hints.admit(&[]));
        assert!(hints.admit(&a));
        assert!(!hints.admit(&b_then_a), "same set, other order");
        assert!(hints.admit(&a[..1]));
    }

    #[test]
    fn sec_fetch_mode_gates_learned_hints() {
        let mut h = HeaderMap::new();
        assert!(wants_learned_hints(&h));
        h.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(wants_learned_hints(&h));
        h.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!wants_learned_hints(&h));
    }
}
