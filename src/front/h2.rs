//! One HTTP/2 connection on the h2 crate: settings and flood defences, the accept loop with idle
//! timeout and graceful shutdown, and per stream: learned hints, upstream 103s, pushes from the
//! final Link fields, and the response body through the one send loop.
//!
//! Order within a stream (RFC 9113 §8.4.1, RFC 8297): learned pushes / 103 → upstream request →
//! upstream 103s forwarded and their links pushed as they arrive → PUSH_PROMISEs for the final
//! response's links → final HEADERS → body. Every promise precedes the HEADERS of the response
//! that carries its link, and the response is never held back while assets are fetched.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use super::h2_io::{GatedIo, ReadGate};
use super::{
    AccessLog, EarlyHints, classify_links, handshake_timeout, may_push_final, upstream_hints,
    wants_learned_hints,
};
use crate::app::App;
use crate::body::{H2RequestBody, SendError, send_body};
use crate::error::{ProxyError, error_body};
use crate::learn::LearnStore;
use crate::metrics::{HintSource, Protocol};
use crate::push::policy::Preload;
use crate::push::send::{Decision, PushLog, PushRequest, PushState, PushedHead, promise_all};
use crate::push::target::RequestBase;
use crate::upstream::{
    ClientContext, Informational, MAX_INFORMATIONAL, RequestBody, rewrite_request_headers,
};

/// SPEC §8: bounded header lists. Also the HPACK-bomb and CONTINUATION-flood bound: h2 refuses a
/// header block that decodes to more than this (CVE-2024-27316 family).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Per-stream receive window: what one request body may have in flight before the upstream
/// takes it.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes h2 may buffer per stream on the way out.
const SEND_BUFFER: usize = 256 * 1024;
/// Rapid reset (CVE-2023-44487): streams reset by the client before we accepted them.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams we had to reset because the client misbehaved, before GOAWAY.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// Serves one HTTP/2 connection until the client leaves, it idles out, or shutdown completes.
pub async fn serve<IO>(
    app: Arc<App>,
    io: IO,
    client: ClientContext,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = &app.config.server;
    let _gauge = app.metrics.connection(Protocol::Http2);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(server.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .header_table_size(4096)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
    let gate = Arc::new(ReadGate::default());
    let io = GatedIo::new(io, gate.clone());
    let handshake = tokio::time::timeout(
        handshake_timeout(server.idle_timeout),
        builder.handshake(io),
    );
    let mut conn = match handshake.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            debug!(peer = %client.peer, error = %err, "h2 handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %client.peer, "h2 handshake timed out");
            return;
        }
    };
    let (heads, mut pushed_heads) = mpsc::unbounded_channel::<PushedHead>();
    let push = Arc::new(PushState::new(
        app.config.push.enabled,
        app.config.push.lru_capacity,
        app.config.push.max_concurrent_pushes,
        heads,
    ));
    let active = Arc::new(Active::default());
    let idle = server.idle_timeout;
    let mut closing = false;
    // Once closing, the connection ends by this time even if the client never acknowledges the
    // GOAWAY's PING or its streams never finish.
    let mut close_by: Option<tokio::time::Instant> = None;
    loop {
        let idle_now = active.count() == 0;
        let held_until = gate
            .held_since()
            .map(|t| tokio::time::Instant::from_std(t) + GATE_FALLBACK);
        tokio::select! {
            Some(head) = pushed_heads.recv() => send_pushed_head(&gate, head),
            _ = sleep_until_opt(held_until), if held_until.is_some() => {
                tracing::warn!(peer = %client.peer, "pushed HEADERS not written in time; releasing reads");
                gate.release_all();
            }
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    // The client's SETTINGS arrive before its first HEADERS, so this is current.
                    push.set_peer_max_streams(conn.max_concurrent_send_streams());
                    let stream = Stream::new(app.clone(), push.clone(), client.clone());
                    let guard = active.enter();
                    tokio::spawn(async move {
                        stream.run(req, respond).await;
                        drop(guard);
                    });
                }
                Some(Err(err)) => {
                    debug!(peer = %client.peer, error = %err, "h2 connection error");
                    break;
                }
                None => break,
            },
            _ = tokio::time::sleep(idle), if idle_now && !closing => {
                debug!(peer = %client.peer, "idle timeout");
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + handshake_timeout(idle));
            }
            _ = sleep_until_opt(close_by), if close_by.is_some() => {
                debug!(peer = %client.peer, "closing deadline reached; dropping the connection");
                break;
            }
            _ = active.changed.notified(), if !closing => {}
            _ = shutdown.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + server.shutdown_timeout);
            }
        }
    }
}

