//! Promise → fetch → send → complete, reset or cancel: one pushed response's life, and the
//! per-connection state that decides whether a promise may be made at all (see
//! docs/push-lifecycle.md).
//!
//! Enforces RFC 9113 §8.4: promises only on client-initiated streams (h2's `SendResponse` is
//! the only handle that can promise, and pushed streams have none), never after the client
//! disabled push, and never more pushed streams than the client's SETTINGS_MAX_CONCURRENT_STREAMS.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::server::{SendPushedResponse, SendResponse};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use lru::LruCache;
use tracing::debug;

use super::Work;
use super::body::{SendError, send_body};
use super::digest::ConnPushes;
use crate::app::App;
use crate::learn::Links;
use crate::metrics::{Metrics, PushOutcome};
use crate::push::digest::{self, Digest, Key};
use crate::push::policy::{Preload, SkipReason};
use crate::upstream::{ClientContext, Forward};

/// Per-connection push state, shared by the connection's streams (all run by the connection's
/// task, so its locks and atomics are never contended).
pub struct PushState {
    /// Push is allowed until the first `push_request` error: h2 then tells us, opaquely, that
    /// the client sent SETTINGS_ENABLE_PUSH = 0 (RFC 9113 §6.5.2), and we stop trying.
    enabled: AtomicBool,
    /// URLs (scheme, authority, path and query) already promised on this connection.
    /// Created on the first push: the `lru` crate allocates its whole capacity up front, and
    /// most connections (browsers refuse push) never need it.
    pushed: Mutex<Option<LruCache<String, ()>>>,
    lru_capacity: NonZeroUsize,
    open: AtomicUsize,
    /// The client's SETTINGS_MAX_CONCURRENT_STREAMS, as h2 last reported it.
    peer_max_streams: AtomicUsize,
    max_concurrent_pushes: usize,
    /// Pushes started by a stream and not yet taken by the connection's loop, which runs them
    /// beside its streams: a pushed stream counts as the connection's work until it is
    /// completed or reset, for the idle timeout and for draining.
    started: Mutex<Vec<Work>>,
    /// Whether `started` holds any, so that the loop's check after each turn takes no lock
    /// (~65 instructions, two or three times a request). Set and cleared with the lock held.
    any_started: AtomicBool,
    /// What this connection promised, for the cache digest cookie.
    pub digest: ConnPushes,
}

impl PushState {
    pub fn new(enabled: bool, lru_capacity: NonZeroUsize, max_concurrent_pushes: usize) -> Self {
        PushState {
            started: Mutex::new(Vec::new()),
            any_started: AtomicBool::new(false),
            enabled: AtomicBool::new(enabled),
            pushed: Mutex::new(None),
            lru_capacity,
            open: AtomicUsize::new(0),
            peer_max_streams: AtomicUsize::new(usize::MAX),
            max_concurrent_pushes,
            digest: ConnPushes::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn was_pushed(&self, url: &str) -> bool {
        let pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        pushed.as_ref().is_some_and(|lru| lru.contains(url))
    }

    fn remember(&self, url: String) {
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        pushed
            .get_or_insert_with(|| LruCache::new(self.lru_capacity))
            .put(url, ());
    }

    /// Hands a push to the connection's loop (`front::h2::poll_work`).
    fn start(&self, push: Work) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.push(push);
        self.any_started.store(true, Ordering::Release);
    }

    /// The pushes started since the last call, for the connection's loop to run.
    pub(super) fn take_started(&self) -> Vec<Work> {
        if !self.any_started.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        self.any_started.store(false, Ordering::Release);
        std::mem::take(&mut *started)
    }

    /// Push stays off for the connection: its client takes none (its SETTINGS_ENABLE_PUSH,
    /// vendor/h2 PATCHES.md 14; every browser today), or a promise failed. Its requests then
    /// skip preparing pushes (the request fields a promise copies, the digest cookie).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    pub fn set_peer_max_streams(&self, n: usize) {
        self.peer_max_streams.store(n, Ordering::Relaxed);
    }

