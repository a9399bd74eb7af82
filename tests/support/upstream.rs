//! A scripted fake HTTP/1.1 upstream, written over raw TCP so that it can misbehave on purpose
//! (truncated bodies, responses that never come, 103s before the final response, hop-by-hop
//! headers a proxy must strip).
//!
//! ```ignore
//! let up = Upstream::new()
//!     .route("/", Reply::html("<p>hi</p>").link("</app.css>; rel=preload; as=style"))
//!     .route("/app.css", Reply::ok("body{}").header("content-type", "text/css"))
//!     .start()
//!     .await;
//! // ... point the proxy at up.url(), make requests ...
//! assert_eq!(up.requests_for("/app.css").len(), 1);
//! ```
//!
//! Requests are parsed by hand (request line and headers up to 64 KiB; bodies by Content-Length or
//! chunked) and recorded as received: header names keep their case and order. Connections are
//! kept alive (RFC 9112 §9.3) unless the request says `Connection: close`. Every task ends when the
//! [`RunningUpstream`] is dropped.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Request heads larger than this get a 431 and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;
/// Generated and echoed bodies are written in pieces of this size.
const WRITE_CHUNK: usize = 64 * 1024;

// ===== Gate =====

/// A clonable one-shot latch: `open()` releases every current and future `wait()`.
#[derive(Clone, Debug)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    pub fn opened(&self) -> bool {
        *self.tx.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail with a closed channel.
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

// ===== Reply =====

#[derive(Clone, Debug)]
enum Body {
    Bytes(Bytes),
    /// `len` deterministic bytes, see [`generated_body`].
    Generated(u64),
    /// The request body.
    Echo,
}

/// What a route answers. Built with a constructor and chained options.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    chunked: bool,
    close_delimited: bool,
    close: bool,
    early_hints: Vec<Vec<String>>,
    hold: Option<Gate>,
    delay_body: Option<Gate>,
    truncate_at: Option<u64>,
    never_respond: bool,
    raw: Option<Bytes>,
}

impl Reply {
    /// A response with this status and an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Bytes::new()),
            chunked: false,
            close_delimited: false,
            close: false,
            early_hints: Vec::new(),
            hold: None,
            delay_body: None,
            truncate_at: None,
            never_respond: false,
            raw: None,
        }
    }

    /// 200 with this body and no content type.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Reply::status(200).body(body)
    }

    /// 200, `text/html; charset=utf-8`.
    pub fn html(html: &str) -> Self {
        Reply::ok(html.as_bytes().to_vec()).header("Content-Type", "text/html; charset=utf-8")
    }

    /// 200 with `len` deterministic bytes (see [`generated_body`]), written in 64 KiB pieces
    /// without ever holding the whole body in memory.
    pub fn generated(len: u64) -> Self {
        let mut reply = Reply::status(200).header("Content-Type", "application/octet-stream");
        reply.body = Body::Generated(len);
        reply
    }

    /// 200 whose body is the request body, with `x-body-sha256` set to its hex SHA-256.
    pub fn echo() -> Self {
        let mut reply = Reply::status(200).header("Content-Type", "application/octet-stream");
        reply.body = Body::Echo;
        reply
    }

    /// Write exactly these bytes as the whole response (status line, headers, body, anything),
    /// then close the connection. For malformed responses.
    pub fn raw(bytes: impl Into<Bytes>) -> Self {
        let mut reply = Reply::status(200);
        reply.raw = Some(bytes.into());
        reply
    }

    /// Add a header field; several fields with the same name are sent as several lines, in order.
    /// A `Content-Length` or `Transfer-Encoding` set here replaces the computed framing (so a test
    /// can lie about the length).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Add one `Link` header field.
    pub fn link(self, value: &str) -> Self {
        self.header("Link", value)
    }

    /// Add one `Link` header field carrying all these values, joined with ", ".
    pub fn links_in_one_field(self, values: &[&str]) -> Self {
        let joined = values.join(", ");
        self.header("Link", joined)
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Send the body with `Transfer-Encoding: chunked` (one chunk per 64 KiB piece).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Send neither Content-Length nor Transfer-Encoding: the body ends when the connection closes
    /// (RFC 9112 §6.3 rule 8).
    pub fn close_delimited(mut self) -> Self {
        self.close_delimited = true;
        self
    }

    /// Send `Connection: close` and close the connection after this response.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Send an `HTTP/1.1 103 Early Hints` carrying these values as `Link` fields, flushed before
    /// the final response (and before any [`Reply::hold`]). Each call adds one more 103.
    pub fn early_hints(mut self, links: &[&str]) -> Self {
        self.early_hints
            .push(links.iter().map(|l| (*l).to_owned()).collect());
        self
    }

    /// Wait for `gate` before sending the final response (the 103s go out first).
    pub fn hold(mut self, gate: Gate) -> Self {
        self.hold = Some(gate);
        self
    }

    /// Send the final response's headers, then wait for `gate` before sending its body.
    pub fn delay_body(mut self, gate: Gate) -> Self {
        self.delay_body = Some(gate);
        self
    }

    /// Announce the full length, send only the first `n` body bytes, then close the connection.
    pub fn truncate_at(mut self, n: u64) -> Self {
        self.truncate_at = Some(n);
        self
    }

    /// Read the request, then send nothing until the peer closes the connection (or the upstream
    /// is dropped).
    pub fn never_respond(mut self) -> Self {
        self.never_respond = true;
        self
    }
}