/// How long reads may wait for a pushed stream's HEADERS to be written before the gate gives up
/// (only reached if h2 never writes them, e.g. the socket stopped draining).
const GATE_FALLBACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Queues a pushed stream's response HEADERS. Runs on the connection task, with the connection's
/// reads held until those HEADERS are on the wire: a client RST_STREAM that h2 processed while
/// the stream sits in `pending_open` would cost the whole connection (see `h2_io`).
fn send_pushed_head(gate: &ReadGate, head: PushedHead) {
    let PushedHead {
        mut pushed,
        response,
        end_of_stream,
        reply,
    } = head;
    let id = u32::from(pushed.stream_id());
    gate.hold(id);
    let sent = pushed.send_response(response, end_of_stream);
    if sent.is_err() {
        // Nothing was queued (the client already reset the promise): nothing to wait for.
        gate.release_all();
    }
    let _ = reply.send(sent);
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Open client streams on a connection; the idle timer runs only while there are none.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    changed: Notify,
}

impl Active {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
    fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }
}

struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one keeps a permit if the loop is not waiting right now.
            self.0.changed.notify_one();
        }
    }
}

/// One client-initiated stream.
struct Stream {
    app: Arc<App>,
    push: Arc<PushState>,
    client: ClientContext,
    log: PushLog,
    hints: EarlyHints,
}

/// What waiting for the upstream's answer ended with.
enum Waited {
    Hints(Informational),
    Upstream(Result<Response<crate::upstream::UpstreamBody>, ProxyError>),
    ClientGone,
}

/// What a stream knows about its request once the head is parsed.
struct Head {
    method: Method,
    scheme: &'static str,
    authority: String,
    path: String,
    /// `push.request_headers` copied from the request, for promised requests.
    push_headers: HeaderMap,
    learned_hints_ok: bool,
}

impl Head {
    fn base(&self) -> RequestBase<'_> {
        RequestBase {
            scheme: self.scheme,
            authority: &self.authority,
            path_and_query: &self.path,
        }
    }
}

impl Stream {
    fn new(app: Arc<App>, push: Arc<PushState>, client: ClientContext) -> Self {
        Stream {
            app,
            push,
            client,
            log: PushLog::default(),
            hints: EarlyHints::default(),
        }
    }

    async fn run(mut self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (status, bytes, error) = match self.proxy(req, &mut respond).await {
            Ok((status, bytes, error)) => (status, bytes, error),
            Err(err) => {
                let status = self.send_error(&mut respond, &err);
                (status, 0, Some(err.kind()))
            }
        };
        self.app.metrics.request(Protocol::Http2, status);
        if self.app.config.log.access_log {
            AccessLog {
                protocol: "h2",
                method: &method,
                path: &path,
                status,
                bytes,
                started,
                pushed: &self.log.promised,
                hinted: &self.hints.sources,
                error,
            }
            .emit();
        }
    }

