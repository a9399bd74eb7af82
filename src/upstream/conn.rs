//! linkpush's HTTP/1.1 client connection to the backend (RFC 9112), driven by the future that
//! awaits its response: no task of its own, no channel between the request and the connection.
//!
//! Why not hyper's client. `benches/floor` measured hyper's upstream exchange (its dispatcher
//! task, the request channel, the HeaderMap → text → HeaderMap round trip) at ~15k instructions
//! per request, a quarter of linkpush's whole request, and a minimal client of its own at half of
//! that (docs/BENCHMARKS.md, "What the stack itself costs"). The parser is httparse, as hyper's.
//!
//! What it keeps of hyper's behaviour, each covered by tests: 1xx relay (a 103's Link fields go
//! to the request's [`InformationalQueue`], other 1xx are skipped), a 101 ends the exchange when the
//! request asked to upgrade and hands over the socket ([`Upgraded`]); response bodies framed by
//! RFC 9112 §6.3 (none for HEAD, 1xx, 204 and 304; chunked; Content-Length; close-delimited);
//! request bodies streamed as they come (Content-Length when known, else chunked), written while
//! the response is read, so a backend that answers before reading the whole upload is heard;
//! persistence by RFC 9112 §9.3; a response head bounded at [`MAX_HEAD`].
//!
//! Stale connections. A backend may close an idle keep-alive connection at any time (RFC 9112
//! §9.3.1). With no task watching the socket, the pool asks [`Conn::is_open`] at checkout, which
//! sees a close the reactor has already reported. One that races the request is found when the
//! connection ends before any byte of a response: such a request is sent once more on a new
//! connection only when that is safe, i.e. its method is idempotent (RFC 9110 §9.2.2) and it has
//! no body to replay.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{
    BoxError, ClientBodyError, Forward, Informational, InformationalQueue, RequestBody,
    X_FORWARDED_FOR,
};

