//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` becomes an
//! HTTP/1.1 `GET` with `Upgrade: websocket` to the upstream (RFC 6455 §4.1 handshake, with a key
//! of our own), and once the upstream answers 101 the client gets 200 and DATA is relayed both
//! ways: upstream → client through the one send loop (`body::send_body`, flow control and reset
//! detection included), client → upstream with the client's window released only as the
//! upstream takes the bytes.
//!
//! Any other `:protocol` gets 501. An upstream answer other than 101 is the client's answer as
//! is (RFC 8441 §5: a non-2xx response means no tunnel).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

use super::body::{SendError, send_body};
use crate::app::App;
use crate::error::ProxyError;
use crate::front::tunnel::{Activity, Tracked, websocket_key};
use crate::metrics::Protocol;
use crate::upstream::{BoxError, ClientContext, Forward, RequestBody};

/// Forwarded from the 101 to the 200 (RFC 8441 §5, RFC 6455 §4.2.2).
const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
const SEC_WEBSOCKET_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");
const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// How much of the upstream's bytes one DATA frame may carry.
const CHUNK: usize = 16 * 1024;

/// Whether `req` is an extended CONNECT (RFC 8441 §4), which `run` handles.
pub(super) fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<h2::ext::Protocol>().is_some()
}

/// Handles one extended CONNECT stream. Returns (status, bytes relayed to the client, error kind)
/// like `Stream::proxy`; an `Err` is answered by the caller's error response.
pub(super) async fn run(
    app: &Arc<App>,
    client: &ClientContext,
    req: Request<RecvStream>,
    request_id: &crate::front::RequestId,
    respond: &mut SendResponse<Bytes>,
) -> Result<(u16, u64, Option<&'static str>), ProxyError> {
    let websocket = req
        .extensions()
        .get::<h2::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Err(ProxyError::NotImplemented(
            "extended CONNECT protocol other than websocket",
        ));
    }
    let authority = crate::front::request_authority(req.uri(), req.headers())?;
    let (mut parts, recv) = req.into_parts();
    let uri = match parts.uri.path_and_query() {
        Some(pq) => app.upstream.uri_for(pq.clone())?,
        None => return Err(ProxyError::BadRequest("extended CONNECT without :path")),
    };
    let forward = Forward::new(&authority, client)
        .request_id(request_id)
        .upgrade(HeaderValue::from_static("websocket"));
    // RFC 8441 §5: the client's Sec-WebSocket-Version/Protocol/Extensions travel as they are; the
    // key, which HTTP/2 has no use for, is ours (RFC 6455 §4.1).
    parts.headers.insert(SEC_WEBSOCKET_KEY, websocket_key());
    if !parts.headers.contains_key(SEC_WEBSOCKET_VERSION) {
        parts
            .headers
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut upstream_req: Request<RequestBody> = Request::new(
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *upstream_req.method_mut() = Method::GET;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = parts.headers;

    let response = {
        let upstream = app.upstream.send(upstream_req, Some(forward), None);
        tokio::pin!(upstream);
        tokio::select! {
            res = &mut upstream => res?,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return Ok((499, 0, Some("client_gone"))),
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return refused(app, respond, response).await;
    }
    // RFC 6455 §4.1: a 101 that does not switch to websocket fails the handshake.
    let switched = response
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !switched {
        let err = ProxyError::UpstreamInvalid("101 without Upgrade: websocket");
        app.metrics.upstream_error(err.kind());
        return Err(err);
    }
    let (head, mut body) = response.into_parts();
    let _permit = body.take_permit();
    let upgraded = body
        .take_upgraded()
        .ok_or(ProxyError::Internal("upstream upgrade failed"))?;

    let mut ok = Response::new(());
    for name in [SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_EXTENSIONS] {
        if let Some(v) = head.headers.get(&name) {
            ok.headers_mut().insert(name, v.clone());
        }
    }
    let mut send = respond
        .send_response(ok, false)
        .map_err(ProxyError::ClientGone)?;
    let _gauge = app.metrics.tunnel(Protocol::Http2);
    let idle = app.config.server.tunnel_idle_timeout;
    let activity = Activity::new();
    let io = Tracked::new(upgraded, activity.clone());
    let (read, write) = tokio::io::split(io);

    let outcome = {
        let down = send_body(
            &mut send,
            ReadBody {
                read,
                buf: vec![0; CHUNK].into_boxed_slice(),
                done: false,
            },
            None,
            idle,
        );
        let up = client_to_upstream(recv, write, activity.clone());
        tokio::pin!(down, up);
        let mut up_done = false;
        loop {
            tokio::select! {
                res = &mut down => break match res {
                    Ok(n) => Ok(n),
                    Err(SendError::ClientReset(_)) | Err(SendError::H2(_)) => Err("client_gone"),
                    Err(SendError::Stalled(_)) => Err("client_stalled"),
                    Err(_) => Err("upstream_closed"),
                },
                res = &mut up, if !up_done => match res {
                    // The client ended its side: the upstream's write side is shut down, and the
                    // upstream may still answer (a WebSocket close handshake).
                    Ok(()) => up_done = true,
                    Err(()) => break Err("client_gone"),
                },
                _ = activity.idle(idle) => break Err("tunnel_idle"),
            }
        }
    };
    match outcome {
        Ok(n) => Ok((200, n, None)),
        Err(kind) => {
            debug!(kind, "websocket tunnel ended");
            send.send_reset(h2::Reason::CANCEL);
            Ok((200, 0, Some(kind)))
        }
    }
}

/// The upstream refused the upgrade: its response is the client's, body included.
async fn refused(
    app: &App,
    respond: &mut SendResponse<Bytes>,
    response: Response<crate::upstream::UpstreamBody>,
) -> Result<(u16, u64, Option<&'static str>), ProxyError> {
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let mut head = Response::new(());
    *head.status_mut() = parts.status;
    *head.headers_mut() = parts.headers;
    let end = body.is_end_stream();
    let mut send = respond
        .send_response(head, end)
        .map_err(ProxyError::ClientGone)?;
    if end {
        return Ok((status, 0, None));
    }
    match send_body(&mut send, body, None, app.config.server.idle_timeout).await {
        Ok(n) => Ok((status, n, None)),
        Err(_) => {
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            Ok((status, 0, Some("upstream_body")))
        }
    }
}

/// Client DATA to the upstream; capacity released only once written (backpressure). `Ok` when
/// the client ended its side (after shutting down the upstream's write side), `Err` on a reset.
async fn client_to_upstream<W: AsyncWrite + Unpin>(
    mut recv: RecvStream,
    mut write: W,
    activity: Arc<Activity>,
) -> Result<(), ()> {
    while let Some(data) = recv.data().await {
        let data = data.map_err(|_| ())?;
        activity.touch();
        let n = data.len();
        write.write_all(&data).await.map_err(|_| ())?;
        let _ = recv.flow_control().release_capacity(n);
    }
    write.shutdown().await.map_err(|_| ())
}

/// The upstream's side of the tunnel as a body for the send loop: chunks as they are read, the
/// end at EOF.
impl<R: AsyncRead + Unpin> super::body::ReadAhead for ReadBody<R> {}

struct ReadBody<R> {
    read: R,
    buf: Box<[u8]>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Body for ReadBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let mut read_buf = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.read).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Ok(())) => {
                let filled = read_buf.filled();
                if filled.is_empty() {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
