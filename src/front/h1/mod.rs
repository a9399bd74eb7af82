//! The HTTP/1.1 front end, on hyper's server: keep-alive, a deadline for each request head
//! (slowloris; it also closes idle keep-alive connections), bounded heads. No push.
//!
//! With `early_hints.http1`, learned links and upstream 103s reach HTTP/1.1 clients as 103s too,
//! written by `io` since hyper's server cannot write a 1xx.
//!
//! `Upgrade` (WebSocket and any other token but h2c) is passed to the upstream; on its 101 both
//! connections are taken over with `hyper::upgrade` and relayed by `front::tunnel`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

mod io;

use super::tunnel;

use self::io::{Interim, InterimIo};
use crate::app::App;
use crate::error::{ProxyError, error_body};
use crate::front::{
    AccessLog, EarlyHints, RequestInfo, final_links, may_push_final, wants_learned_hints,
};
use crate::learn::{self, RouteLinks};
use crate::metrics::{HintSource, Protocol};
use crate::push::target::RequestBase;
use crate::upstream::{
    BoxError, ClientBodyError, ClientContext, Forward, Informational, InformationalQueue, Next,
    RequestBody,
};

/// SPEC §8: bounded request heads.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Serves one HTTP/1.1 connection (keep-alive) until it closes, idles out, or shutdown ends it.
pub async fn serve<IO>(
    app: Arc<App>,
    io: IO,
    client: ClientContext,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _gauge = app.metrics.connection(Protocol::Http1);
    let idle = app.config.server.idle_timeout;
    let interim = Arc::new(Interim::default());
    let io = InterimIo::new(io, interim.clone());
    let service = {
        let app = app.clone();
        service_fn(move |req| handle(app.clone(), client.clone(), interim.clone(), req))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper restarts this deadline whenever it waits for a request head, so it bounds both a
        // slow head and an idle keep-alive connection.
        .header_read_timeout(idle)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    // `with_upgrades`: a 101 hands the connection to `hyper::upgrade::on` (WebSocket tunnels).
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            // In-flight requests get `shutdown_timeout`, then the connection is dropped.
            match tokio::time::timeout(app.config.server.shutdown_timeout, conn).await {
                Ok(res) => res,
                Err(_) => return,
            }
        }
    };
    if let Err(err) = result {
        debug!(error = %err, "http/1.1 connection ended with an error");
        // hyper has answered 431 itself and closed the connection.
        if err.is_parse_too_large() {
            crate::front::heads_too_large(&app.metrics, Protocol::Http1, 1);
        }
    }
}

// See `Upstream::send`.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn handle(
    app: Arc<App>,
    client: ClientContext,
    interim: Arc<Interim>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    async move {
        let info = RequestInfo::take(&mut req);
        let mut hints = EarlyHints::default();
        let mut upstream = None;
        let mut error = None;
        let proxied = proxy(
            &app,
            &client,
            &interim,
            &mut hints,
            &mut upstream,
            req,
            &info,
        )
        .await;
        let response = match proxied {
            Ok(res) => res,
            Err(err) => {
                crate::front::report_error(&app.metrics, &err);
                error = Some(err.kind());
                let status = err.status().unwrap_or(http::StatusCode::BAD_REQUEST);
                let body = error_body(status);
                let mut res = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
                *res.status_mut() = status;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                res
            }
        };
        let status = response.status().as_u16();
        app.metrics.request(Protocol::Http1, status);
        if !app.config.log.access_log {
            return Ok(response);
        }
        // The line is written when the body is done, so it can say how many bytes went out.
        let (parts, body) = response.into_parts();
        let logged = Logged {
            inner: body,
            bytes: 0,
            line: Some(LogLine {
                info,
                client: client.address.clone(),
                status,
                upstream,
                hints,
                error,
            }),
        };
        Ok(Response::from_parts(parts, logged.boxed_unsync()))
    }
}