// ===== Upstream (builder) =====

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Serve,
    AcceptThenClose,
}

/// Builder of a fake upstream. `start()` binds `127.0.0.1:0` and returns the running handle.
pub struct Upstream {
    routes: Vec<(String, Reply)>,
    fallback: Reply,
    mode: Mode,
}

impl Upstream {
    /// No routes yet; unknown paths get 404.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Upstream {
            routes: Vec::new(),
            fallback: Reply::status(404),
            mode: Mode::Serve,
        }
    }

    /// An upstream that accepts each connection and closes it at once without reading.
    pub fn accept_then_close() -> Self {
        Upstream {
            mode: Mode::AcceptThenClose,
            ..Upstream::new()
        }
    }

    /// Answer requests whose path is `path` (or whose whole target is `path`, when `path` has a
    /// query) with `reply`. A later route for the same path replaces the earlier one.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.retain(|(p, _)| p != path);
        self.routes.push((path.to_owned(), reply));
        self
    }

    /// Answer requests that match no route with `reply`.
    pub fn fallback(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    /// A `127.0.0.1` address where nothing listens: connecting to it is refused.
    pub fn closed_port() -> SocketAddr {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local_addr")
    }

    pub async fn start(self) -> RunningUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            routes: Mutex::new(Routes {
                routes: self.routes,
                fallback: self.fallback,
            }),
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            changed: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone(), self.mode));
        RunningUpstream { addr, state, task }
    }
}

// ===== RunningUpstream =====

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Index of the connection it came on, in accept order from 0.
    pub conn: usize,
    pub method: String,
    /// Request target exactly as received (path and query, for origin-form).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// In received order, names with their original case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the (de-chunked) body.
    pub body_sha256: String,
}

impl Recorded {
    /// The target without its query.
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }

    /// The first value of header `name` (case-insensitive), as lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// The running fake upstream. Dropping it stops the listener and every connection.
pub struct RunningUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks; dropping it aborts them all.
        self.task.abort();
    }
}