    /// A slot for one pushed stream, or `None` when the connection has as many as it may.
    ///
    /// A pushed stream that finds no MAX_CONCURRENT_STREAMS slot waits in h2's `pending_open`
    /// (safe since vendor/h2 PATCHES.md 2: a client RST_STREAM there is a stream event), but a
    /// push that cannot start soon is worth less than the capacity it reserves: the slot is
    /// taken before the PUSH_PROMISE and held until the pushed stream is done, and a push that
    /// finds none is skipped (reason `limit`).
    fn try_reserve(self: &Arc<Self>) -> Option<PushSlot> {
        let limit = self
            .max_concurrent_pushes
            .min(self.peer_max_streams.load(Ordering::Relaxed));
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| PushSlot {
                state: self.clone(),
            })
    }
}

struct PushSlot {
    state: Arc<PushState>,
}

impl Drop for PushSlot {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one response's pushes need to know about its request.
pub struct PushRequest<'a> {
    pub app: &'a Arc<App>,
    pub state: &'a Arc<PushState>,
    pub client: &'a ClientContext,
    pub scheme: &'static str,
    pub authority: &'a str,
    /// The configured `push.request_headers`, copied from the client's request.
    pub headers: &'a HeaderMap,
    /// The client's cache digest cookie, decoded (`push.cache_digest`).
    pub digest: Option<&'a Digest>,
}

/// Tallies what was pushed for one response, across its early (103, learned) and final links.
#[derive(Default)]
pub struct PushLog {
    pub promised: Vec<String>,
    pub made: usize,
    /// Paths already decided for this response, with whether the client has each coming: a
    /// link seen in a learned set or an upstream 103 and again in the final Link fields is
    /// decided (and counted) once.
    decided: Vec<(String, bool)>,
    /// A learned list decided whole by [`skip_all`], for a client that takes no pushes: its
    /// paths are in `decided` in effect (none coming), copied there only if another list is
    /// decided for the same response.
    skipped: Option<Links>,
}

impl PushLog {
    /// Whether `path` was decided before for this response, and if so whether the client has
    /// it coming. Call `unfold` first.
    fn earlier(&self, path: &str) -> Option<bool> {
        self.decided
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, coming)| *coming)
    }

    /// Copies the paths of a list [`skip_all`] kept whole into `decided`, before another
    /// list is decided against them.
    fn unfold(&mut self) {
        if let Some(links) = self.skipped.take() {
            for preload in &links.preloads {
                if !self.decided.iter().any(|(p, _)| *p == preload.path) {
                    self.decided.push((preload.path.clone(), false));
                }
            }
        }
    }
}

/// What became of one preload link when asked to push it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Promised,
    Skipped(SkipReason),
    /// Already decided earlier for the same response; not counted again. `coming`: that
    /// earlier decision gets the asset to the client as a push (see [`Decision::is_coming`]).
    Repeated {
        coming: bool,
    },
}

impl Decision {
    /// The client gets this asset as a push — promised now or earlier on this response, or
    /// already on this connection, or fresh in its cache — so a 103 need not announce it. A
    /// link skipped for any other reason (push off for this client, limits) still needs its
    /// hint, also when the upstream's 103 repeats a learned link decided that way.
    pub fn is_coming(self) -> bool {
        match self {
            Decision::Promised | Decision::Skipped(SkipReason::Duplicate | SkipReason::Cached) => {
                true
            }
            Decision::Skipped(_) => false,
            Decision::Repeated { coming } => coming,
        }
    }
}

/// Promises each pushable preload on the parent stream, in order, and starts its fetch. Must
/// be called before the parent's response HEADERS (RFC 9113 §8.4.1: the promise precedes the
/// frames that refer to the pushed resource). Returns one decision per preload.
pub fn promise_all(
    req: &PushRequest<'_>,
    respond: &mut SendResponse<Bytes>,
    preloads: &[Preload],
    log: &mut PushLog,
) -> Vec<Decision> {
    log.unfold();
    let config = &req.app.config.push;
    let metrics = &req.app.metrics;
    preloads
        .iter()
        .map(|preload| {
            if let Some(coming) = log.earlier(&preload.path) {
                return Decision::Repeated { coming };
            }
            let decision =
                decide_and_promise(req, respond, preload, log, config.max_pushes_per_response);
            log.decided
                .push((preload.path.clone(), decision.is_coming()));
            if let Decision::Skipped(reason) = decision {
                metrics.push_skipped(reason);
            }
            decision
        })
        .collect()
}