/// The largest response head accepted, 1xx heads included (Envoy's 60 KiB and nginx's
/// `proxy_buffer_size` bound it too; a larger one is a 502). Also the most read ahead at once.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields in one response head or trailer section (hyper's default).
const MAX_FIELDS: usize = 100;
/// The first read of a response; doubled after each read that fills it, up to [`MAX_HEAD`].
const FIRST_READ: usize = 8 * 1024;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange or a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before a complete response head")]
    Closed,
    #[error("upstream closed the connection before the end of the response body")]
    Truncated,
    #[error("invalid upstream response: {0}")]
    Invalid(&'static str),
    #[error("upstream response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// No complete response head by the exchange's deadline (`Upstream::send` says which
    /// timeout that was).
    #[error("upstream response head timed out")]
    HeadTimedOut,
    /// The client's request body failed; the source says how (a [`ClientBodyError`]).
    #[error("request body failed")]
    RequestBody(#[source] BoxError),
}

/// One open connection to the backend, idle or serving one request.
pub struct Conn {
    io: TcpStream,
    _open: crate::metrics::GaugeGuard,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The size of the next read (see [`FIRST_READ`]).
    read_size: usize,
    /// Request heads are encoded here; its allocation is reused once the last head is written.
    wbuf: BytesMut,
    /// Whether a request was sent on this connection before (a close may then be a stale
    /// keep-alive connection, not a refusal of this request).
    reused: bool,
    /// The field names of the responses read so far, by position.
    names: Names,
    /// The deadline of the response head, one timer for the connection's life (see
    /// [`Conn::head_due`]). Allocated at the first exchange that waits.
    head_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    pub fn new(io: TcpStream, open: crate::metrics::GaugeGuard) -> Box<Conn> {
        Box::new(Conn {
            io,
            _open: open,
            rbuf: BytesMut::new(),
            read_size: FIRST_READ,
            wbuf: BytesMut::new(),
            reused: false,
            names: Names::default(),
            head_timer: None,
        })
    }

    /// Whether the response head's `deadline` has passed, registering `cx` for it if not. One
    /// timer serves every request of the connection, and it may run early: moved only when a
    /// deadline is earlier than its own (rare: each request's is later than the last one's),
    /// and when it fires before the deadline it is set to it then. A timer per request was
    /// registered and removed under the timer wheel's lock; one pushed back per request still
    /// cost tokio a conversion to ticks and an atomic update.
    fn head_due(&mut self, deadline: tokio::time::Instant, cx: &mut Context<'_>) -> bool {
        let timer = self
            .head_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        // Fired: at this deadline, or at an earlier one it was still set to.
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        timer.as_mut().reset(deadline);
        timer.as_mut().poll(cx).is_ready()
    }

    /// The head timer forgets the task that waited on it, which may be long gone by the time it
    /// fires (a pooled connection's timer stays registered).
    fn park_head_timer(&mut self) {
        if let Some(timer) = self.head_timer.as_mut() {
            let _ = timer
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }

    /// `req` encoded for this connection (see [`encode`]).
    pub fn encode(&mut self, req: Request<RequestBody>, forward: Option<&Forward>) -> Outgoing {
        encode(req, forward, &mut self.wbuf)
    }

    /// Whether an idle connection is still usable: false when the backend closed it or sent
    /// bytes nobody asked for, as far as the reactor has seen. No system call unless the socket
    /// was reported readable.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more bytes into `rbuf`: `Ready(Ok(0))` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 2 {
            self.rbuf.reserve(self.read_size);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        // Through `AsyncRead`, not `try_read_buf`: a read that does not fill the buffer clears
        // the socket's readiness, so the next wait for bytes (a body after its head, the pool's
        // `is_open` at the next checkout) costs no `recv(2)` that would only say EAGAIN.
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n == room && self.read_size < MAX_HEAD {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sending {
    /// Content-Length: the bytes still to come.
    Length(u64),
    Chunked,
}

/// The bytes of one request still to be written: the head and body pieces queued, and the body
/// itself until its end.
pub struct Outgoing {
    queue: VecDeque<Bytes>,
    body: Option<(RequestBody, Sending)>,
    /// The head again, kept while a retry on a new connection may still be needed.
    retry: Option<Bytes>,
    head_request: bool,
    upgrade: bool,
}

/// A request encoded for the wire (RFC 9112 §3): the head written from the request's own parts,
/// the body left to stream. With `forward`, the head is rewritten for the upstream (SPEC §3) in
/// the same pass: see [`Forward`].
pub fn encode(
    req: Request<RequestBody>,
    forward: Option<&Forward>,
    wbuf: &mut BytesMut,
) -> Outgoing {
    let (parts, body) = req.into_parts();
    let sending = if body.is_end_stream() {
        None
    } else if let Some(n) = body.size_hint().exact() {
        Some(Sending::Length(n))
    } else {
        match parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(n) => Some(Sending::Length(n)),
            None => Some(Sending::Chunked),
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let mut size = parts.method.as_str().len() + target.len() + 160;
    // Whether `write_forwarded` has Connection or TE to read first (never over HTTP/2): found
    // in this pass, so the common request costs no lookups.
    let mut options = false;
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
        options |= name == header::CONNECTION || name == header::TE;
    }
    wbuf.reserve(size);
    wbuf.put_slice(parts.method.as_str().as_bytes());
    wbuf.put_u8(b' ');
    wbuf.put_slice(target.as_bytes());
    wbuf.put_slice(b" HTTP/1.1\r\n");
    match forward {
        Some(forward) => {
            write_forwarded(&parts.headers, options, forward, sending.is_some(), wbuf);
        }
        None => {
            for (name, value) in &parts.headers {
                // The framing is this connection's to decide (RFC 9112 §6.1, §6.2).
                if name == header::TRANSFER_ENCODING
                    || (name == header::CONTENT_LENGTH && sending.is_some())
                {
                    continue;
                }
                put_field(wbuf, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    match sending {
        Some(Sending::Length(n)) => {
            put_field(
                wbuf,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Some(Sending::Chunked) => put_field(wbuf, b"transfer-encoding", b"chunked"),
        None => {}
    }
    wbuf.put_slice(b"\r\n");
    let head = wbuf.split().freeze();
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let upgrade = asks_upgrade(&parts.headers, forward);
    Outgoing {
        retry: (sending.is_none() && idempotent).then(|| head.clone()),
        queue: VecDeque::from([head]),
        body: sending.map(|s| (body, s)),
        head_request: parts.method == Method::HEAD,
        upgrade,
    }
}

/// Whether the request asks the upstream to switch protocols: its `Forward` says so, or, sent as
/// it is, its fields carry `Upgrade`.
pub fn asks_upgrade(headers: &HeaderMap, forward: Option<&Forward>) -> bool {
    match forward {
        Some(forward) => forward.upgrade.is_some(),
        None => headers.contains_key(header::UPGRADE),
    }
}

fn put_field(wbuf: &mut BytesMut, name: &[u8], value: &[u8]) {
    wbuf.put_slice(name);
    wbuf.put_slice(b": ");
    wbuf.put_slice(value);
    wbuf.put_slice(b"\r\n");
}

/// The client's fields rewritten for the upstream (SPEC §3), written in one pass over them. A
/// header map yields all values of one name one after another, which is what lets cookies and
/// X-Forwarded-For be joined as they are met. `options`: whether `headers` has a Connection or TE
/// field.
fn write_forwarded(
    headers: &HeaderMap,
    options: bool,
    forward: &Forward,
    framed: bool,
    wbuf: &mut BytesMut,
) {
    if let Some(host) = &forward.host {
        put_field(wbuf, b"host", host.as_bytes());
    }
    // Fields `Connection` names (RFC 9110 §7.6.1); HTTP/2 requests never carry it.
    let mut named: Vec<HeaderName> = Vec::new();
    // RFC 9113 §8.2.2: TE passes only as `trailers`, and only when nothing else is asked.
    let mut te_trailers = true;
    if options {
        for value in headers.get_all(header::CONNECTION) {
            named.extend(super::connection_options(value.as_bytes()));
        }
        te_trailers = !named.contains(&header::TE)
            && headers
                .get_all(header::TE)
                .iter()
                .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    }
    // The name whose values are being joined into one line, if any.
    let mut joining: Option<&HeaderName> = None;
    let mut forwarded_for = false;
    for (name, value) in headers {
        if let Some(open) = joining {
            if open == name {
                wbuf.put_slice(if open == header::COOKIE { b"; " } else { b", " });
                wbuf.put_slice(value.as_bytes());
                continue;
            }
            close_joined(wbuf, open, forward);
            joining = None;
        }
        let keep = match name.as_str() {
            // Ours to write, from `forward` (and the framing, from the body).
            "host" | "x-forwarded-host" | "x-forwarded-proto" => false,
            "x-request-id" => forward.request_id.is_none(),
            "content-length" => !framed,
            "te" => te_trailers,
            // Connection-specific, Transfer-Encoding among them (the framing is ours too).
            fixed if super::fixed_index(fixed).is_some() => false,
            "cookie" | "x-forwarded-for" => {
                forwarded_for |= name == X_FORWARDED_FOR;
                wbuf.put_slice(name.as_str().as_bytes());
                wbuf.put_slice(b": ");
                wbuf.put_slice(value.as_bytes());
                joining = Some(name);
                continue;
            }
            _ => named.is_empty() || !named.contains(name),
        };
        if keep {
            put_field(wbuf, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(open) = joining {
        close_joined(wbuf, open, forward);
    }
    if !forwarded_for {
        put_field(wbuf, b"x-forwarded-for", forward.forwarded_for.as_bytes());
    }
    if let Some(host) = &forward.host {
        put_field(wbuf, b"x-forwarded-host", host.as_bytes());
    }
    put_field(wbuf, b"x-forwarded-proto", forward.proto.as_bytes());
    if let Some(id) = &forward.request_id {
        put_field(wbuf, b"x-request-id", id);
    }
    if let Some(token) = &forward.upgrade {
        put_field(wbuf, b"upgrade", token.as_bytes());
        put_field(wbuf, b"connection", b"upgrade");
    }
}

/// Ends a joined line: X-Forwarded-For gets the client's address last.
fn close_joined(wbuf: &mut BytesMut, name: &HeaderName, forward: &Forward) {
    if name == X_FORWARDED_FOR {
        wbuf.put_slice(b", ");
        wbuf.put_slice(forward.forwarded_for.as_bytes());
    }
    wbuf.put_slice(b"\r\n");
}

/// A chunk's size line: its length in hex, then CRLF.
fn chunk_line(len: usize) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let mut line = BytesMut::with_capacity(digits.len() - at + 2);
    line.put_slice(&digits[at..]);
    line.put_slice(b"\r\n");
    line.freeze()
}

/// What writing found wrong.
enum WriteError {
    Io(io::Error),
    Body(BoxError),
}

impl Outgoing {
    /// The same request, for a new connection, when it may be sent again (see the module docs).
    pub fn retry(&self) -> Option<Outgoing> {
        self.retry.clone().map(|head| Outgoing {
            queue: VecDeque::from([head]),
            body: None,
            retry: None,
            head_request: self.head_request,
            upgrade: self.upgrade,
        })
    }

    fn done(&self) -> bool {
        self.queue.is_empty() && self.body.is_none()
    }

    /// Writes what can be written without waiting; `Ready(Ok)` once the request is all out.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut TcpStream,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            if !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 8];
                let mut n = 0;
                for (slot, piece) in slices.iter_mut().zip(&self.queue) {
                    *slot = IoSlice::new(piece);
                    n += 1;
                }
                let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))
                    .map_err(WriteError::Io)?;
                if written == 0 {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.advance(written);
                continue;
            }
            let Some((body, sending)) = &mut self.body else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        match sending {
                            Sending::Length(left) => {
                                let Some(rest) = left.checked_sub(data.len() as u64) else {
                                    return Poll::Ready(Err(WriteError::Body(
                                        ClientBodyError::boxed(
                                            "request body longer than its Content-Length",
                                        ),
                                    )));
                                };
                                *left = rest;
                            }
                            Sending::Chunked => {
                                self.queue.push_back(chunk_line(data.len()));
                            }
                        }
                        self.queue.push_back(data);
                        if *sending == Sending::Chunked {
                            self.queue.push_back(Bytes::from_static(b"\r\n"));
                        }
                    }
                    Err(frame) => {
                        // Trailers: only chunked framing can carry them (RFC 9112 §7.1.2).
                        if let (Ok(trailers), Sending::Chunked) = (frame.into_trailers(), *sending)
                        {
                            let mut end = BytesMut::from(&b"0\r\n"[..]);
                            for (name, value) in &trailers {
                                end.put_slice(name.as_str().as_bytes());
                                end.put_slice(b": ");
                                end.put_slice(value.as_bytes());
                                end.put_slice(b"\r\n");
                            }
                            end.put_slice(b"\r\n");
                            self.queue.push_back(end.freeze());
                            self.body = None;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(WriteError::Body(e))),
                None => {
                    match sending {
                        Sending::Length(0) => {}
                        Sending::Length(_) => {
                            return Poll::Ready(Err(WriteError::Body(ClientBodyError::boxed(
                                "request body shorter than its Content-Length",
                            ))));
                        }
                        Sending::Chunked => {
                            self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        }
                    }
                    self.body = None;
                }
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

/// An exchange that failed.
pub enum Failed {
    /// The connection ended before any byte of a response, and the request may be sent again
    /// on a new connection (see the module docs).
    Retry(Outgoing),
    Error(Error),
}

/// A final response head and the body that follows it.
pub struct Exchanged {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: ConnBody,
}

/// Sends `out` on `conn` and reads up to the final response head, passing the Link fields of
/// each 103 to `informational`.
/// (An `async` block, not an `async fn`: see [`crate::upstream::Upstream::send`].)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn exchange(
    mut conn: Box<Conn>,
    mut out: Outgoing,
    informational: Option<&InformationalQueue>,
    head_deadline: tokio::time::Instant,
) -> impl Future<Output = Result<Exchanged, Failed>> {
    async move {
        let reused = std::mem::replace(&mut conn.reused, true);
        // An error writing does not end the exchange: the backend may have answered (a 413 before
        // the whole upload) and closed; its response is still read, and the error reported only if
        // none comes.
        let mut write_failed: Option<io::Error> = None;
        let mut writing = true;
        // Bytes of a response read (a pooled connection's buffer is empty: `take_reusable`).
        let mut got_bytes = false;
        let head = std::future::poll_fn(|cx| {
            loop {
                if writing {
                    match out.poll_write(cx, &mut conn.io) {
                        Poll::Ready(Ok(())) => writing = false,
                        Poll::Ready(Err(WriteError::Io(e))) => {
                            writing = false;
                            write_failed = Some(e);
                            out.body = None;
                            out.queue.clear();
                        }
                        Poll::Ready(Err(WriteError::Body(e))) => {
                            return Poll::Ready(Err(Error::RequestBody(e)));
                        }
                        Poll::Pending => {}
                    }
                }
                match parse_head(
                    &mut conn.rbuf,
                    &mut conn.names,
                    out.head_request,
                    out.upgrade,
                ) {
                    Ok(Some(Parsed::Interim(status, headers))) => {
                        if status == StatusCode::EARLY_HINTS
                            && let Some(queue) = informational
                        {
                            let links: Informational =
                                headers.get_all(header::LINK).iter().cloned().collect();
                            if !links.is_empty() {
                                queue.send(links);
                            }
                        }
                        continue;
                    }
                    Ok(Some(Parsed::Final(head))) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                // (`parse_head` refuses a head still incomplete at MAX_HEAD.)
                match conn.poll_fill(cx) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(match write_failed.take() {
                            Some(e) if !got_bytes => Error::Io(e),
                            _ => Error::Closed,
                        }));
                    }
                    Poll::Ready(Ok(_)) => got_bytes = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => {
                        if conn.head_due(head_deadline, cx) {
                            return Poll::Ready(Err(Error::HeadTimedOut));
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await;
        conn.park_head_timer();
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                let stale = reused && !got_bytes && matches!(e, Error::Closed | Error::Io(_));
                return Err(match out.retry() {
                    Some(again) if stale => Failed::Retry(again),
                    _ => Failed::Error(e),
                });
            }
        };
        out.retry = None;
        let pending = (!out.done() && write_failed.is_none()).then_some(out);
        Ok(Exchanged {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body: ConnBody {
                conn: Some(conn),
                framing: head.framing,
                pending,
                keep_alive: head.keep_alive && write_failed.is_none(),
            },
        })
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, PartialEq)]
enum Framing {
    /// No body, or the end of one read.
    Done,
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes the connection.
    Close,
    /// The connection switched protocols: it belongs to an [`Upgraded`] now.
    Switched,
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

enum Parsed {
    Interim(StatusCode, HeaderMap),
    Final(Head),
}

/// What one field of a response head means to the parser.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Keep-Alive, Proxy-Connection, TE, Upgrade, HTTP2-Settings: connection-specific fields
    /// with no bearing on framing (RFC 9110 §7.6.1, RFC 9113 §8.2.2).
    HopByHop,
    Link,
}

/// A field name's role, from its bytes as received (any case): one length test, then at most
/// two comparisons.
fn role(name: &[u8]) -> Role {
    let is = |lower: &[u8]| folds_to(name, lower);
    match name.len() {
        2 if is(b"te") => Role::HopByHop,
        4 if is(b"link") => Role::Link,
        7 if is(b"upgrade") => Role::HopByHop,
        10 if is(b"connection") => Role::Connection,
        10 if is(b"keep-alive") => Role::HopByHop,
        14 if is(b"content-length") => Role::ContentLength,
        14 if is(b"http2-settings") => Role::HopByHop,
        16 if is(b"proxy-connection") => Role::HopByHop,
        17 if is(b"transfer-encoding") => Role::TransferEncoding,
        _ => Role::Other,
    }
}

/// `bytes.eq_ignore_ascii_case(lower)` for a `lower` of lowercase letters, digits and `-`, as
/// the bytes of a parsed head allow: each byte is folded with `| 0x20` and the differences are
/// or-ed together, with no branch per byte. Exact for any byte outside the controls 0x00–0x1F
/// (`0x0D | 0x20` is `-`, `0x12 | 0x20` is `2`); httparse lets no control into a field name and
/// none but tab into a value, and tab folds to `)`, which no `lower` here has. Callgrind:
/// `eq_ignore_ascii_case`, a branch per byte, cost ~250 instructions per response in `role` and
/// the Connection options.
fn folds_to(bytes: &[u8], lower: &[u8]) -> bool {
    bytes.len() == lower.len()
        && bytes
            .iter()
            .zip(lower)
            .fold(0, |diff, (&b, &l)| diff | ((b | 0x20) ^ l))
            == 0
}

/// A field's name and value as offsets into its head (which [`MAX_HEAD`] keeps under 64 KiB).
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u16, u16),
    value: (u16, u16),
}

/// Parses one response head from the front of `buf` and removes it, or returns `None` when more
/// bytes are needed.
///
/// One pass over the fields reads what framing and persistence need (RFC 9112 §6.3, §9.3) and
/// leaves out of the final head the fields that never cross the proxy: connection-specific ones
/// (as [`super::strip_hop_by_hop`] would remove them, and TE whatever its value; a 101 keeps them all, for its
/// front end), and Content-Length fields after the first (RFC 9110 §8.6: they must agree). A
/// 1xx keeps only its Link fields, all the proxy reads of it.
fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    head_request: bool,
    upgrade: bool,
) -> Result<Option<Parsed>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Offsets fit a u16: no head is read beyond the first MAX_HEAD - 1 bytes.
    let window = &buf[..buf.len().min(MAX_HEAD - 1)];
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        window,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() < buf.len() || buf.len() >= MAX_HEAD - 1 => {
            return Err(Error::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many header fields"));
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("invalid status code"))?;
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let interim = status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;

    let base = window.as_ptr() as usize;
    let at = |part: &[u8]| ((part.as_ptr() as usize - base) as u16, part.len() as u16);
    let mut spans = [Span::default(); MAX_FIELDS];
    let mut kept = 0;
    let mut length: Option<u64> = None;
    let mut length_kept = false;
    // Whether the last transfer coding named is chunked, when any is.
    let mut chunked: Option<bool> = None;
    let (mut close, mut keep_alive_option) = (false, false);
    // Fields `Connection` names (RFC 9110 §7.6.1): rare, so allocated only when met.
    let mut named: Vec<HeaderName> = Vec::new();
    for field in res.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        let role = role(name);
        let keep = match role {
            Role::ContentLength => {
                length = Some(content_length(value, length)?);
                !interim && !std::mem::replace(&mut length_kept, true)
            }
            Role::TransferEncoding => {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(folds_to(last.trim_ascii(), b"chunked"));
                false
            }
            Role::Connection => {
                // The options, and the fields they name, in one pass over the value.
                for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if folds_to(option, b"close") {
                        close = true;
                    } else if folds_to(option, b"keep-alive") {
                        keep_alive_option = true;
                    } else if !switching
                        && !interim
                        && let Some(name) = super::connection_option(option)
                    {
                        named.push(name);
                    }
                }
                false
            }
            Role::HopByHop => false,
            Role::Link => true,
            Role::Other => !interim,
        };
        if keep || switching {
            spans[kept] = Span {
                name: at(name),
                value: at(value),
            };
            kept += 1;
        }
    }
    let head = buf.split_to(len).freeze();
    if interim {
        // Not by the connection's names: a 103 between final heads would move them.
        let headers = fields_from(&head, &spans[..kept], None)?;
        return Ok(Some(Parsed::Interim(status, headers)));
    }
    let mut headers = names.final_fields(&head, &spans[..kept])?;
    for name in named {
        headers.remove(name);
    }
    // RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
    let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_option);
    let framing = if switching {
        // A 101 the request did not ask for is refused by `normalize_response`; the connection
        // is not reused either way.
        keep_alive = false;
        if upgrade {
            Framing::Switched
        } else {
            Framing::Done
        }
    } else if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if let Some(chunked) = chunked {
        // RFC 9112 §6.3 rule 3: Transfer-Encoding wins over Content-Length, and such a message
        // may be an attempt at smuggling: the connection is not reused. The body is re-framed
        // for the client, its length unknown.
        if length_kept {
            keep_alive = false;
            headers.remove(header::CONTENT_LENGTH);
        }
        if chunked {
            Framing::Chunked(Chunked::default())
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::Close
            }
        }
    };
    Ok(Some(Parsed::Final(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })))
}

/// The field names of a connection's final response heads, by position. A backend sends the same
/// fields in the same order response after response, so most names are found where they were
/// last time, compared byte for byte as received, and not parsed again
/// (`HeaderName::from_bytes`: callgrind, ~120 instructions a name; an allocation for one it
/// does not know). At most [`NAMES`] positions, of names up to [`NAME_BYTES`] bytes.
///
/// When every name of a final head is found so, the map itself is not built again either: a
/// map kept from an earlier head with the same names (`shape`) is cloned, and given this head's
/// values where they differ from the kept ones. Cloning copies the map's index as it is, where
/// appending hashes each name and probes for its slot; a value that is the same (a backend's
/// Server, Content-Type, Cache-Control, an asset's ETag) is not checked and sliced again
/// (callgrind, with both: ~1,400 instructions fewer per request on `/small.txt`'s seven fields,
/// ~2,900 on `/index.html`'s twelve).
#[derive(Default)]
pub struct Names {
    known: Vec<Known>,
    /// The names `known` holds at its first `shape.len()` positions, in that order, as a map
    /// whose iteration order is that order, with the values of the head it was kept from (their
    /// own copies, so that no response's buffer is held; empty for one over
    /// [`SHAPE_VALUE_BYTES`]). `None` as soon as a position changes.
    shape: Option<HeaderMap>,
    /// How many fields the last final head had.
    last_len: usize,
}

const NAMES: usize = 32;
const NAME_BYTES: usize = 32;
/// The longest value a shape keeps: at most [`NAMES`] of them, 16 KiB, for each pooled
/// connection.
const SHAPE_VALUE_BYTES: usize = 512;

struct Known {
    raw: [u8; NAME_BYTES],
    len: u8,
    name: HeaderName,
}

impl Known {
    fn is(&self, raw: &[u8]) -> bool {
        self.raw[..usize::from(self.len)] == *raw
    }
}

impl Names {
    /// The name `raw` at position `at` of a head.
    fn name(&mut self, at: usize, raw: &[u8]) -> Result<HeaderName, Error> {
        if let Some(known) = self.known.get(at)
            && known.is(raw)
        {
            return Ok(known.name.clone());
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Error::Invalid("invalid field name"))?;
        if raw.len() <= NAME_BYTES && at <= self.known.len() && at < NAMES {
            let mut known = Known {
                raw: [0; NAME_BYTES],
                len: raw.len() as u8,
                name: name.clone(),
            };
            known.raw[..raw.len()].copy_from_slice(raw);
            match self.known.get_mut(at) {
                Some(slot) => *slot = known,
                None => self.known.push(known),
            }
            // The position the shape relied on changed.
            self.shape = None;
        }
        Ok(name)
    }

    /// The fields of a final head: the shape's clone when the head's names are the shape's,
    /// else a map built field by field, whose shape is kept when the last final head had the
    /// same names: the second of two heads with the same names, so a connection whose heads
    /// alternate between two lists of names (one a prefix of the other too) pays for no shape
    /// it cannot use.
    fn final_fields(&mut self, head: &Bytes, spans: &[Span]) -> Result<HeaderMap, Error> {
        // Every name found where `known` has it, so no position of `known` moves below.
        let known_names = spans.len() <= self.known.len()
            && spans
                .iter()
                .zip(&self.known)
                .all(|(span, known)| known.is(span.name(head)));
        let last_len = std::mem::replace(&mut self.last_len, spans.len());
        let same_as_last = known_names && spans.len() == last_len;
        if known_names
            && let Some(shape) = &self.shape
            && shape.len() == spans.len()
        {
            let mut headers = shape.clone();
            for ((_, value), span) in headers.iter_mut().zip(spans) {
                if value.as_bytes() != span.raw_value(head) {
                    *value = span.value(head)?;
                }
            }
            return Ok(headers);
        }
        let headers = fields_from(head, spans, Some(self))?;
        // Kept only when it iterates in the order received: a name repeated after another
        // comes out beside its first.
        if same_as_last
            && headers
                .iter()
                .zip(&self.known)
                .all(|((name, _), known)| *name == known.name)
        {
            let mut shape = headers.clone();
            for value in shape.values_mut() {
                *value = match value.as_bytes() {
                    kept if kept.len() <= SHAPE_VALUE_BYTES => HeaderValue::from_bytes(kept)
                        .map_err(|_| Error::Invalid("invalid field value"))?,
                    _ => HeaderValue::from_static(""),
                };
            }
            self.shape = Some(shape);
        }
        Ok(headers)
    }
}

impl Span {
    fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        let (at, len) = (usize::from(self.name.0), usize::from(self.name.1));
        &head[at..at + len]
    }

    fn raw_value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        let (at, len) = (usize::from(self.value.0), usize::from(self.value.1));
        &head[at..at + len]
    }

    fn value(&self, head: &Bytes) -> Result<HeaderValue, Error> {
        let (at, len) = (usize::from(self.value.0), usize::from(self.value.1));
        HeaderValue::from_maybe_shared(head.slice(at..at + len))
            .map_err(|_| Error::Invalid("invalid field value"))
    }
}

/// `names`: the connection's, for a final head; none for an interim head or a trailer section.
fn fields_from(
    head: &Bytes,
    spans: &[Span],
    mut names: Option<&mut Names>,
) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (at, span) in spans.iter().enumerate() {
        let raw = span.name(head);
        let name = match names.as_deref_mut() {
            Some(names) => names.name(at, raw)?,
            None => {
                HeaderName::from_bytes(raw).map_err(|_| Error::Invalid("invalid field name"))?
            }
        };
        headers.append(name, span.value(head)?);
    }
    Ok(headers)
}

/// RFC 9110 §8.6: a Content-Length value (a list of equal numbers is that number) that agrees
/// with `before`, the value of any earlier field; differing ones, or a value that is not a
/// number, make the response invalid.
fn content_length(value: &[u8], before: Option<u64>) -> Result<u64, Error> {
    let mut length = before;
    for element in value.split(|&b| b == b',') {
        let element = element.trim_ascii();
        if element.is_empty() || element.len() > 19 || !element.iter().all(u8::is_ascii_digit) {
            return Err(Error::Invalid("invalid Content-Length"));
        }
        let n = element
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(Error::Invalid("conflicting Content-Length"));
        }
        length = Some(n);
    }
    length.ok_or(Error::Invalid("invalid Content-Length"))
}