impl RunningUpstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace (or add) a route while running, e.g. to change a page's links between requests.
    pub fn set_route(&self, path: &str, reply: Reply) {
        let mut routes = self.state.routes.lock().unwrap();
        routes.routes.retain(|(p, _)| p != path);
        routes.routes.push((path.to_owned(), reply));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests whose path is `path` (whose whole target is `path`, when `path` has a query).
    pub fn requests_for(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| target_matches(&r.target, path))
            .collect()
    }

    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections that have ended, whoever closed them.
    pub fn connections_closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Responses that could not be finished because the peer went away (a write failed, or the
    /// peer closed while a `hold`, `delay_body` or `never_respond` was waiting).
    pub fn responses_aborted(&self) -> usize {
        self.state.aborted.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` requests for `path` were received; false on timeout.
    pub async fn wait_for_requests(&self, path: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |up| up.requests_for(path).len() >= n)
            .await
    }

    /// Wait until `cond` holds; it is re-checked on every request, connection and abort. False
    /// on timeout.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.state.changed.subscribe();
        loop {
            // Mark the current version seen before checking, so no change can slip in between.
            rx.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return cond(self),
            }
        }
    }
}

// ===== Generated bodies =====

/// Byte `i` of every generated body: `(i * 31) % 251`. The period 251 is prime, so a dropped,
/// duplicated or reordered 64 KiB piece changes the bytes.
pub fn generated_byte(i: u64) -> u8 {
    ((i % 251) * 31 % 251) as u8
}

/// The first `len` bytes of the generated pattern (keep `len` small; use [`generated_sha256`] to
/// check big bodies).
pub fn generated_body(len: u64) -> Vec<u8> {
    (0..len).map(generated_byte).collect()
}

/// Hex SHA-256 of the first `len` generated bytes, computed piecewise.
pub fn generated_sha256(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut pattern = Pattern::new();
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(WRITE_CHUNK as u64);
        hasher.update(pattern.slice(offset, n as usize));
        offset += n;
    }
    hex(&hasher.finalize())
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The generated pattern repeated past one write chunk, so any piece is one slice of it.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Self {
        Pattern(generated_body((WRITE_CHUNK + 251) as u64))
    }

    fn slice(&mut self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % 251) as usize;
        &self.0[start..start + len]
    }
}

// ===== Server internals =====

struct Routes {
    routes: Vec<(String, Reply)>,
    fallback: Reply,
}

struct State {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<Recorded>>,
    accepted: AtomicUsize,
    closed: AtomicUsize,
    aborted: AtomicUsize,
    /// Bumped on every change that `wait_until` may be waiting for.
    changed: watch::Sender<u64>,
}

impl State {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn reply_for(&self, target: &str) -> Reply {
        let routes = self.routes.lock().unwrap();
        let exact = routes
            .routes
            .iter()
            .find(|(p, _)| p.contains('?') && p == target);
        let by_path = || {
            routes
                .routes
                .iter()
                .find(|(p, _)| !p.contains('?') && p == path_of(target))
        };
        match exact.or_else(by_path) {
            Some((_, reply)) => reply.clone(),
            None => routes.fallback.clone(),
        }
    }
}

fn path_of(target: &str) -> &str {
    // Absolute-form (`http://host/path`) is matched by its path, like origin-form.
    let target = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    target.split('?').next().unwrap_or(target)
}

fn target_matches(target: &str, wanted: &str) -> bool {
    if wanted.contains('?') {
        target == wanted
    } else {
        path_of(target) == wanted
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mode: Mode) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let id = state.accepted.fetch_add(1, Ordering::SeqCst);
                state.bump();
                if mode == Mode::AcceptThenClose {
                    drop(stream);
                    state.closed.fetch_add(1, Ordering::SeqCst);
                    state.bump();
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    serve(Conn { stream, buf: BytesMut::new() }, id, &state).await;
                    state.closed.fetch_add(1, Ordering::SeqCst);
                    state.bump();
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Why a connection stops after a request.
enum Next {
    KeepAlive,
    Close,
}

async fn serve(mut conn: Conn, id: usize, state: &State) {
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadError::Io) => return,
            Err(HeadError::TooLarge) => {
                let _ = conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
            Err(HeadError::Malformed) => {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
        };
        let reply = state.reply_for(&head.target);
        let keep_body = matches!(reply.body, Body::Echo);
        let body = match conn.read_body(&head, keep_body).await {
            Ok(body) => body,
            Err(BodyError::Io) => return,
            Err(BodyError::Malformed) => {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
        };
        state.requests.lock().unwrap().push(Recorded {
            conn: id,
            method: head.method.clone(),
            target: head.target.clone(),
            version: head.version.clone(),
            headers: head.headers.clone(),
            body_len: body.len,
            body_sha256: body.sha256.clone(),
        });
        state.bump();

        match respond(&mut conn, &head, &reply, body).await {
            Ok(Next::KeepAlive) if head.wants_keep_alive() => {}
            Ok(_) => {
                let _ = conn.stream.shutdown().await;
                return;
            }
            Err(_) => {
                state.aborted.fetch_add(1, Ordering::SeqCst);
                state.bump();
                return;
            }
        }
    }
}

async fn respond(
    conn: &mut Conn,
    head: &Head,
    reply: &Reply,
    body: ReadBody,
) -> std::io::Result<Next> {
    if reply.never_respond {
        conn.wait_for_peer_close().await;
        return Err(peer_gone());
    }
    if let Some(raw) = &reply.raw {
        conn.write_all(raw).await?;
        return Ok(Next::Close);
    }

    for links in &reply.early_hints {
        let mut hint = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
        for link in links {
            hint.extend_from_slice(format!("Link: {link}\r\n").as_bytes());
        }
        hint.extend_from_slice(b"\r\n");
        conn.write_all(&hint).await?;
    }
    if let Some(gate) = &reply.hold {
        conn.wait_gate(gate).await?;
    }

    let mut headers = reply.headers.clone();
    let mut body_src = match &reply.body {
        Body::Bytes(b) => Source::Bytes(b.clone()),
        Body::Generated(n) => Source::Generated(*n),
        Body::Echo => {
            headers.push(("x-body-sha256".into(), body.sha256.into_bytes()));
            Source::Bytes(body.bytes.freeze())
        }
    };
    let body_len = body_src.len();
    // RFC 9110 §6.4.1: no content in responses to HEAD, or with 1xx, 204 or 304.
    let bodiless = matches!(reply.status, 100..=199 | 204 | 304);
    let send_body = !bodiless && head.method != "HEAD";
    if !send_body {
        body_src = Source::Bytes(Bytes::new());
    }

    let user_set = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let user_framing = user_set("content-length") || user_set("transfer-encoding");
    let has_connection = user_set("connection");
    let mut framing = Vec::new();
    if !user_framing && !bodiless && !reply.close_delimited {
        if reply.chunked {
            framing.push(("Transfer-Encoding".to_owned(), b"chunked".to_vec()));
        } else {
            framing.push((
                "Content-Length".to_owned(),
                body_len.to_string().into_bytes(),
            ));
        }
    }
    let close = reply.close
        || reply.close_delimited
        || reply.truncate_at.is_some()
        || !head.wants_keep_alive()
        || headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
    if close && !has_connection {
        framing.push(("Connection".to_owned(), b"close".to_vec()));
    }
    let chunked = reply.chunked && !user_framing && !reply.close_delimited;

    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    for (name, value) in headers.iter().chain(&framing) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    conn.write_all(&out).await?;

    if let Some(gate) = &reply.delay_body {
        conn.wait_gate(gate).await?;
    }

    let limit = reply.truncate_at.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut pattern = Pattern::new();
    let total = body_src.len().min(limit);
    while sent < total {
        let n = (total - sent).min(WRITE_CHUNK as u64) as usize;
        let piece: &[u8] = match &body_src {
            Source::Bytes(b) => &b[sent as usize..sent as usize + n],
            Source::Generated(_) => pattern.slice(sent, n),
        };
        if chunked {
            let mut chunk = format!("{n:x}\r\n").into_bytes();
            chunk.extend_from_slice(piece);
            chunk.extend_from_slice(b"\r\n");
            conn.write_all(&chunk).await?;
        } else {
            conn.write_all(piece).await?;
        }
        sent += n as u64;
    }
    if reply.truncate_at.is_some() {
        return Ok(Next::Close);
    }
    if chunked && send_body {
        conn.write_all(b"0\r\n\r\n").await?;
    }
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn peer_gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "peer closed the connection",
    )
}

enum Source {
    Bytes(Bytes),
    Generated(u64),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Generated(n) => *n,
        }
    }
}

struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
    fn wants_keep_alive(&self) -> bool {
        let has = |token| self.values("connection").any(|v| has_token(v, token));
        if self.version == "HTTP/1.0" {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

enum HeadError {
    Io,
    TooLarge,
    Malformed,
}

enum BodyError {
    Io,
    Malformed,
}

struct ReadBody {
    len: u64,
    sha256: String,
    /// Kept only for echo routes.
    bytes: BytesMut,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Read more bytes into `buf`; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// `Ok(None)` when the peer closed cleanly between requests.
    async fn read_head(&mut self) -> Result<Option<Head>, HeadError> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Io),
                Ok(_) => {}
            }
        };
        if end > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let raw = self.buf.split_to(end + 4);
        parse_head(&raw[..end])
            .map(Some)
            .ok_or(HeadError::Malformed)
    }

    async fn read_body(&mut self, head: &Head, keep: bool) -> Result<ReadBody, BodyError> {
        let mut body = BodySink {
            hasher: Sha256::new(),
            len: 0,
            keep,
            bytes: BytesMut::new(),
        };
        let chunked = match head.values("transfer-encoding").last() {
            None => false,
            Some(v)
                if String::from_utf8_lossy(v)
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")) =>
            {
                true
            }
            Some(_) => return Err(BodyError::Malformed),
        };
        let length = if chunked {
            None
        } else {
            let mut lengths = head.values("content-length").map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            });
            match lengths.next() {
                None => Some(0),
                Some(None) => return Err(BodyError::Malformed),
                Some(Some(n)) => {
                    if lengths.any(|m| m != Some(n)) {
                        return Err(BodyError::Malformed);
                    }
                    Some(n)
                }
            }
        };
        let expects_body = chunked || length.is_some_and(|n| n > 0);
        if expects_body && head.values("expect").any(|v| has_token(v, "100-continue")) {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| BodyError::Io)?;
        }
        match length {
            Some(n) => self.read_exact_into(n, &mut body).await?,
            None => loop {
                let line = self.read_line().await?;
                let size = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| {
                        u64::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok()
                    })
                    .ok_or(BodyError::Malformed)?;
                if size == 0 {
                    // Trailer section, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                self.read_exact_into(size, &mut body).await?;
                if !self.read_line().await?.is_empty() {
                    return Err(BodyError::Malformed);
                }
            },
        }
        Ok(ReadBody {
            len: body.len,
            sha256: hex(&body.hasher.finalize()),
            bytes: body.bytes,
        })
    }

    async fn read_exact_into(&mut self, mut n: u64, sink: &mut BodySink) -> Result<(), BodyError> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Io);
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink.push(&self.buf[..take]);
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return Ok(line[..i].to_vec());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(BodyError::Malformed);
            }
            if self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Io);
            }
        }
    }

    /// Wait for `gate`, but give up when the peer closes meanwhile. Bytes that arrive while
    /// waiting (a pipelined request) stay buffered.
    async fn wait_gate(&mut self, gate: &Gate) -> std::io::Result<()> {
        loop {
            if self.buf.len() > MAX_HEAD {
                gate.wait().await;
                return Ok(());
            }
            tokio::select! {
                _ = gate.wait() => return Ok(()),
                read = self.fill() => match read {
                    Ok(0) | Err(_) => return Err(peer_gone()),
                    Ok(_) => {}
                },
            }
        }
    }

    async fn wait_for_peer_close(&mut self) {
        let mut scratch = [0u8; 16 * 1024];
        while let Ok(n) = self.stream.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    }
}

struct BodySink {
    hasher: Sha256,
    len: u64,
    keep: bool,
    bytes: BytesMut,
}

impl BodySink {
    fn push(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
        if self.keep {
            self.bytes.extend_from_slice(data);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Request line and header fields (RFC 9112 §3, §5). `None` for anything malformed.
fn parse_head(raw: &[u8]) -> Option<Head> {
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || target.is_empty()
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        // RFC 9112 §5.1: no whitespace between the field name and the colon.
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        let value = line[colon + 1..].trim_ascii();
        headers.push((name.to_owned(), value.to_vec()));
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    })
}