// See `Upstream::send`.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn proxy(
    app: &Arc<App>,
    client: &ClientContext,
    interim: &Interim,
    hints: &mut EarlyHints,
    upstream_time: &mut Option<Duration>,
    mut req: Request<Incoming>,
    info: &RequestInfo,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> {
    async move {
        let path = info.path.as_str();
        if req.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        if !path.starts_with('/') {
            return Err(ProxyError::BadRequest(
                "request target must be an absolute path",
            ));
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, absolute-form target or not.
        if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) {
            return Err(ProxyError::BadRequest("missing Host"));
        }
        // RFC 9112 §3.2.2: an absolute-form target's authority wins over Host.
        let authority = crate::front::request_authority(req.uri(), req.headers())?;
        let method = req.method().clone();
        // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client. `early_hints.http1` is off by default
        // because some old HTTP/1.1 clients mishandle 1xx too.
        let hints_on = app.config.early_hints.enabled
            && app.config.early_hints.http1
            && req.version() == Version::HTTP_11;
        let route = learn::route_key(&authority, path, &app.config.learn.ignore_query);
        let authorization = req.headers().contains_key(header::AUTHORIZATION);
        let learned = match (&app.learn, method == Method::GET) {
            (Some(learn), true) => learn.get(&route),
            _ => None,
        };
        if let Some(links) = learned
            .as_ref()
            .filter(|_| hints_on && wants_learned_hints(req.headers()))
        {
            // Before the upstream request is sent: the backend's think time is what this fills.
            // SPEC §5: the one complete first 103 — preloads, preconnects, cross-origin preloads.
            send_early_hints(app, interim, hints, &links.hints, HintSource::Learned);
        }
        let upgrade = tunnel::upgrade_token(req.version(), req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let mut forward = Forward::new(&authority, client).request_id(&info.request_id);
        if let Some(token) = upgrade {
            forward = forward.upgrade(token);
        }
        let body: RequestBody = if incoming.is_end_stream() {
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync()
        } else {
            // An aborted upload or a malformed chunked body is the client's fault.
            incoming.map_err(ClientBodyError::boxed).boxed_unsync()
        };
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method;
        *upstream_req.uri_mut() = match parts.uri.path_and_query() {
            Some(pq) => app.upstream.uri_for(pq.clone())?,
            None => app.upstream.uri_for_path(path)?,
        };
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = parts.headers;

        let base = RequestBase {
            scheme: client.scheme,
            authority: &authority,
            path_and_query: path,
        };
        if let Some(client_upgrade) = client_upgrade {
            // A tunnel is relayed, not read ahead: it takes the raw upstream response, which
            // carries the upstream connection and the pool slot the tunnel holds until it closes.
            let response = app.upstream.send(upstream_req, Some(forward), None).await?;
            // A 101 exists only for an upgrade request (`Upstream::send` refuses any other).
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Ok(switch(app, client_upgrade, response));
            }
            // Connection-specific fields are gone already (the upstream connection's parser).
            let (parts, body) = response.into_parts();
            return Ok(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed_unsync(),
            ));
        }
        // The upstream's 103s are forwarded when `hints_on`, and learned with the final links
        // whenever learning is on, so the route's entry is the same whichever front end taught it.
        let mut early: Vec<HeaderValue> = Vec::new();
        let upstream_started = crate::clock::stamp();
        let response = if hints_on || app.learn.is_some() {
            let queue = InformationalQueue::default();
            let upstream =
                app.upstream
                    .send_for(&client.upstream_share, upstream_req, forward, Some(&queue));
            tokio::pin!(upstream);
            // Forwarded (with `early_hints.http1`) and kept to be learned with the final links.
            let mut take = |fields: Informational| {
                if hints_on {
                    let links = RouteLinks::classify(&fields, &base);
                    send_early_hints(app, interim, hints, &links.hints, HintSource::Upstream);
                }
                early.extend(fields);
            };
            let res = loop {
                let next = std::future::poll_fn(|cx| {
                    InformationalQueue::poll_next(Some(&queue), upstream.as_mut(), cx)
                })
                .await;
                match next {
                    Next::Hints(fields) => take(fields),
                    Next::Done(res) => break res,
                }
            };
            // 103s queued in the poll that also read the final head, in order.
            while let Some(fields) = queue.take() {
                take(fields);
            }
            res
        } else {
            app.upstream
                .send_for(&client.upstream_share, upstream_req, forward, None)
                .await
        };
        *upstream_time = Some(crate::clock::since(upstream_started));
        let response = response?;
        let (parts, body) = response.into_parts();
        if app.learn.is_some() && may_push_final(&method, parts.status) {
            final_links(
                app,
                route,
                learned,
                &early,
                &parts.headers,
                &base,
                authorization,
            );
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    }
}

/// Answers the client's upgrade with the upstream's 101 (its Upgrade, Connection and
/// Sec-WebSocket-* fields) and relays the two upgraded connections once hyper has sent it.
fn switch(
    app: &App,
    client_upgrade: hyper::upgrade::OnUpgrade,
    response: Response<crate::upstream::UpstreamBody>,
) -> Response<ResponseBody> {
    let (parts, mut body) = response.into_parts();
    let permit = body.take_permit();
    // A 101 to an upgrade request always carries its connection (`Upstream::send`).
    if let Some(upstream) = body.take_upgraded() {
        tokio::spawn(tunnel::relay_h1(
            app.metrics.clone(),
            app.config.server.tunnel_idle_timeout,
            client_upgrade,
            upstream,
            permit,
        ));
    }
    let mut res = Response::new(
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *res.status_mut() = parts.status;
    *res.headers_mut() = parts.headers;
    res
}

/// Queues a 103 on the connection with the links not hinted yet, if any (SPEC §5).
fn send_early_hints<'a>(
    app: &App,
    interim: &Interim,
    hints: &mut EarlyHints,
    links: impl IntoIterator<Item = &'a HeaderValue>,
    source: HintSource,
) {
    let fresh = hints.admit(links);
    if !fresh.is_empty() {
        interim.early_hints(&fresh);
        hints.sent(source, &app.metrics);
    }
}

struct LogLine {
    info: RequestInfo,
    client: std::sync::Arc<str>,
    status: u16,
    upstream: Option<Duration>,
    hints: EarlyHints,
    /// The error that made this response (an upstream failure's 502/504), if any.
    error: Option<&'static str>,
}

/// Counts the bytes of a response body and writes the access-log line when it ends or is dropped.
struct Logged {
    inner: ResponseBody,
    bytes: u64,
    line: Option<LogLine>,
}

impl Logged {
    fn emit(&mut self, error: Option<&'static str>) {
        if let Some(line) = self.line.take() {
            AccessLog {
                protocol: "http1",
                client: &line.client,
                request: &line.info,
                status: line.status,
                bytes: self.bytes,
                upstream: line.upstream,
                pushed: &[],
                pushed_learned: 0,
                hints: &line.hints,
                error: line.error.or(error),
            }
            .emit();
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.emit(Some("upstream_body")),
            Poll::Ready(None) => this.emit(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.emit(if self.inner.is_end_stream() {
            None
        } else {
            Some("client_gone")
        });
    }
}