/// What [`promise_all`] decides for a client that takes no pushes (`PushState::is_enabled`
/// false: every browser, h2load): each link `Nopush` or `ClientDisabled`, or `Repeated` when
/// decided before for this response or earlier in the list, counted the same. The list is kept
/// whole in the log (an `Arc`) instead of a copy of each path; a later list for the same
/// response (an upstream 103) is decided against it as before, once `unfold` has copied its
/// paths. Callgrind (`benches/instructions.sh`, a page with five preloads, h2load's client
/// refusing push): 46,565 instructions per request against 47,547 with the five copies.
pub fn skip_all(links: &Links, log: &mut PushLog, metrics: &Metrics) -> Vec<Decision> {
    // A list kept whole before this one (not the case from `Stream`, which decides the learned
    // list first) becomes ordinary entries, so that `skipped` can hold this one.
    log.unfold();
    let preloads = &links.preloads;
    let decisions = preloads
        .iter()
        .enumerate()
        .map(|(i, preload)| {
            if let Some(coming) = log.earlier(&preload.path) {
                return Decision::Repeated { coming };
            }
            if preloads[..i].iter().any(|p| p.path == preload.path) {
                return Decision::Repeated { coming: false };
            }
            let reason = skip_reason(preload);
            metrics.push_skipped(reason);
            Decision::Skipped(reason)
        })
        .collect();
    log.skipped = Some(links.clone());
    decisions
}

/// Why a link is not pushed when it is `nopush` or the client takes no pushes: SPEC §4 rule 1
/// (`nopush` forbids push; the link is still hinted) comes first.
fn skip_reason(preload: &Preload) -> SkipReason {
    if preload.nopush {
        SkipReason::Nopush
    } else {
        SkipReason::ClientDisabled
    }
}

