//! One client-initiated HTTP/2 stream: learned hints, upstream 103s, pushes from the final Link
//! fields, and the response body through the one send loop.
//!
//! Order within a stream (RFC 9113 §8.4.1, RFC 8297): learned pushes / 103 → upstream request →
//! upstream 103s forwarded and their links pushed as they arrive → PUSH_PROMISEs for the final
//! response's links → final HEADERS → body. Every promise precedes the HEADERS of the response
//! that carries its link, and the response is never held back while assets are fetched.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tracing::debug;

use super::body::{H2RequestBody, SendError, send_body_counted};
use super::push::{Decision, PushLog, PushRequest, PushState, promise_all, skip_all};
use crate::app::App;
use crate::error::{ProxyError, error_body};
use crate::front::{
    AccessLog, EarlyHints, RequestInfo, final_links, is_navigation, may_push_final,
};
use crate::learn::{self, Links, RouteLinks};
use crate::metrics::{HintSource, Protocol};
use crate::push::digest::Digest;
use crate::push::policy::{Preload, SkipReason};
use crate::push::target::RequestBase;
use crate::upstream::{ClientContext, Forward, InformationalQueue, Next, RequestBody};

/// `?` for a labelled block: an error ends the block with it, as `?` ends a function.
macro_rules! or_break {
    ($label:lifetime, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(err) => break $label Err(err),
        }
    };
}

/// The next of an upstream request's 103s and its result, or `None` once the client reset the
/// stream (or the connection died). The caller then drops the upstream request at once, so reset
/// streams leave no upstream work behind (rapid reset, CVE-2023-44487).
fn poll_upstream<F: Future>(
    queue: Option<&InformationalQueue>,
    upstream: std::pin::Pin<&mut F>,
    respond: &mut SendResponse<Bytes>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Option<Next<F::Output>>> {
    match InformationalQueue::poll_next(queue, upstream, cx) {
        Poll::Ready(next) => Poll::Ready(Some(next)),
        Poll::Pending if respond.poll_reset(cx).is_ready() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// One client-initiated stream.
pub(super) struct Stream {
    app: Arc<App>,
    push: Arc<PushState>,
    /// The connection's, shared: one count per stream rather than a clone of each of its parts.
    client: Arc<ClientContext>,
    log: PushLog,
    /// How many of `log`'s pushes came from learned links, for the access log.
    learned_pushes: usize,
    hints: EarlyHints,
    /// Upstream request to response head (or failure), for the access log.
    upstream_time: Option<std::time::Duration>,
    /// The Link fields of the upstream's 103s for this request, learned with the final ones.
    early: Vec<HeaderValue>,
    /// Some preload of this response was considered for push: its HEADERS may carry the cache
    /// digest cookie.
    considered_push: bool,
}

/// What a stream knows about its request once the head is parsed.
struct Head<'a> {
    method: Method,
    scheme: &'static str,
    authority: &'a str,
    /// The request target, borrowed from the access log's [`RequestInfo`].
    path: &'a str,
    /// `push.request_headers` copied from the request, for promised requests.
    push_headers: HeaderMap,
    learned_hints_ok: bool,
    /// RFC 9111 §3.5: a response to a request with credentials is learned only if `public`.
    authorization: bool,
    /// The client's cache digest cookie (`push.cache_digest`), when it could matter.
    digest: Option<Digest>,
}

impl Head<'_> {
    fn base(&self) -> RequestBase<'_> {
        RequestBase {
            scheme: self.scheme,
            authority: self.authority,
            path_and_query: self.path,
        }
    }
}

impl Stream {
    pub(super) fn new(app: Arc<App>, push: Arc<PushState>, client: Arc<ClientContext>) -> Self {
        Stream {
            app,
            push,
            client,
            log: PushLog::default(),
            learned_pushes: 0,
            hints: EarlyHints::default(),
            upstream_time: None,
            early: Vec::new(),
            considered_push: false,
        }
    }

