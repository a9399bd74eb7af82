//! The client-facing protocols: `h2` (the h2 crate directly, for push and 103) and `h1`
//! (hyper's HTTP/1.1 server, no push). What both need lives here.

pub mod h1;
pub mod h2;
pub mod tunnel;

use std::time::Duration;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

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

/// SPEC §6, issue 12: only navigations get learned 103s — `Sec-Fetch-Mode: navigate`, or a
/// request that says `Sec-Fetch-Dest: document`. Every current browser sends them on
/// navigations (Fetch Metadata); curl, bots and load generators send neither and get none.
pub fn wants_learned_hints(headers: &HeaderMap) -> bool {
    let is = |name: &str, value: &[u8]| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(value))
    };
    is("sec-fetch-mode", b"navigate") || is("sec-fetch-dest", b"document")
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
    let digest = learn::fields_digest(early, fields.iter());
    let links = match learned {
        Some(l) if l.same_fields(digest) => l,
        _ if early.is_empty() => Arc::new(RouteLinks::classify(fields.iter(), base)),
        _ => Arc::new(
            RouteLinks::classify(fields.iter(), base)
                .with_early(&RouteLinks::classify(early, base), digest),
        ),
    };
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