/// The chunked coding's decoder (RFC 9112 §7.1), fed from the front of a buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Clone, Default, PartialEq)]
enum ChunkState {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: the bytes of its data still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    End,
}

/// What the decoder found at the front of its buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed.
    More,
}

impl Chunked {
    /// Decodes the next piece of the body from the front of `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(Error::Invalid("chunk-size line too long"));
                        }
                        return Ok(Decoded::More);
                    };
                    if lf > MAX_CHUNK_LINE {
                        return Err(Error::Invalid("chunk-size line too long"));
                    }
                    let size = chunk_size(&buf[..lf])?;
                    buf.advance(lf + 1);
                    self.state = match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        _ => ChunkState::Data(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = ChunkState::End;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if buf.len() >= MAX_HEAD {
                            return Err(Error::HeadTooLarge);
                        }
                        if buf.len() >= 2 && buf[0] == b'\r' && buf[1] != b'\n' {
                            return Err(Error::Invalid("malformed trailer section"));
                        }
                        return Ok(Decoded::More);
                    };
                    if end + 4 >= MAX_HEAD {
                        return Err(Error::HeadTooLarge);
                    }
                    let section = buf.split_to(end + 4).freeze();
                    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                    let parsed = match httparse::parse_headers(&section, &mut fields) {
                        Ok(httparse::Status::Complete((_, parsed))) => parsed,
                        _ => return Err(Error::Invalid("malformed trailer section")),
                    };
                    let base = section.as_ptr() as usize;
                    let at =
                        |part: &[u8]| ((part.as_ptr() as usize - base) as u16, part.len() as u16);
                    let spans: Vec<Span> = parsed
                        .iter()
                        .map(|f| Span {
                            name: at(f.name.as_bytes()),
                            value: at(f.value),
                        })
                        .collect();
                    let trailers = fields_from(&section, &spans, None)?;
                    self.state = ChunkState::End;
                    return Ok(Decoded::Trailers(trailers));
                }
                ChunkState::End => return Ok(Decoded::End),
            }
        }
    }

    fn ended(&self) -> bool {
        self.state == ChunkState::End
    }
}