fn decide_and_promise(
    req: &PushRequest<'_>,
    respond: &mut SendResponse<Bytes>,
    preload: &Preload,
    log: &mut PushLog,
    max_per_response: usize,
) -> Decision {
    if preload.nopush || !req.state.is_enabled() {
        return Decision::Skipped(skip_reason(preload));
    }
    // Rule 3: never the same URL twice on one connection.
    let key = format!(
        "{}://{}{}",
        req.scheme,
        req.authority.to_ascii_lowercase(),
        preload.path
    );
    if req.state.was_pushed(&key) {
        return Decision::Skipped(SkipReason::Duplicate);
    }
    // Rule 3 across connections: the client's cache digest says it still has a fresh copy.
    let url_hash = req
        .app
        .config
        .push
        .cache_digest
        .then(|| digest::url_hash(&key));
    if let (Some(hash), Some(cached)) = (url_hash, req.digest)
        && cached.contains(Key::from_hash(hash))
    {
        return Decision::Skipped(SkipReason::Cached);
    }
    // Rule 4, and the client's concurrency limit.
    if log.made >= max_per_response {
        return Decision::Skipped(SkipReason::Limit);
    }
    let Some(slot) = req.state.try_reserve() else {
        return Decision::Skipped(SkipReason::Limit);
    };
    // h2 requires an absolute URI in a promised request (`https://authority/path`); a bare
    // path makes clients reject the PUSH_PROMISE.
    let Ok(uri) = http::Uri::try_from(key.as_str()) else {
        return Decision::Skipped(SkipReason::Invalid);
    };
    let mut promised = Request::builder().method(Method::GET).uri(uri);
    if let Some(h) = promised.headers_mut() {
        h.extend(req.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let Ok(promised) = promised.body(()) else {
        return Decision::Skipped(SkipReason::Invalid);
    };
    match respond.push_request(promised) {
        Ok(pushed) => {
            if let Some(hash) = url_hash {
                let origin = &key[..key.len() - preload.path.len()];
                let now = req.app.push_freshness.clock.now();
                req.state.digest.promised(origin, hash, now);
            }
            req.state.remember(key);
            log.made += 1;
            log.promised.push(preload.path.clone());
            req.app.metrics.push(PushOutcome::Promised);
            let fetch = fetch_request(req, &preload.path);
            // Pushes count against the connection's share of the upstream like its requests.
            let share = req.client.upstream_share.clone();
            let mut done = Done {
                app: req.app.clone(),
                outcome: PushOutcome::Cancelled,
                _slot: slot,
            };
            req.state.start(Box::pin(async move {
                let outcome = run(done.app.clone(), pushed, fetch, url_hash, share).await;
                done.finished(outcome);
            }));
            Decision::Promised
        }
        // The promised request's header list is over the client's SETTINGS_MAX_HEADER_LIST_SIZE
        // (vendor/h2 PATCHES.md 7): nothing was sent; only this push is skipped.
        Err(err) if err.is_header_list_too_large() => {
            debug!(error = %err, path = %preload.path, "push_request refused");
            Decision::Skipped(SkipReason::ClientDisabled)
        }
        Err(err) => {
            // Otherwise the error is opaque: SETTINGS_ENABLE_PUSH = 0, or a GOAWAY was sent or
            // received (vendor/h2 PATCHES.md 4, RFC 9113 §6.8). Either way no later promise on
            // this connection can succeed: stop pushing on it.
            debug!(error = %err, "push_request failed; push disabled for this connection");
            req.state.disable();
            Decision::Skipped(SkipReason::ClientDisabled)
        }
    }
}

/// Records a push's outcome and frees its slot when the push ends. A push dropped unfinished
/// (the connection's closing deadline, or the connection gone) is `Cancelled`: dropping it
/// dropped `pushed`, and h2 resets the promised stream (RST_STREAM CANCEL), so it is never left
/// open when the connection closes.
struct Done {
    app: Arc<App>,
    outcome: PushOutcome,
    _slot: PushSlot,
}

impl Done {
    fn finished(&mut self, outcome: PushOutcome) {
        self.outcome = outcome;
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.app.metrics.push(self.outcome);
    }
}

/// The upstream request for a pushed asset: GET with only the configured request headers,
/// forwarded as the parent request is.
fn fetch_request(
    req: &PushRequest<'_>,
    path: &str,
) -> Option<(Request<crate::upstream::RequestBody>, Forward<'static>)> {
    let uri = req.app.upstream.uri_for_path(path).ok()?;
    let mut fetch = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .ok()?;
    *fetch.headers_mut() = req.headers.clone();
    Some((fetch, Forward::new(req.authority, req.client).into_owned()))
}

/// Fetches the asset and sends it on the pushed stream. The fetch runs concurrently with the
/// parent response; when the client resets the pushed stream the fetch is dropped at once.
async fn run(
    app: Arc<App>,
    mut pushed: SendPushedResponse<Bytes>,
    fetch: Option<(Request<crate::upstream::RequestBody>, Forward<'static>)>,
    url_hash: Option<u64>,
    share: crate::upstream::ClientShare,
) -> PushOutcome {
    let Some((fetch, forward)) = fetch else {
        pushed.send_reset(h2::Reason::CANCEL);
        return PushOutcome::Failed;
    };
    let max = app.config.push.max_asset_bytes;
    let upstream = app.upstream.send_for(&share, fetch, forward, None);
    tokio::pin!(upstream);
    let response = tokio::select! {
        res = &mut upstream => res,
        _ = std::future::poll_fn(|cx| pushed.poll_reset(cx)) => return PushOutcome::Cancelled,
    };
    let response = match response {
        Ok(r) => r,
        Err(err) => {
            debug!(error = %err, "push fetch failed");
            pushed.send_reset(h2::Reason::CANCEL);
            return PushOutcome::Failed;
        }
    };
    let (parts, body) = response.into_parts();
    // SPEC §4: a 4xx/5xx asset is reset, not pushed; so is one the client may not store
    // (no-store, or not cacheable: docs/push-lifecycle.md). 3xx are pushed as they are.
    if let Err(why) = crate::push::cache::pushable_response(parts.status, &parts.headers) {
        debug!(
            status = parts.status.as_u16(),
            reason = why.as_str(),
            "asset not pushed"
        );
        if why != crate::push::cache::NotPushable::ErrorStatus {
            app.metrics.push_skipped(SkipReason::NotCacheable);
        }
        pushed.send_reset(h2::Reason::CANCEL);
        return PushOutcome::Failed;
    }
    let too_large = content_length(&parts.headers).is_some_and(|n| n > max);
    if too_large {
        pushed.send_reset(h2::Reason::CANCEL);
        return PushOutcome::Failed;
    }
    if let Some(hash) = url_hash {
        app.push_freshness.record(hash, &parts.headers);
    }
    // Connection-specific fields are gone already (the upstream connection's parser).
    let mut head = Response::new(());
    *head.status_mut() = parts.status;
    *head.headers_mut() = parts.headers;
    let end = http_body::Body::is_end_stream(&body);
    // Queued on the pushed stream; h2 writes it after the PUSH_PROMISE and, being a pushed
    // stream, after the frames of client streams that are ready (vendor/h2 PATCHES.md 1, 3).
    let mut stream = match pushed.send_response(head, end) {
        Ok(s) => s,
        // A head over the client's SETTINGS_MAX_HEADER_LIST_SIZE (vendor/h2 PATCHES.md 7):
        // nothing was sent, and the promised stream is reset instead.
        Err(err) if err.is_header_list_too_large() => {
            debug!(error = %err, "pushed response not sent");
            pushed.send_reset(h2::Reason::CANCEL);
            return PushOutcome::Failed;
        }
        // The client reset the promise before the head went out, or the connection is gone.
        Err(_) => return PushOutcome::Cancelled,
    };
    if end {
        return PushOutcome::Completed;
    }
    let stall = app.config.server.idle_timeout.max(Duration::from_secs(1));
    match send_body(&mut stream, body, Some(max), stall).await {
        Ok(n) => {
            app.metrics.pushed_bytes(n);
            PushOutcome::Completed
        }
        Err(SendError::ClientReset(_)) => PushOutcome::Cancelled,
        Err(err) => {
            debug!(error = %err, "pushed body failed");
            stream.send_reset(h2::Reason::CANCEL);
            PushOutcome::Failed
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::learn::RouteLinks;
    use crate::push::target::RequestBase;

    fn links(values: &[&'static str]) -> Links {
        let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
        let base = RequestBase {
            scheme: "https",
            authority: "h",
            path_and_query: "/",
        };
        Arc::new(RouteLinks::classify(&values, &base))
    }

    fn skipped(metrics: &Metrics, reason: &str) -> String {
        let name = format!("linkpush_push_skipped_total{{reason=\"{reason}\"}} ");
        let text = metrics.render();
        let line = text.lines().find(|l| l.starts_with(&name));
        line.map_or_else(
            || format!("no {name}in {text}"),
            |l| l[name.len()..].to_owned(),
        )
    }

    /// `skip_all` decides as `promise_all` would for a client that refuses push: each path once
    /// per response, whether it repeats within a list, in a later list, or matches a path an
    /// earlier decision left coming; and it keeps a list whole until another is decided.
    #[test]
    fn skip_all_decides_each_path_once_per_response() {
        use Decision::{Repeated, Skipped};
        let metrics = Metrics::new();
        let mut log = PushLog::default();

        // Parsing keeps one link per path; a list with a path twice is made by hand.
        let mut first = links(&["</a.css>; rel=preload", "</b.js>; rel=preload; nopush"]);
        let again = first.preloads[0].clone();
        Arc::get_mut(&mut first)
            .expect("one owner")
            .preloads
            .push(again);
        let decisions = skip_all(&first, &mut log, &metrics);
        assert_eq!(
            decisions,
            [
                Skipped(SkipReason::ClientDisabled),
                Skipped(SkipReason::Nopush),
                Repeated { coming: false },
            ]
        );
        assert!(log.decided.is_empty(), "the first list is kept whole");

        let second = links(&["</c.css>; rel=preload", "</a.css>; rel=preload"]);
        let decisions = skip_all(&second, &mut log, &metrics);
        assert_eq!(
            decisions,
            [
                Skipped(SkipReason::ClientDisabled),
                Repeated { coming: false }
            ]
        );
        assert_eq!(log.decided.len(), 2, "the first list unfolded: a.css, b.js");

        // As a promise made earlier for this response would leave it.
        log.decided.push(("/d.css".to_owned(), true));
        let third = links(&["</d.css>; rel=preload", "</c.css>; rel=preload"]);
        let decisions = skip_all(&third, &mut log, &metrics);
        assert_eq!(
            decisions,
            [Repeated { coming: true }, Repeated { coming: false }]
        );
        assert_eq!(skipped(&metrics, "client_disabled"), "2");
        assert_eq!(skipped(&metrics, "nopush"), "1");
    }
}