    // See `Upstream::send`.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(super) fn run(
        mut self,
        mut req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) -> impl Future<Output = ()> {
        async move {
            let info = RequestInfo::take(&mut req);
            // The response, in this block rather than in a method's future of its own: one level
            // of futures fewer to build and copy whole when awaited. Ends with (status, body
            // bytes sent, error kind) once the response has been sent.
            let result: Result<(u16, u64, Option<&'static str>), ProxyError> = 'proxy: {
                let info = &info;
                let respond = &mut respond;
                if super::tunnel::is_extended_connect(&req) {
                    // Boxed: the tunnel's state is large (1.3 KB) and rare; inline, every stream's
                    // future carried it, copied into the heap per request.
                    break 'proxy Box::pin(super::tunnel::run(
                        &self.app,
                        &self.client,
                        req,
                        &info.request_id,
                        respond,
                    ))
                    .await;
                }
                // The head's locals in a block of their own, so the future's state does not keep
                // them while the body is sent: a stream's future is 1.8 KB instead of 2.4 KB
                // (`-Zprint-type-sizes`), copied whole into its box.
                let (mut send, body, status, app) = {
                    let head = or_break!('proxy, self.parse_head(&req, info));
                    let upstream_req = or_break!('proxy, self.upstream_request(req, &head));
                    let app = self.app.clone();

                    // Learned links first: the pushes or the 103 go out before the upstream request
                    // is even sent, because the backend's think time is exactly what they are meant
                    // to fill.
                    let route =
                        learn::route_key(head.authority, head.path, &app.config.learn.ignore_query);
                    let learned = match (&app.learn, head.method == Method::GET) {
                        (Some(learn), true) => learn.get(&route),
                        _ => None,
                    };
                    if let Some(links) = &learned {
                        self.act_learned(respond, &head, links);
                    }

                    // Upstream 103s are forwarded (`early_hints`), pushed from, or learned with the
                    // final links; when none of that can happen, hyper is not asked for them at
                    // all.
                    let wants_103 = app.config.early_hints.enabled
                        || app.learn.is_some()
                        || (self.may_push(&head) && self.push.is_enabled());
                    let queue = wants_103.then(InformationalQueue::default);
                    let share = self.client.upstream_share.clone();
                    let upstream_started = crate::clock::stamp();
                    let response = {
                        let forward =
                            Forward::new(head.authority, &self.client).request_id(&info.request_id);
                        let upstream =
                            app.upstream
                                .send_for(&share, upstream_req, forward, queue.as_ref());
                        tokio::pin!(upstream);
                        loop {
                            // 103s first: one that arrived before the final response is acted on
                            // first.
                            let next = std::future::poll_fn(|cx| {
                                poll_upstream(queue.as_ref(), upstream.as_mut(), respond, cx)
                            })
                            .await;
                            match next {
                                Some(Next::Hints(links)) => {
                                    self.on_upstream_hints(respond, &head, &links)
                                }
                                Some(Next::Done(res)) => break res,
                                None => break 'proxy Ok((499, 0, Some("client_gone"))),
                            }
                        }
                    };
                    self.upstream_time = Some(crate::clock::since(upstream_started));
                    while let Some(links) = queue.as_ref().and_then(InformationalQueue::take) {
                        self.on_upstream_hints(respond, &head, &links);
                    }
                    let response = or_break!('proxy, response);
                    let (parts, mut body) = response.into_parts();

                    // Nothing to do with the final links when this client takes no pushes and
                    // nothing is learned: don't even parse them.
                    let wanted =
                        app.learn.is_some() || (self.may_push(&head) && self.push.is_enabled());
                    if wanted && may_push_final(&head.method, parts.status) {
                        let links = final_links(
                            &app,
                            route,
                            learned,
                            &self.early,
                            &parts.headers,
                            &head.base(),
                            head.authorization,
                        );
                        if self.may_push(&head) && self.push.is_enabled() {
                            for reason in &links.skipped {
                                app.metrics.push_skipped(*reason);
                            }
                            self.promise(respond, &head, &links.preloads);
                        }
                    }

                    // Connection-specific fields are gone already (the upstream connection's
                    // parser).
                    let status = parts.status;
                    // The upstream's parts as they are (h2 sends the status and fields, ignoring
                    // the version): no empty map made and dropped.
                    let mut head_out = Response::from_parts(parts, ());
                    if let Some(cookie) = self.digest_cookie(&head) {
                        head_out.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    if head.method != Method::HEAD {
                        first_bytes(&mut body).await;
                    }
                    let end = body.is_end_stream() || head.method == Method::HEAD;
                    let send = or_break!(
                        'proxy,
                        respond
                            .send_response(head_out, end)
                            .map_err(|err| self.response_not_sent(err))
                    );
                    if end {
                        break 'proxy Ok((status.as_u16(), 0, None));
                    }
                    (send, body, status, app)
                };
                let stall = app.config.server.idle_timeout;
                // Counted as it goes: a response cut short logs what was really sent.
                let mut sent = 0;
                let error = match send_body_counted(&mut send, body, None, stall, &mut sent).await {
                    Ok(()) => None,
                    Err(SendError::Upstream(err)) => {
                        // SPEC §3: a truncated upstream body is never ended as if complete.
                        debug!(error = %err, "upstream body failed; resetting stream");
                        send.send_reset(h2::Reason::INTERNAL_ERROR);
                        Some("upstream_body")
                    }
                    Err(SendError::Stalled(_)) => {
                        send.send_reset(h2::Reason::CANCEL);
                        Some("client_stalled")
                    }
                    Err(SendError::ClientReset(_)) | Err(SendError::H2(_)) => Some("client_gone"),
                    Err(SendError::TooLarge(_)) => Some("too_large"),
                };
                Ok((status.as_u16(), sent, error))
            };
            let (status, bytes, error) = match result {
                Ok((status, bytes, error)) => (status, bytes, error),
                Err(err) => {
                    let (status, bytes) = self.send_error(&mut respond, &err);
                    (status, bytes, Some(err.kind()))
                }
            };
            self.app.metrics.request(Protocol::Http2, status);
            if self.app.config.log.access_log {
                AccessLog {
                    protocol: "h2",
                    client: &self.client.address,
                    request: &info,
                    status,
                    bytes,
                    upstream: self.upstream_time,
                    pushed: &self.log.promised,
                    pushed_learned: self.learned_pushes,
                    hints: &self.hints,
                    error,
                }
                .emit();
            }
        }
    }

    fn parse_head<'a>(
        &self,
        req: &Request<RecvStream>,
        info: &'a RequestInfo,
    ) -> Result<Head<'a>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        // RFC 9113 §8.3.1: :authority, or Host when a client sends none. `RequestInfo` has it
        // already when valid (empty when not: checked again here for the error), borrowed.
        if info.host.is_empty() {
            return Err(
                match crate::front::request_authority(req.uri(), req.headers()) {
                    Err(err) => err,
                    Ok(_) => ProxyError::BadRequest("missing :authority or Host"),
                },
            );
        }
        let authority = info.host.as_str();
        let path = info.path.as_str();
        let scheme = if self.client.scheme == "https" {
            "https"
        } else {
            "http"
        };
        if !path.starts_with('/') {
            return Err(ProxyError::BadRequest(
                "request target must be an absolute path",
            ));
        }
        // Only when a push could follow: copied for promised requests, the digest decoded once.
        let may_push =
            self.app.config.push.enabled && self.push.is_enabled() && req.method() == Method::GET;
        let request_headers = &self.app.config.push.request_headers;
        // One pass over the fields instead of a lookup per name (callgrind: ~900 instructions
        // per request in lookups).
        let mut push_headers = HeaderMap::new();
        let mut learned_hints_ok = false;
        let mut authorization = false;
        for (name, value) in req.headers() {
            if may_push && request_headers.contains(name) {
                push_headers.append(name.clone(), value.clone());
            }
            learned_hints_ok |= is_navigation(name, value);
            authorization |= name == header::AUTHORIZATION;
        }
        let digest = (may_push && self.app.config.push.cache_digest)
            .then(|| super::digest::incoming(req.headers(), &self.app.push_freshness.clock))
            .flatten();
        Ok(Head {
            digest,
            method: req.method().clone(),
            scheme,
            authority,
            path,
            push_headers,
            learned_hints_ok,
            authorization,
        })
    }

    fn upstream_request(
        &self,
        req: Request<RecvStream>,
        head: &Head,
    ) -> Result<Request<RequestBody>, ProxyError> {
        let (mut parts, recv) = req.into_parts();
        let uri = match parts.uri.path_and_query() {
            Some(pq) => self.app.upstream.uri_for(pq.clone())?,
            None => self.app.upstream.uri_for_path(head.path)?,
        };
        let body: RequestBody = if recv.is_end_stream() {
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync()
        } else {
            let length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            H2RequestBody::new(recv, length).boxed_unsync()
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }

    /// Push only for GETs on connections where the operator enabled it (SPEC §4).
    fn may_push(&self, head: &Head) -> bool {
        head.method == Method::GET && self.app.config.push.enabled
    }

    fn promise(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        head: &Head,
        preloads: &[Preload],
    ) -> Vec<Decision> {
        let req = PushRequest {
            app: &self.app,
            state: &self.push,
            client: &self.client,
            scheme: head.scheme,
            authority: head.authority,
            headers: &head.push_headers,
            digest: head.digest.as_ref(),
        };
        self.considered_push |= !preloads.is_empty();
        promise_all(&req, respond, preloads, &mut self.log)
    }

    /// The cache digest cookie for this response's HEADERS (`push.cache_digest`): set on a
    /// response whose preloads were considered for push, when this connection promised
    /// something the client's cookie does not hold yet. It goes out with the HEADERS, before
    /// the pushed assets are fetched; see `front::h2::digest` for where lifetimes come from.
    fn digest_cookie(&self, head: &Head) -> Option<HeaderValue> {
        if !self.app.config.push.cache_digest || !self.considered_push {
            return None;
        }
        let origin = format!("{}://{}", head.scheme, head.authority.to_ascii_lowercase());
        self.push.digest.cookie(
            &self.app.push_freshness,
            &origin,
            head.digest.as_ref(),
            head.scheme == "https",
        )
    }

    /// An upstream 103 (RFC 8297 §2 lets an intermediary push on it): push its links, and
    /// forward, cleaned, those not hinted yet (SPEC §5), preconnects and cross-origin `https:`
    /// preloads included.
    fn on_upstream_hints(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        head: &Head,
        fields: &[HeaderValue],
    ) {
        let links = RouteLinks::classify(fields, &head.base());
        self.early.extend_from_slice(fields);
        if self.may_push(head) {
            let decisions = self.promise(respond, head, &links.preloads);
            self.hints.covered(coming(&links.preloads, &decisions));
        }
        if self.app.config.early_hints.enabled {
            self.send_hints(respond, &links.hints, HintSource::Upstream);
        }
    }

    /// Learned links, before the upstream request is sent: push what may be pushed; announce
    /// the rest in a 103 (SPEC §5, §6) — to navigations only — together with the learned
    /// preconnects and cross-origin preloads, all in this one first 103.
    fn act_learned(&mut self, respond: &mut SendResponse<Bytes>, head: &Head, links: &Links) {
        let decisions = if !self.may_push(head) {
            vec![Decision::Skipped(SkipReason::ClientDisabled); links.preloads.len()]
        } else if self.push.is_enabled() {
            let before = self.log.made;
            let decisions = self.promise(respond, head, &links.preloads);
            self.learned_pushes += self.log.made - before;
            decisions
        } else {
            // Every browser and h2load: nothing can be promised, and the links are known to
            // be these until the response ends (`skip_all`).
            self.considered_push |= !links.preloads.is_empty();
            skip_all(links, &mut self.log, &self.app.metrics)
        };
        self.hints.covered(coming(&links.preloads, &decisions));
        if !self.app.config.early_hints.enabled || !head.learned_hints_ok {
            return;
        }
        self.send_hints(respond, &links.hints, HintSource::Learned);
    }

    fn send_hints<'a>(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        hints: impl IntoIterator<Item = &'a HeaderValue>,
        source: HintSource,
    ) {
        let hints = self.hints.admit(hints);
        if hints.is_empty() {
            return;
        }
        // SPEC §5: a 103 carries only Link fields.
        let mut early = Response::new(());
        *early.status_mut() = StatusCode::EARLY_HINTS;
        for hint in hints {
            early.headers_mut().append(header::LINK, hint);
        }
        // A 103 over the client's SETTINGS_MAX_HEADER_LIST_SIZE is refused by h2 (vendor/h2
        // PATCHES.md 7) and simply not sent; the final response still goes.
        match respond.send_informational(early) {
            Ok(()) => self.hints.sent(source, &self.app.metrics),
            Err(err) => debug!(error = %err, "sending 103 failed"),
        }
    }

    /// Why `send_response` failed. A head over the client's SETTINGS_MAX_HEADER_LIST_SIZE
    /// (RFC 9113 §6.5.2) is refused by h2 with nothing sent (vendor/h2 PATCHES.md 7): the
    /// upstream's response cannot reach this client, so the stream gets a 502, as from nginx,
    /// instead of a header block nghttp2 clients answer with GOAWAY COMPRESSION_ERROR (losing
    /// every stream of the connection). Anything else means the client is gone.
    fn response_not_sent(&self, err: h2::Error) -> ProxyError {
        if !err.is_header_list_too_large() {
            return ProxyError::ClientGone(err);
        }
        let err = ProxyError::UpstreamInvalid("response header list over the client's limit");
        self.app.metrics.upstream_error(err.kind());
        err
    }

    /// Sends the short plain-text error response; returns the status and the body bytes sent,
    /// for logs and metrics.
    fn send_error(&self, respond: &mut SendResponse<Bytes>, err: &ProxyError) -> (u16, u64) {
        crate::front::report_error(&self.app.metrics, err);
        let Some(status) = err.status() else {
            return (499, 0);
        };
        let body = error_body(status);
        let mut res = Response::new(());
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let len = body.len() as u64;
        let sent = match respond.send_response(res, false) {
            Ok(mut send) => send.send_data(body, true).map_or(0, |()| len),
            Err(_) => 0,
        };
        (status.as_u16(), sent)
    }
}