/// A chunk-size line without its LF: hex digits, then optional extensions (RFC 9112 §7.1.1,
/// which are ignored), then CR.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(Error::Invalid("chunk-size line without CRLF"));
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Invalid("invalid chunk size"));
    }
    let rest = &line[digits..];
    // BWS before an extension is tolerated, as RFC 9112 §7.1.1 asks.
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(Error::Invalid("invalid chunk size"));
    }
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::Invalid("invalid chunk extension"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or(Error::Invalid("chunk size too large"))?;
    }
    Ok(size)
}

/// A response body read from its connection by whoever polls it. At its end the connection is
/// handed back by [`ConnBody::take_reusable`] when it may carry another request.
pub struct ConnBody {
    /// `None` once taken (pooled, upgraded) or dropped on an error.
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// The rest of a request body the backend answered before reading it all.
    pending: Option<Outgoing>,
    keep_alive: bool,
}

impl ConnBody {
    /// The connection, if the body has ended and the connection may serve another request:
    /// kept alive by both sides, request written whole, and nothing read beyond the response.
    pub fn take_reusable(&mut self) -> Option<Box<Conn>> {
        let reusable = self.framing == Framing::Done
            && self.keep_alive
            && self.pending.is_none()
            && self.conn.as_ref().is_some_and(|c| c.rbuf.is_empty());
        if reusable { self.conn.take() } else { None }
    }