    fn parse_head(&self, req: &Request<RecvStream>) -> Result<Head, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        // RFC 9113 §8.3.1: :authority, or Host when a client sends none.
        let authority = match req.uri().authority() {
            Some(a) => a.as_str().to_owned(),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or(ProxyError::BadRequest("missing :authority"))?
                .to_owned(),
        };
        let scheme = if self.client.scheme == "https" {
            "https"
        } else {
            "http"
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| p.starts_with('/'))
            .ok_or(ProxyError::BadRequest(
                "request target must be an absolute path",
            ))?;
        let mut push_headers = HeaderMap::new();
        for name in &self.app.config.push.request_headers {
            for value in req.headers().get_all(name) {
                push_headers.append(name.clone(), value.clone());
            }
        }
        Ok(Head {
            method: req.method().clone(),
            scheme,
            authority,
            path,
            push_headers,
            learned_hints_ok: wants_learned_hints(req.headers()),
        })
    }

    /// Returns (status, body bytes sent, error kind) once the response has been sent.
    async fn proxy(
        &mut self,
        req: Request<RecvStream>,
        respond: &mut SendResponse<Bytes>,
    ) -> Result<(u16, u64, Option<&'static str>), ProxyError> {
        let head = self.parse_head(&req)?;
        let upstream_req = self.upstream_request(req, &head)?;
        let app = self.app.clone();

        // Learned links first: the pushes or the 103 go out before the upstream request is even
        // sent, because the backend's think time is exactly what they are meant to fill.
        let route = LearnStore::route_key(&head.authority, &head.path);
        if head.method == Method::GET {
            if let Some(links) = app.learn.as_ref().and_then(|l| l.get(&route)) {
                self.act_early(respond, &head, &links, &[], HintSource::Learned);
            }
        }

        let (tx, mut rx) = mpsc::channel::<Informational>(MAX_INFORMATIONAL);
        let response = {
            let upstream = app.upstream.send(upstream_req, Some(tx));
            tokio::pin!(upstream);
            loop {
                // 103s first: one that arrived before the final response is acted on first. A
                // client reset (or a dead connection) drops the upstream request at once, so
                // reset streams leave no upstream work behind (rapid reset, CVE-2023-44487).
                let next = std::future::poll_fn(|cx| {
                    if let Poll::Ready(Some(links)) = rx.poll_recv(cx) {
                        return Poll::Ready(Waited::Hints(links));
                    }
                    if let Poll::Ready(res) = upstream.as_mut().poll(cx) {
                        return Poll::Ready(Waited::Upstream(res));
                    }
                    if respond.poll_reset(cx).is_ready() {
                        return Poll::Ready(Waited::ClientGone);
                    }
                    Poll::Pending
                })
                .await;
                match next {
                    Waited::Hints(links) => self.on_upstream_hints(respond, &head, &links),
                    Waited::Upstream(res) => break res,
                    Waited::ClientGone => return Ok((499, 0, Some("client_gone"))),
                }
            }
        };
        while let Ok(links) = rx.try_recv() {
            self.on_upstream_hints(respond, &head, &links);
        }
        let response = response?;
        let (mut parts, body) = response.into_parts();

        if may_push_final(&head.method, parts.status) {
            let classified = classify_links(parts.headers.get_all(header::LINK), &head.base());
            for reason in &classified.skipped {
                app.metrics.push_skipped(*reason);
            }
            if self.may_push(&head) {
                self.promise(respond, &head, &classified.preloads);
            }
            // SPEC §6: the final response's links replace what was learned.
            if let Some(learn) = &app.learn {
                learn.learn(route, classified.preloads);
            }
        }

        crate::upstream::strip_hop_by_hop(&mut parts.headers);
        let status = parts.status;
        let mut head_out = Response::new(());
        *head_out.status_mut() = status;
        *head_out.headers_mut() = parts.headers;
        let end = body.is_end_stream() || head.method == Method::HEAD;
        let mut send = respond
            .send_response(head_out, end)
            .map_err(ProxyError::ClientGone)?;
        if end {
            return Ok((status.as_u16(), 0, None));
        }
        let stall = app.config.server.idle_timeout;
        match send_body(&mut send, body, None, stall).await {
            Ok(n) => Ok((status.as_u16(), n, None)),
            Err(SendError::Upstream(err)) => {
                // SPEC §3: a truncated upstream body is never ended as if complete.
                debug!(error = %err, "upstream body failed; resetting stream");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                Ok((status.as_u16(), 0, Some("upstream_body")))
            }
            Err(SendError::Stalled(_)) => {
                send.send_reset(h2::Reason::CANCEL);
                Ok((status.as_u16(), 0, Some("client_stalled")))
            }
            Err(SendError::ClientReset(_)) | Err(SendError::H2(_)) => {
                Ok((status.as_u16(), 0, Some("client_gone")))
            }
            Err(SendError::TooLarge(_)) => Ok((status.as_u16(), 0, Some("too_large"))),
        }
    }

    fn upstream_request(
        &self,
        req: Request<RecvStream>,
        head: &Head,
    ) -> Result<Request<RequestBody>, ProxyError> {
        let (mut parts, recv) = req.into_parts();
        let uri = self.app.upstream.uri_for(&head.path)?;
        rewrite_request_headers(&mut parts.headers, &head.authority, &self.client);
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
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;
        Ok(out)
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
            authority: &head.authority,
            headers: &head.push_headers,
        };
        promise_all(&req, respond, preloads, &mut self.log)
    }

    /// An upstream 103 (RFC 8297 §2 lets an intermediary push on it): push its links, and
    /// forward it, cleaned, to the client.
    fn on_upstream_hints(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        head: &Head,
        links: &[HeaderValue],
    ) {
        let classified = classify_links(links, &head.base());
        if self.may_push(head) {
            self.promise(respond, head, &classified.preloads);
        }
        if self.app.config.early_hints.enabled {
            self.send_hints(respond, upstream_hints(&classified), HintSource::Upstream);
        }
    }

    /// Learned links: push what may be pushed; announce the rest in a 103 (SPEC §5, §6).
    fn act_early(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        head: &Head,
        preloads: &[Preload],
        foreign: &[String],
        source: HintSource,
    ) {
        let decisions = if self.may_push(head) {
            self.promise(respond, head, preloads)
        } else {
            vec![Decision::Skipped(crate::push::policy::SkipReason::ClientDisabled); preloads.len()]
        };
        if !self.app.config.early_hints.enabled || !head.learned_hints_ok {
            return;
        }
        // Already promised on this stream or this connection: the client has it coming.
        let hints: Vec<String> = preloads
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| {
                !matches!(
                    d,
                    Decision::Promised
                        | Decision::Repeated
                        | Decision::Skipped(crate::push::policy::SkipReason::Duplicate)
                )
            })
            .map(|(p, _)| p.hint.clone())
            .chain(foreign.iter().cloned())
            .collect();
        self.send_hints(respond, hints, source);
    }

    fn send_hints(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        hints: Vec<String>,
        source: HintSource,
    ) {
        if !self.hints.admit(&hints) {
            return;
        }
        // SPEC §5: a 103 carries only Link fields.
        let mut early = Response::new(());
        *early.status_mut() = StatusCode::EARLY_HINTS;
        for hint in &hints {
            if let Ok(v) = HeaderValue::from_str(hint) {
                early.headers_mut().append(header::LINK, v);
            }
        }
        match respond.send_informational(early) {
            Ok(()) => self.hints.sent(source, &self.app.metrics),
            Err(err) => debug!(error = %err, "sending 103 failed"),
        }
    }

    /// Sends the short plain-text error response; returns the status for logs and metrics.
    fn send_error(&self, respond: &mut SendResponse<Bytes>, err: &ProxyError) -> u16 {
        match err.side() {
            crate::error::Side::Upstream => {
                tracing::warn!(error = %err, kind = err.kind(), "upstream error")
            }
            _ => debug!(error = %err, kind = err.kind(), "request failed"),
        }
        let Some(status) = err.status() else {
            return 499;
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
        if let Ok(mut send) = respond.send_response(res, false) {
            let _ = send.send_data(body, true);
        }
        status.as_u16()
    }
}