/// The hints of the preloads the client has coming as pushes (promised on this stream or
/// this connection): a 103 need not announce them.
fn coming<'a>(
    preloads: &'a [Preload],
    decisions: &'a [Decision],
) -> impl Iterator<Item = &'a HeaderValue> {
    preloads
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d.is_coming())
        .map(|(p, _)| &p.hint)
}

/// Waits until the response body's first bytes are in (or its end), for at most one turn of
/// the worker, so that HEADERS leave with the first DATA rather than in a TLS record of their
/// own. A body usually arrives with its head; nginx writes a static file's head and body with
/// two calls (`writev`, then `sendfile`), and when the origin is busy the body's bytes come a
/// moment later. Sent at once, the head went out alone and the body followed in the next turn:
/// two records, two reads and decryptions for the client, one more wakeup of this connection.
/// Measured with h2load `-n 10000 -c 32 -m 1` on `/small.txt`, nginx sharing h2load's core:
/// 4.7-12% of the bodies came in a read of their own, and h2load read 1.05-1.14 TLS records per
/// response; waiting, 1.03-1.04 (docs/BENCHMARKS.md, 2026-12-05 17:00).
/// One turn, not a timer: a streaming response whose body is slow in coming is not held back
/// by more than the turn the connection's writes wait for anyway (`listener/gather.rs`).
async fn first_bytes(body: &mut crate::upstream::Buffered) {
    // `yield_now` is Ready on its second poll, after tokio has polled its I/O driver once: the
    // upstream's next bytes, if they came meanwhile, have then been read.
    let mut turn = std::pin::pin!(tokio::task::yield_now());
    std::future::poll_fn(|cx| {
        if body.poll_started(cx).is_ready() || turn.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