    /// The socket of a connection that switched protocols (a 101 to an upgrade request), with
    /// the bytes the backend sent after its 101.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        if self.framing != Framing::Switched {
            return None;
        }
        let conn = self.conn.take()?;
        let conn = *conn;
        Some(Upgraded {
            leftover: conn.rbuf.freeze(),
            io: conn.io,
            _open: conn._open,
        })
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = Framing::Done;
        self.keep_alive = false;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl Body for ConnBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // The rest of the request first, without waiting for it: the backend reads it while it
        // answers (an echo), or has stopped reading, and then the connection is not reused.
        if let Some(out) = &mut this.pending {
            match out.poll_write(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => this.pending = None,
                Poll::Ready(Err(_)) => {
                    this.pending = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut this.framing {
                Framing::Done | Framing::Switched => return Poll::Ready(None),
                Framing::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.rbuf.len());
                        let data = conn.rbuf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.framing = Framing::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.rbuf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return this.fail(e),
                },
                Framing::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if this.framing == Framing::Close {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return this.fail(Error::Truncated);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Error::Io(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.framing {
            Framing::Done | Framing::Switched => true,
            Framing::Chunked(c) => c.ended(),
            Framing::Length(_) | Framing::Close => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done | Framing::Switched => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A connection that switched protocols, for a tunnel: the bytes read past the 101 first, then
/// the socket. Counted in `linkpush_upstream_connections` until dropped.
pub struct Upgraded {
    io: TcpStream,
    _open: crate::metrics::GaugeGuard,
    leftover: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover[..n]);
            self.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Every `lower` that `folds_to` is given.
    const FOLDED: [&[u8]; 11] = [
        b"te",
        b"link",
        b"upgrade",
        b"connection",
        b"keep-alive",
        b"content-length",
        b"http2-settings",
        b"proxy-connection",
        b"transfer-encoding",
        b"close",
        b"chunked",
    ];

    /// A byte httparse lets into a field name or value: tab, and 0x20–0xFF (names are a subset).
    fn head_byte() -> impl Strategy<Value = u8> {
        prop_oneof![Just(b'\t'), 0x20u8..=0xFF]
    }

    /// `lower` in any case, with at most one byte replaced by any byte of a head.
    fn near(lower: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<bool>(), lower.len()),
            proptest::option::of((0..lower.len(), head_byte())),
        )
            .prop_map(move |(upper, replaced)| {
                let mut bytes: Vec<u8> = lower
                    .iter()
                    .zip(upper)
                    .map(|(&b, up)| if up { b.to_ascii_uppercase() } else { b })
                    .collect();
                if let Some((at, b)) = replaced {
                    bytes[at] = b;
                }
                bytes
            })
    }

    proptest! {
        #[test]
        fn folding_compares_as_eq_ignore_ascii_case(
            (lower, bytes) in proptest::sample::select(FOLDED.to_vec()).prop_flat_map(|lower| {
                (
                    Just(lower),
                    prop_oneof![near(lower), proptest::collection::vec(head_byte(), 0..20)],
                )
            })
        ) {
            prop_assert_eq!(folds_to(&bytes, lower), bytes.eq_ignore_ascii_case(lower));
        }
    }

    /// Field names a backend might send, in two cases, one too long for `Names` to keep.
    const POOL: [&str; 5] = [
        "Server",
        "server",
        "Link",
        "X-A",
        "x-long-name-that-no-position-of-names-keeps",
    ];

    /// A head as sent: its status and its fields.
    type Sent<'a> = (u16, Vec<(&'a str, &'a str)>);

    /// Each head parsed in turn with one connection's `Names` gives the status and the fields,
    /// in the order the map gives them, that it gives parsed alone.
    fn parse_as_alone(heads: &[Sent<'_>]) -> Result<(), TestCaseError> {
        fn listed(parsed: Result<Option<Parsed>, Error>) -> (u16, Vec<(String, Vec<u8>)>) {
            let (status, headers) = match parsed {
                Ok(Some(Parsed::Final(h))) => (h.status, h.headers),
                Ok(Some(Parsed::Interim(status, headers))) => (status, headers),
                _ => panic!("a head"),
            };
            let fields = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            (status.as_u16(), fields)
        }
        let mut names = Names::default();
        for (status, fields) in heads {
            let mut raw = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n");
            for (name, value) in fields {
                raw += &format!("{name}: {value}\r\n");
            }
            raw += "\r\n";
            let alone = listed(head(&raw));
            let on_connection = listed(parse_head(
                &mut BytesMut::from(raw.as_str()),
                &mut names,
                false,
                false,
            ));
            prop_assert_eq!(on_connection, alone, "{}", raw);
        }
        Ok(())
    }

    proptest! {
        /// Names found by position, and maps cloned from the last final head's shape, give
        /// each head of a connection the fields it would have had parsed alone.
        #[test]
        fn a_connection_s_heads_parse_as_each_would_alone(
            // A backend sends a few lists of names again and again, with other values.
            lists in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(POOL.to_vec()), 0..5),
                1..4,
            ),
            heads in proptest::collection::vec(
                (
                    prop_oneof![4 => Just(200u16), 1 => Just(103u16)],
                    any::<proptest::sample::Index>(),
                    // Few values, so that a head often has some of the shape's.
                    proptest::collection::vec("[ab]{0,2}", 5),
                ),
                1..16,
            )
        ) {
            let heads: Vec<Sent<'_>> = heads
                .iter()
                .map(|(status, list, values)| {
                    let names = list.get(&lists).iter().copied();
                    (*status, names.zip(values.iter().map(String::as_str)).collect())
                })
                .collect();
            parse_as_alone(&heads)?;
        }
    }

    #[test]
    fn a_map_is_cloned_only_from_the_shape_of_the_same_names() {
        let long = "v".repeat(SHAPE_VALUE_BYTES + 1);
        let cases: [&[Sent<'_>]; 6] = [
            // A name repeated after another: the map gives it beside its first.
            &[
                (200, vec![("Link", "1"), ("X-A", "2"), ("Link", "3")]),
                (200, vec![("Link", "4"), ("X-A", "5"), ("Link", "6")]),
            ],
            // Fewer names, then more, than the shape's.
            &[
                (200, vec![("Server", "1"), ("X-A", "2")]),
                (200, vec![("Server", "3")]),
                (200, vec![("Server", "4"), ("X-A", "5"), ("Vary", "6")]),
            ],
            // A head whose map is not kept moves the names the shape was kept for.
            &[
                (200, vec![("X-A", "1"), ("Server", "2")]),
                (200, vec![("Link", "3"), ("Server", "4"), ("Link", "5")]),
                (200, vec![("Link", "6"), ("Server", "7")]),
            ],
            // A name too long to be kept by position.
            &[
                (200, vec![("Server", "1"), ("X-A", "2")]),
                (200, vec![("Server", "3"), (POOL[4], "4")]),
                (200, vec![("Server", "5"), ("X-A", "6")]),
            ],
            // Values the same as the shape's, or not; one too long for the shape to keep.
            &[
                (200, vec![("Server", "s"), ("X-A", &long), ("Vary", "")]),
                (200, vec![("Server", "s"), ("X-A", &long), ("Vary", "")]),
                (200, vec![("Server", "s"), ("X-A", &long), ("Vary", "")]),
                (200, vec![("Server", "t"), ("X-A", ""), ("Vary", "v")]),
                (200, vec![("Server", "s"), ("X-A", "x"), ("Vary", "")]),
            ],
            // A 103 between final heads, and the same names in another case.
            &[
                (200, vec![("Link", "1"), ("Server", "2")]),
                (103, vec![("Link", "3")]),
                (200, vec![("link", "4"), ("server", "5")]),
                (200, vec![("LINK", "6"), ("Server", "7")]),
            ],
        ];
        for heads in cases {
            if let Err(e) = parse_as_alone(heads) {
                panic!("{e}");
            }
        }

        // A shape is kept from the second of two heads with the same names, never from heads
        // that alternate.
        fn parse(names: &mut Names, fields: &str) {
            let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{fields}\r\n");
            let parsed = parse_head(&mut BytesMut::from(raw.as_str()), names, false, false);
            assert!(matches!(parsed, Ok(Some(Parsed::Final(_)))), "{raw}");
        }
        let mut names = Names::default();
        let (a, b) = ("Server: a\r\nX-A: 1\r\n", "Vary: b\r\nX-A: 1\r\n");
        for fields in [a, b, a, b] {
            parse(&mut names, fields);
        }
        assert!(names.shape.is_none(), "alternating heads keep no shape");
        let mut prefix = Names::default();
        for fields in [a, "Server: a\r\n", a, "Server: a\r\n"] {
            parse(&mut prefix, fields);
        }
        assert!(
            prefix.shape.is_none(),
            "nor heads whose names are a prefix of the others'"
        );
        parse(&mut names, b);
        let kept = |names: &Names| {
            let shape = names.shape.as_ref().expect("a shape");
            shape
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(&names), ["content-length=0", "vary=b", "x-a=1"]);
        // Its values are the ones of the head it was kept from, one too long left empty.
        let long = format!("X-A: {}\r\n", "v".repeat(SHAPE_VALUE_BYTES + 1));
        let short = format!("X-A: {}\r\n", "v".repeat(SHAPE_VALUE_BYTES));
        let short_kept = format!("x-a={}", "v".repeat(SHAPE_VALUE_BYTES));
        for fields in [a, &short, &short] {
            parse(&mut names, fields);
        }
        assert_eq!(kept(&names), ["content-length=0".to_owned(), short_kept]);
        for fields in [a, &long, &long] {
            parse(&mut names, fields);
        }
        assert_eq!(kept(&names), ["content-length=0", "x-a="]);
        for fields in [&short, &short] {
            parse(&mut names, fields);
        }
        assert_eq!(
            kept(&names),
            ["content-length=0", "x-a="],
            "the first head's values kept"
        );
    }

    fn empty() -> RequestBody {
        Empty::new().map_err(|e| match e {}).boxed_unsync()
    }

    /// A body of the given frames, its length unknown (so chunked when sent).
    fn frames(frames: Vec<Frame<Bytes>>) -> RequestBody {
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
        StreamBody::new(stream).boxed_unsync()
    }

    fn head(raw: &str) -> Result<Option<Parsed>, Error> {
        parse_head(
            &mut BytesMut::from(raw),
            &mut Names::default(),
            false,
            false,
        )
    }

    fn final_head(raw: &str) -> Head {
        match head(raw) {
            Ok(Some(Parsed::Final(h))) => h,
            other => panic!("{raw:?}: {:?}", other.map(|p| p.is_some())),
        }
    }

    /// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers, or the error.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers)),
                Decoded::More if fed >= wire.len() => return Err(Error::Truncated),
                Decoded::More => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whatever_their_chunks_and_reads(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..200, 1..8),
            ext in proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
            upper in any::<bool>(),
            step in 1usize..40,
            trailer in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                let size = if upper { format!("{n:X}") } else { format!("{n:x}") };
                wire.extend_from_slice(size.as_bytes());
                if let Some(ext) = &ext {
                    wire.extend_from_slice(format!(" ;{ext}").as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n");
            if trailer {
                wire.extend_from_slice(b"X-Sum: 7\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let (data, trailers) = decode_all(&wire, step).unwrap();
            prop_assert_eq!(data, body);
            prop_assert_eq!(trailers.map(|t| t["x-sum"].clone()), trailer.then(|| HeaderValue::from_static("7")));
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            wire in proptest::collection::vec(any::<u8>(), 0..300),
            step in 1usize..20,
        ) {
            let _ = decode_all(&wire, step);
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"0\r\n\rX",
        ] {
            assert!(
                matches!(decode_all(wire, 3), Err(Error::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
        assert!(matches!(
            decode_all(long.as_bytes(), 1000),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(decode_all(b"5\r\nhel", 2), Err(Error::Truncated)));
    }

    #[test]
    fn response_framing_follows_rfc_9112_section_6_3() {
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, Framing::Done);
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        let h = final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            (h.framing, h.keep_alive),
            (Framing::Chunked(Chunked::default()), true)
        );
        // Both: chunked wins, Content-Length goes, and the connection is not reused.
        let h = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        assert_eq!(
            (h.framing, h.keep_alive),
            (Framing::Chunked(Chunked::default()), false)
        );
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        let h = final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = final_head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        for status in ["204 No Content", "304 Not Modified"] {
            let h = final_head(&format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"));
            assert_eq!(h.framing, Framing::Done, "{status}");
        }
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        let Ok(Some(Parsed::Final(h))) = parse_head(&mut buf, &mut Names::default(), true, false)
        else {
            panic!("HEAD response")
        };
        assert_eq!(h.framing, Framing::Done, "no body after a HEAD");
        let h = final_head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(!h.keep_alive);
        let h = final_head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h =
            final_head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
        // A 101 the request did not ask for is a final response without a body.
        let h = final_head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Done, false));
    }

    #[test]
    fn names_are_reused_by_position_only_when_their_bytes_are_the_same() {
        fn parse(names: &mut Names, fields: &[(&str, &str)]) -> Vec<String> {
            let mut head = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_owned();
            for (name, value) in fields {
                head += &format!("{name}: {value}\r\n");
            }
            head += "\r\n";
            let Ok(Some(Parsed::Final(h))) =
                parse_head(&mut BytesMut::from(head.as_str()), names, false, false)
            else {
                panic!("a final head: {head}");
            };
            h.headers
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
                .collect()
        }
        let long = "x-".to_owned() + &"n".repeat(NAME_BYTES);
        let mut names = Names::default();
        let first = [("Server", "a"), ("X-Custom", "1"), (long.as_str(), "2")];
        let expected = [
            "content-length=0".to_owned(),
            "server=a".to_owned(),
            "x-custom=1".to_owned(),
            format!("{long}=2"),
        ];
        assert_eq!(parse(&mut names, &first), expected);
        // The same again: found by position.
        assert_eq!(parse(&mut names, &first), expected);
        // Other names, or the same in another case, at those positions: parsed, and kept in
        // their place.
        let second = [("x-custom", "3"), ("Vary", "accept"), (long.as_str(), "4")];
        assert_eq!(
            parse(&mut names, &second),
            [
                "content-length=0".to_owned(),
                "x-custom=3".to_owned(),
                "vary=accept".to_owned(),
                format!("{long}=4"),
            ]
        );
        assert_eq!(
            parse(&mut names, &[("X-CUSTOM", "5"), ("vary", "x")]),
            ["content-length=0", "x-custom=5", "vary=x"]
        );
        assert_eq!(names.known.len(), 3, "{long} is too long to be kept");
        assert_eq!(names.known[1].name, "x-custom");
        assert_eq!(
            &names.known[1].raw[..usize::from(names.known[1].len)],
            b"X-CUSTOM"
        );
        // At most NAMES positions.
        let many: Vec<(String, String)> = (0..NAMES + 8)
            .map(|i| (format!("x-{i}"), i.to_string()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(parse(&mut names, &many).len(), NAMES + 9);
        assert_eq!(parse(&mut names, &many).len(), NAMES + 9);
        assert_eq!(names.known.len(), NAMES);
        assert_eq!(
            names.known[NAMES - 1].name,
            format!("x-{}", NAMES - 2).as_str()
        );
    }

    #[test]
    fn fields_that_never_cross_the_proxy_are_left_out_of_the_final_head() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
                   Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: foo\r\n\
                   HTTP2-Settings: AAA\r\nContent-Length: 2\r\ncontent-length: 2\r\nX-Kept: yes\r\n\
                   Link: </a.css>; rel=preload\r\n\r\n";
        let h = final_head(raw);
        let mut names: Vec<&str> = h.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "link", "x-kept"]);
        assert_eq!(h.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        // The same head as a 101 to an upgrade request: everything stays, for its front end.
        let raw = raw.replace("200 OK", "101 Switching Protocols");
        let mut buf = BytesMut::from(raw.as_str());
        let Ok(Some(Parsed::Final(h))) = parse_head(&mut buf, &mut Names::default(), false, true)
        else {
            panic!("101")
        };
        assert_eq!(h.headers.len(), 11);
        assert_eq!(h.framing, Framing::Switched);
        // A 103 keeps its Link fields only.
        let raw = raw.replace("101 Switching Protocols", "103 Early Hints");
        let Ok(Some(Parsed::Interim(_, h))) = head(&raw) else {
            panic!("103")
        };
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["link"]
        );
    }

    #[test]
    fn a_head_over_the_bound_is_refused_however_it_arrives() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\n");
        let field = format!("X-Big: {}\r\n", "a".repeat(1000));
        while buf.len() < MAX_HEAD - 1 {
            assert!(matches!(
                parse_head(&mut buf, &mut Names::default(), false, false),
                Ok(None)
            ));
            buf.extend_from_slice(field.as_bytes());
        }
        assert!(matches!(
            parse_head(&mut buf, &mut Names::default(), false, false),
            Err(Error::HeadTooLarge) | Err(Error::Invalid(_))
        ));
        let mut fields = String::from("HTTP/1.1 200 OK\r\n");
        while fields.len() < MAX_HEAD + 10 {
            fields.push_str("X: 1\r\n");
        }
        assert!(
            parse_head(
                &mut BytesMut::from(fields.as_str()),
                &mut Names::default(),
                false,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn bad_response_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(matches!(head(raw), Err(Error::Invalid(_))), "{raw:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_FIELDS + 1)
        );
        assert!(matches!(head(&many), Err(Error::Invalid(_))));
        assert!(
            matches!(head("HTTP/1.1 200 OK\r\nX-A: 1\r\n"), Ok(None)),
            "partial"
        );
    }

    #[test]
    fn interim_responses_come_before_the_final_one_and_leave_the_rest() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        let Ok(Some(Parsed::Interim(status, fields))) =
            parse_head(&mut buf, &mut Names::default(), false, false)
        else {
            panic!("103 first")
        };
        assert_eq!(
            (status, &fields["link"]),
            (
                StatusCode::EARLY_HINTS,
                &HeaderValue::from_static("</a.css>; rel=preload")
            )
        );
        let Ok(Some(Parsed::Final(h))) = parse_head(&mut buf, &mut Names::default(), false, false)
        else {
            panic!("then 200")
        };
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    }

    fn request(method: Method, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = http::Uri::from_static("/up?x=1");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("backend"));
        req
    }

    /// A connection to a fresh listener, and the listener's side of it.
    async fn pair() -> (Box<Conn>, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let gauge = crate::metrics::Metrics::new().upstream_connection_open();
        (Conn::new(client, gauge), server)
    }

    /// Reads from `server` until `until` has been seen; returns everything read.
    async fn read_until(server: &mut tokio::net::TcpStream, until: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.windows(until.len()).any(|w| w == until) {
            let n = within(server.read(&mut chunk)).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    /// The next frame of `body`, which must be data.
    async fn next_data(body: &mut ConnBody) -> Bytes {
        within(body.frame())
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
    }

    /// A head deadline no test reaches.
    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(60)
    }

    /// `fut`'s output, or a panic after 10 s: a regression fails these tests, never hangs them.
    async fn within<F: std::future::Future>(fut: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), fut)
            .await
            .expect("no progress in 10 s")
    }

    /// The backend's side of one exchange: reads the request up to `until`, answers `reply`;
    /// returns its socket and what it read.
    async fn answer(
        mut server: tokio::net::TcpStream,
        until: &[u8],
        reply: &[u8],
    ) -> (tokio::net::TcpStream, Vec<u8>) {
        let got = read_until(&mut server, until).await;
        server.write_all(reply).await.unwrap();
        (server, got)
    }

    /// A connection that served one request, whose backend has since closed it.
    async fn stale() -> Box<Conn> {
        let (mut conn, server) = pair().await;
        let out = conn.encode(request(Method::GET, empty()), None);
        let backend = answer(
            server,
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        let (res, (server, _)) =
            within(async { tokio::join!(exchange(conn, out, None, later()), backend) }).await;
        let Ok(mut res) = res else {
            panic!("first exchange")
        };
        assert_eq!(next_data(&mut res.body).await, "ok");
        let conn = res.body.take_reusable().expect("kept alive");
        drop(server);
        conn
    }

    /// One head timer per connection: made by the first exchange that waits; the next one's
    /// later deadline holds although the timer still runs to the first one's (it fires early and
    /// is set again: a backend slower than the first deadline is still in time); a shorter
    /// deadline brings it forward, and fires. Paused time: the runtime moves the clock on when
    /// nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn one_head_timer_keeps_each_exchanges_deadline() {
        use std::time::Duration;
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let at = |secs| tokio::time::Instant::now() + Duration::from_secs(secs);
        let (mut conn, server) = pair().await;

        let out = conn.encode(request(Method::GET, empty()), None);
        let backend = answer(server, b"\r\n\r\n", ok);
        let (res, (server, _)) = tokio::join!(exchange(conn, out, None, at(10)), backend);
        let mut res = res.ok().expect("first exchange");
        assert_eq!(next_data(&mut res.body).await, "ok");
        let mut conn = res.body.take_reusable().expect("kept alive");
        let timer = conn
            .head_timer
            .as_deref()
            .map(std::ptr::from_ref)
            .expect("a timer");

        // Answered 15 s on: past the first exchange's deadline, within this one's.
        let out = conn.encode(request(Method::GET, empty()), None);
        let backend = async {
            let mut server = server;
            read_until(&mut server, b"\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(15)).await;
            server.write_all(ok).await.unwrap();
            server
        };
        let (res, server) = tokio::join!(exchange(conn, out, None, at(20)), backend);
        let mut res = res.ok().expect("in time");
        assert_eq!(next_data(&mut res.body).await, "ok");
        let mut conn = res.body.take_reusable().expect("kept alive");
        let same = conn.head_timer.as_deref().map(std::ptr::from_ref);
        assert_eq!(same, Some(timer), "the same timer");

        // Never answered: the head times out at this exchange's (earlier) deadline.
        let out = conn.encode(request(Method::GET, empty()), None);
        let started = tokio::time::Instant::now();
        let res = exchange(conn, out, None, at(1)).await;
        assert!(matches!(res, Err(Failed::Error(Error::HeadTimedOut))));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        drop(server);
    }

    #[tokio::test]
    async fn a_request_the_backend_closed_on_is_retried_only_when_safe() {
        let mut conn = stale().await;
        let out = conn.encode(request(Method::GET, empty()), None);
        assert!(matches!(
            within(exchange(conn, out, None, later())).await,
            Err(Failed::Retry(_))
        ));
        // Not idempotent, or a body that cannot be replayed: the error stands.
        let mut conn = stale().await;
        let out = conn.encode(request(Method::POST, empty()), None);
        assert!(matches!(
            within(exchange(conn, out, None, later())).await,
            Err(Failed::Error(_))
        ));
        let mut conn = stale().await;
        let body = frames(vec![Frame::data(Bytes::from_static(b"x"))]);
        let out = conn.encode(request(Method::PUT, body), None);
        assert!(matches!(
            within(exchange(conn, out, None, later())).await,
            Err(Failed::Error(_))
        ));
        // A new connection closed at once is the backend's refusal, never retried.
        let (mut conn, server) = pair().await;
        drop(server);
        let out = conn.encode(request(Method::GET, empty()), None);
        assert!(matches!(
            within(exchange(conn, out, None, later())).await,
            Err(Failed::Error(_))
        ));
    }

    fn head_of(req: Request<RequestBody>, forward: Option<&Forward>) -> String {
        let mut wbuf = BytesMut::new();
        let out = encode(req, forward, &mut wbuf);
        String::from_utf8(out.queue[0].to_vec()).unwrap()
    }

    fn client(scheme: &'static str) -> crate::upstream::ClientContext {
        crate::upstream::ClientContext::new(
            "192.0.2.7:5000".parse().unwrap(),
            scheme,
            crate::upstream::ClientShare::new(&crate::config::Config::default().upstream),
        )
    }

    #[test]
    fn the_head_is_rewritten_for_the_upstream_as_it_is_written() {
        let mut req = request(Method::GET, empty());
        for (name, value) in [
            ("host", "wrong"),
            ("cookie", "a=1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("connection", "keep-alive, X-Named"),
            ("x-named", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("transfer-encoding", "gzip"),
            ("te", "trailers"),
            ("x-forwarded-host", "spoofed"),
            ("x-forwarded-proto", "gopher"),
            ("cookie", "b=2"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-kept", "yes"),
        ] {
            req.headers_mut().append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let forward = Forward::new("example.com:8443", &client("https"));
        assert_eq!(
            head_of(req, Some(&forward)),
            "GET /up?x=1 HTTP/1.1\r\nhost: example.com:8443\r\n\
             cookie: a=1; b=2\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n\
             te: trailers\r\nx-kept: yes\r\n\
             x-forwarded-host: example.com:8443\r\nx-forwarded-proto: https\r\n\r\n"
        );

        // TE goes unless every value is `trailers` and Connection does not name it; an
        // upgrade puts Upgrade and Connection back; a body's length is ours to write.
        let mut req = request(
            Method::POST,
            http_body_util::Full::new(Bytes::from_static(b"ab"))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        req.headers_mut()
            .append(header::TE, HeaderValue::from_static("trailers"));
        req.headers_mut()
            .append(header::TE, HeaderValue::from_static("gzip"));
        req.headers_mut()
            .append(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let forward = Forward::new("a.example", &client("http"))
            .upgrade(HeaderValue::from_static("websocket"));
        assert_eq!(
            head_of(req, Some(&forward)),
            "POST /up?x=1 HTTP/1.1\r\nhost: a.example\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-host: a.example\r\nx-forwarded-proto: http\r\n\
             upgrade: websocket\r\nconnection: upgrade\r\ncontent-length: 2\r\n\r\n"
        );
        let mut req = request(Method::GET, empty());
        req.headers_mut()
            .append(header::TE, HeaderValue::from_static("trailers"));
        req.headers_mut()
            .append(header::CONNECTION, HeaderValue::from_static("te"));
        assert!(!head_of(req, Some(&forward)).contains("te:"));

        // A request id made by the proxy replaces the client's fields; a given one is the
        // client's field, passed as it is.
        let with_ids = || {
            let mut req = request(Method::GET, empty());
            for id in ["a b", "c"] {
                req.headers_mut()
                    .append("x-request-id", HeaderValue::from_static(id));
            }
            req
        };
        let made = crate::front::RequestId::Made(*b"0123456789abcdef");
        let forward = Forward::new("a.example", &client("http")).request_id(&made);
        let head = head_of(with_ids(), Some(&forward));
        assert_eq!(head.matches("x-request-id").count(), 1, "{head}");
        assert!(
            head.contains("x-request-id: 0123456789abcdef\r\n"),
            "{head}"
        );
        let given = crate::front::RequestId::Given(HeaderValue::from_static("c"));
        let forward = Forward::new("a.example", &client("http")).request_id(&given);
        let head = head_of(with_ids(), Some(&forward));
        assert!(
            head.contains("x-request-id: a b\r\nx-request-id: c\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn request_bodies_are_framed_and_trailers_sent() {
        let (mut conn, server) = pair().await;
        let body = frames(vec![
            Frame::data(Bytes::from_static(b"hello ")),
            Frame::data(Bytes::from_static(b"world, this is seventeen+")),
            Frame::trailers({
                let mut t = HeaderMap::new();
                t.insert("x-check", HeaderValue::from_static("1"));
                t
            }),
        ]);
        let mut req = request(Method::POST, body);
        req.headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let out = conn.encode(req, None);
        let backend = answer(
            server,
            b"0\r\nx-check: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        );
        let (res, (_, got)) =
            within(async { tokio::join!(exchange(conn, out, None, later()), backend) }).await;
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "POST /up?x=1 HTTP/1.1\r\nhost: backend\r\ntransfer-encoding: chunked\r\n\r\n\
             6\r\nhello \r\n19\r\nworld, this is seventeen+\r\n0\r\nx-check: 1\r\n\r\n"
        );
        let mut res = res.ok().unwrap();
        assert!(res.body.is_end_stream());
        assert!(res.body.take_reusable().is_some());

        let (mut conn, server) = pair().await;
        let body = http_body_util::Full::new(Bytes::from_static(b"abc"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let out = conn.encode(request(Method::PUT, body), None);
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let backend = answer(server, b"abc", reply);
        let (res, (_, got)) =
            within(async { tokio::join!(exchange(conn, out, None, later()), backend) }).await;
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "PUT /up?x=1 HTTP/1.1\r\nhost: backend\r\ncontent-length: 3\r\n\r\nabc"
        );
        let body = within(res.ok().unwrap().body.collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_upload_is_read_and_the_connection_not_reused() {
        let (mut conn, server) = pair().await;
        // A body that never ends: the backend answers 413 after the head.
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>();
        let body = StreamBody::new(never).boxed_unsync();
        let out = conn.encode(request(Method::POST, body), None);
        let backend = answer(
            server,
            b"\r\n\r\n",
            b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig",
        );
        let (res, _server) =
            within(async { tokio::join!(exchange(conn, out, None, later()), backend) }).await;
        let mut res = res.ok().unwrap();
        assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(next_data(&mut res.body).await, "big");
        assert!(within(res.body.frame()).await.is_none());
        assert!(
            res.body.take_reusable().is_none(),
            "the upload was never finished"
        );
    }

    #[tokio::test]
    async fn hints_are_passed_on_and_bodies_cut_short_fail() {
        let (mut conn, server) = pair().await;
        let out = conn.encode(request(Method::GET, empty()), None);
        let queue = crate::upstream::InformationalQueue::default();
        let reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        let backend = answer(server, b"\r\n\r\n", reply);
        let (res, (server, _)) =
            within(async { tokio::join!(exchange(conn, out, Some(&queue), later()), backend) })
                .await;
        assert_eq!(queue.take().unwrap()[0], "</a.css>; rel=preload");
        assert!(queue.take().is_none());
        let mut res = res.ok().unwrap();
        assert_eq!(next_data(&mut res.body).await, "short");
        drop(server);
        let err = within(res.body.frame()).await.unwrap().unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::Truncated)),
            "{err}"
        );
        assert!(res.body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn a_switch_hands_over_the_socket_with_the_bytes_after_the_101() {
        let (mut conn, server) = pair().await;
        let mut req = request(Method::GET, empty());
        req.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let out = conn.encode(req, None);
        let backend = answer(
            server,
            b"\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nearly",
        );
        let (res, (mut server, _)) =
            within(async { tokio::join!(exchange(conn, out, None, later()), backend) }).await;
        let mut res = res.ok().unwrap();
        assert_eq!(res.status, StatusCode::SWITCHING_PROTOCOLS);
        assert!(res.body.take_reusable().is_none());
        let mut up = res.body.take_upgraded().expect("upgraded");
        let mut got = [0u8; 5];
        within(up.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"early");
        up.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        within(server.read_exact(&mut ping)).await.unwrap();
        assert_eq!(&ping, b"ping");
    }
}
