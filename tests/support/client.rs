//! Clients that talk to the proxy.
//!
//! - The h2 crate, for frame-level assertions: [`h2_connect`], [`h2_get`], [`h2_request`] return
//!   everything one request produced (103s, push promises and the pushed responses, the final
//!   response) plus the order of the frames on the wire, read by a tap under h2.
//! - `nghttp` and `curl`, independent HTTP/2 implementations, so that a bug shared with our own
//!   HTTP/2 library cannot hide: [`nghttp`] parses `nghttp -nv` traces into [`Frame`]s, and
//!   [`curl_fetch`] returns status, headers and body.
//!
//! Every wait is bounded ([`TIMEOUT`] without progress, [`PROGRAM_TIMEOUT`] for a program run) and
//! panics with what it was waiting for.
//! The runners are async (tokio::process), because a blocking wait would starve a proxy or
//! upstream running on the same runtime.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::{PushedResponseFuture, ResponseFuture, SendRequest};
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long any helper waits without progress before it panics.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Await `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn bounded<F: Future>(what: impl fmt::Display, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

// ===== h2 client =====

#[derive(Clone, Debug)]
pub struct H2Options {
    /// SETTINGS_ENABLE_PUSH.
    pub enable_push: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise: how many pushed streams may be open.
    pub max_concurrent_streams: Option<u32>,
    /// TLS with ALPN `h2`; otherwise cleartext h2c with prior knowledge.
    pub tls: bool,
    /// `:authority` of every request, and the TLS server name (without the port).
    pub authority: String,
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise (h2's default 65535 when `None`).
    pub initial_window_size: Option<u32>,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            enable_push: true,
            max_concurrent_streams: None,
            tls: false,
            authority: "localhost".to_owned(),
            initial_window_size: None,
        }
    }
}

/// One HTTP/2 connection. Dropping it closes the TCP connection.
pub struct H2Client {
    /// `None` only inside [`H2Client::closed`].
    send: Option<SendRequest<Bytes>>,
    scheme: &'static str,
    authority: String,
    wire: Arc<Mutex<WireLog>>,
    conn: Option<JoinHandle<Result<(), h2::Error>>>,
}

impl Drop for H2Client {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            conn.abort();
        }
    }
}

impl H2Client {
    /// The h2 handle, for tests that drive streams themselves.
    pub fn sender(&mut self) -> &mut SendRequest<Bytes> {
        self.send.as_mut().expect("connection handle")
    }

    /// Every frame the server sent so far, in wire order (header blocks not decoded).
    pub fn frames(&self) -> Vec<Frame> {
        self.wire.lock().unwrap().frames.clone()
    }

    /// A handle on the frames received, usable while a request borrows the client.
    pub fn tap(&self) -> WireTap {
        WireTap(self.wire.clone())
    }

    /// The value of a setting in the server's first SETTINGS frame.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        let wire = self.wire.lock().unwrap();
        let settings = wire
            .frames
            .iter()
            .find(|f| f.kind == "SETTINGS" && f.flags & 0x1 == 0)?;
        settings
            .settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Wait for the connection to end (after the server's GOAWAY, or an error) and return how it
    /// ended. Drops our request handle first, so our side does not keep it open.
    pub async fn closed(mut self) -> Result<(), h2::Error> {
        let conn = self.conn.take().expect("connection task");
        // Without our handle, h2 knows no more requests can come from this side.
        self.send = None;
        match bounded("the HTTP/2 connection to close", conn).await {
            Ok(result) => result,
            Err(join) => panic!("h2 connection task failed: {join}"),
        }
    }

    fn complete_uri(&self, uri: &Uri) -> Uri {
        if uri.scheme().is_some() {
            return uri.clone();
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}://{}{}", self.scheme, self.authority, path)
            .parse()
            .expect("request URI")
    }
}

/// Open an HTTP/2 connection to `addr`: cleartext prior knowledge, or TLS asserting ALPN `h2`.
pub async fn h2_connect(addr: SocketAddr, opts: &H2Options) -> H2Client {
    let tcp = bounded(format!("TCP connect to {addr}"), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
    tcp.set_nodelay(true).expect("TCP_NODELAY");

    let mut builder = h2::client::Builder::new();
    builder.enable_push(opts.enable_push);
    if let Some(max) = opts.max_concurrent_streams {
        builder.max_concurrent_streams(max);
    }
    if let Some(window) = opts.initial_window_size {
        builder.initial_window_size(window);
    }
    let wire = Arc::new(Mutex::new(WireLog::default()));

    let (send, conn) = if opts.tls {
        let tls = bounded(
            format!("TLS handshake with {addr}"),
            tls_handshake(tcp, &opts.authority, &[b"h2"]),
        )
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "ALPN negotiated with {addr} is not h2"
        );
        let io = Tap {
            io: tls,
            wire: wire.clone(),
        };
        let (send, conn) = bounded("HTTP/2 handshake", builder.handshake(io))
            .await
            .expect("HTTP/2 handshake");
        (send, tokio::spawn(conn))
    } else {
        let io = Tap {
            io: tcp,
            wire: wire.clone(),
        };
        let (send, conn) = bounded("HTTP/2 handshake", builder.handshake(io))
            .await
            .expect("HTTP/2 handshake");
        (send, tokio::spawn(conn))
    };
    H2Client {
        send: Some(send),
        scheme: if opts.tls { "https" } else { "http" },
        authority: opts.authority.clone(),
        wire,
        conn: Some(conn),
    }
}

/// One thing that happened on a request's stream, in wire order.
/// The frames a connection received so far, readable from another task.
#[derive(Clone)]
pub struct WireTap(Arc<Mutex<WireLog>>);

impl WireTap {
    pub fn frames(&self) -> Vec<Frame> {
        self.0.lock().unwrap().frames.clone()
    }

    /// Waits (bounded) until a received frame matches.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Frame) -> bool) {
        let wait = async {
            loop {
                if self.frames().iter().any(&pred) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        bounded(format!("a frame: {what}"), wait).await
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A 1xx HEADERS frame.
    Informational(StatusCode),
    /// A PUSH_PROMISE on this stream, with the promised request's path (and query); empty if the
    /// h2 client rejected the promise as malformed.
    PushPromise(String),
    /// The final response HEADERS.
    Response(StatusCode),
    /// A trailing HEADERS frame.
    Trailers,
    /// RST_STREAM from the server.
    Reset(Reason),
}

/// Everything one request produced.
pub struct Exchange {
    pub stream_id: u32,
    /// 1xx responses, in arrival order.
    pub informational: Vec<(StatusCode, HeaderMap)>,
    /// Push promises on this stream, in arrival order, with their responses.
    pub pushes: Vec<Pushed>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body received, complete unless `error` is set.
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// Set when the stream ended by a reset or connection error after the response headers.
    pub error: Option<h2::Error>,
    /// The order of informational responses, promises and the response on the wire.
    pub events: Vec<Event>,
}

impl Exchange {
    /// The RST_STREAM (or GOAWAY) reason that cut the response short, if any.
    pub fn reset(&self) -> Option<Reason> {
        self.error.as_ref().and_then(h2::Error::reason)
    }

    /// The first value of a response header, as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is visible ASCII"))
    }

    /// Every value of a response header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("header value is visible ASCII"))
            .collect()
    }

    /// Paths (and queries) of the promised requests, in promise order.
    pub fn pushed_paths(&self) -> Vec<&str> {
        self.pushes.iter().map(Pushed::path).collect()
    }

    /// The push of `path`; panics listing the pushed paths if there is none.
    pub fn push(&self, path: &str) -> &Pushed {
        self.pushes
            .iter()
            .find(|p| p.path() == path)
            .unwrap_or_else(|| panic!("no push of {path}; pushed: {:?}", self.pushed_paths()))
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("stream_id", &self.stream_id)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &Abbrev(&self.body))
            .field("trailers", &self.trailers)
            .field("error", &self.error)
            .field("informational", &self.informational)
            .field("events", &self.events)
            .field("pushes", &self.pushes)
            .finish()
    }
}

/// A pushed stream: the promised request, and the response or why there is none.
pub struct Pushed {
    pub stream_id: u32,
    pub method: Method,
    pub uri: Uri,
    /// Headers of the promised request.
    pub request_headers: HeaderMap,
    /// We refused it (dropped it, so h2 sent RST_STREAM CANCEL) without reading the response.
    pub refused: bool,
    /// `None` when refused, or reset before its HEADERS.
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set when the server reset the pushed stream (or the connection failed) before its end.
    pub error: Option<h2::Error>,
}

impl Pushed {
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The server's RST_STREAM reason, if it reset the pushed stream.
    pub fn reset(&self) -> Option<Reason> {
        self.error.as_ref().and_then(h2::Error::reason)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is visible ASCII"))
    }

    /// Pushed, fully received, and not reset.
    pub fn completed(&self) -> bool {
        !self.refused && self.status.is_some() && self.error.is_none()
    }
}

impl fmt::Debug for Pushed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pushed")
            .field("stream_id", &self.stream_id)
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("request_headers", &self.request_headers)
            .field("refused", &self.refused)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &Abbrev(&self.body))
            .field("error", &self.error)
            .finish()
    }
}

/// Bodies in Debug output: the length and the first bytes only.
struct Abbrev<'a>(&'a Bytes);

impl fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(64)];
        write!(
            f,
            "{} bytes {:?}{}",
            self.0.len(),
            Bytes::copy_from_slice(shown),
            if self.0.len() > 64 { "..." } else { "" }
        )
    }
}

/// GET `path` with these extra request headers; accepts every push.
pub async fn h2_get(client: &mut H2Client, path: &str, headers: &[(&str, &str)]) -> Exchange {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    h2_request(client, req.body(()).expect("request"), Bytes::new()).await
}

/// Send `req` (scheme and authority filled in from the options when the URI has none) with
/// `body`; accepts every push. Panics if the stream fails before the final response headers.
pub async fn h2_request(client: &mut H2Client, req: Request<()>, body: Bytes) -> Exchange {
    h2_request_refusing(client, req, body, |_| false).await
}

/// As [`h2_request`], but every push promise for which `refuse` returns true is refused at once
/// (dropped, so h2 sends RST_STREAM CANCEL), like a client with that asset cached.
pub async fn h2_request_refusing(
    client: &mut H2Client,
    req: Request<()>,
    body: Bytes,
    refuse: impl FnMut(&Request<()>) -> bool,
) -> Exchange {
    let what = format!("{} {}", req.method(), req.uri());
    match h2_try_request(client, req, body, refuse).await {
        Ok(exchange) => exchange,
        Err(e) => panic!("{what}: stream failed before the response headers: {e:?}"),
    }
}

/// As [`h2_request_refusing`], but a stream that fails before the final response headers (reset,
/// GOAWAY, connection error) is returned as the error instead of panicking.
pub async fn h2_try_request(
    client: &mut H2Client,
    req: Request<()>,
    body: Bytes,
    mut refuse: impl FnMut(&Request<()>) -> bool,
) -> Result<Exchange, h2::Error> {
    let (mut parts, ()) = req.into_parts();
    parts.uri = client.complete_uri(&parts.uri);
    let what = format!("{} {}", parts.method, parts.uri);
    let req = Request::from_parts(parts, ());

    let sender = client.sender();
    *sender = bounded(
        format!("{what}: a stream slot on the connection"),
        sender.clone().ready(),
    )
    .await?;
    let (mut response, mut request_body) = sender.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        // h2 buffers the data and sends it as the peer's window allows.
        request_body.send_data(body, true)?;
    }
    let stream_id = response.stream_id().as_u32();
    let mut promises = response.push_promises();

    let mut head = Some(response);
    let mut recv: Option<RecvStream> = None;
    let mut promises_open = true;
    let mut informational = Vec::new();
    let mut final_head: Option<Response<()>> = None;
    let mut body = BytesMut::new();
    let mut trailers = None;
    let mut error = None;
    let mut pushes: Vec<(PushMeta, Option<JoinHandle<PushedResponse>>)> = Vec::new();

    while head.is_some() || recv.is_some() || promises_open {
        let step = bounded(
            format!("{what}: progress (response, body or push promise)"),
            async {
                tokio::select! {
                    p = promises.push_promise(), if promises_open => Step::Promise(p),
                    h = next_head(&mut head) => Step::Head(h),
                    d = next_data(&mut recv) => Step::Data(d),
                }
            },
        )
        .await;
        match step {
            Step::Promise(Some(Ok(promise))) => {
                let (request, response) = promise.into_parts();
                let meta = PushMeta {
                    stream_id: response.stream_id().as_u32(),
                    refused: refuse(&request),
                    request,
                };
                let task = (!meta.refused).then(|| tokio::spawn(collect_pushed(response)));
                pushes.push((meta, task));
            }
            // Errors also show on the response or the body; None means the stream is closed.
            Step::Promise(Some(Err(_)) | None) => promises_open = false,
            Step::Head(Head::Informational(r)) => {
                informational.push((r.status(), r.headers().clone()))
            }
            Step::Head(Head::Final(Ok(r))) => {
                head = None;
                let (parts, stream) = r.into_parts();
                final_head = Some(Response::from_parts(parts, ()));
                recv = Some(stream);
            }
            Step::Head(Head::Final(Err(e))) => return Err(e),
            Step::Data(Some(Ok(chunk))) => {
                let stream = recv.as_mut().expect("body stream");
                // Give the window back as we read, or a large body stalls.
                let _ = stream.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Step::Data(Some(Err(e))) => {
                recv = None;
                error = Some(e);
            }
            Step::Data(None) => {
                let mut stream = recv.take().expect("body stream");
                match bounded(format!("{what}: trailers"), stream.trailers()).await {
                    Ok(t) => trailers = t,
                    Err(e) => error = Some(e),
                }
            }
        }
    }

    let mut pushed = Vec::new();
    for (meta, task) in pushes {
        let response = match task {
            Some(task) => bounded(format!("{what}: pushed {}", meta.request.uri()), task)
                .await
                .expect("push collector task"),
            None => PushedResponse::default(),
        };
        let (parts, ()) = meta.request.into_parts();
        pushed.push(Pushed {
            stream_id: meta.stream_id,
            method: parts.method,
            uri: parts.uri,
            request_headers: parts.headers,
            refused: meta.refused,
            status: response.status,
            headers: response.headers,
            body: response.body.freeze(),
            error: response.error,
        });
    }

    let response = final_head.expect("final response");
    let events = events_on_stream(
        &client.wire.lock().unwrap().frames,
        stream_id,
        &informational,
        response.status(),
        &pushed,
    );
    Ok(Exchange {
        stream_id,
        informational,
        pushes: pushed,
        status: response.status(),
        headers: response.headers().clone(),
        body: body.freeze(),
        trailers,
        error,
        events,
    })
}

enum Step {
    Promise(Option<Result<h2::client::PushPromise, h2::Error>>),
    Head(Head),
    Data(Option<Result<Bytes, h2::Error>>),
}

enum Head {
    Informational(Response<()>),
    Final(Result<Response<RecvStream>, h2::Error>),
}

/// The next 1xx or the final response; pending forever once the final response was taken.
async fn next_head(head: &mut Option<ResponseFuture>) -> Head {
    let Some(response) = head.as_mut() else {
        return std::future::pending().await;
    };
    poll_fn(|cx| {
        // 1xx responses sit in the same queue ahead of the final one, so draining them first
        // keeps their order.
        if let Poll::Ready(Some(info)) = response.poll_informational(cx) {
            return Poll::Ready(match info {
                Ok(r) => Head::Informational(r),
                Err(e) => Head::Final(Err(e)),
            });
        }
        Pin::new(&mut *response).poll(cx).map(Head::Final)
    })
    .await
}

async fn next_data(recv: &mut Option<RecvStream>) -> Option<Result<Bytes, h2::Error>> {
    match recv.as_mut() {
        Some(stream) => stream.data().await,
        None => std::future::pending().await,
    }
}

struct PushMeta {
    stream_id: u32,
    refused: bool,
    request: Request<()>,
}

#[derive(Default)]
struct PushedResponse {
    status: Option<StatusCode>,
    headers: HeaderMap,
    body: BytesMut,
    error: Option<h2::Error>,
}

/// Read a pushed response to its end, concurrently with the parent: pushed and parent streams
/// share the connection window, so reading them one after the other could stall.
async fn collect_pushed(response: PushedResponseFuture) -> PushedResponse {
    let mut out = PushedResponse::default();
    let id = response.stream_id().as_u32();
    let (parts, mut stream) =
        match bounded(format!("pushed stream {id}: response headers"), response).await {
            Ok(r) => r.into_parts(),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
    out.status = Some(parts.status);
    out.headers = parts.headers;
    while let Some(chunk) = bounded(format!("pushed stream {id}: body"), stream.data()).await {
        match chunk {
            Ok(chunk) => {
                let _ = stream.flow_control().release_capacity(chunk.len());
                out.body.extend_from_slice(&chunk);
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    if let Err(e) = bounded(format!("pushed stream {id}: end"), stream.trailers()).await {
        out.error = Some(e);
    }
    out
}

/// What happened on `stream_id`, from the wire log: the k-th HEADERS frame is the k-th 1xx, then
/// the final response, then trailers (CONTINUATION frames belong to their HEADERS).
fn events_on_stream(
    frames: &[Frame],
    stream_id: u32,
    informational: &[(StatusCode, HeaderMap)],
    status: StatusCode,
    pushes: &[Pushed],
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut headers_seen = 0;
    for frame in frames.iter().filter(|f| f.stream_id == stream_id) {
        match frame.kind.as_str() {
            "HEADERS" => {
                events.push(match informational.get(headers_seen) {
                    Some((s, _)) => Event::Informational(*s),
                    None if headers_seen == informational.len() => Event::Response(status),
                    None => Event::Trailers,
                });
                headers_seen += 1;
            }
            "PUSH_PROMISE" => {
                let promised = frame.promised_stream_id;
                let path = pushes
                    .iter()
                    .find(|p| Some(p.stream_id) == promised)
                    .map_or(String::new(), |p| p.path().to_owned());
                events.push(Event::PushPromise(path));
            }
            "RST_STREAM" => events.push(Event::Reset(Reason::from(frame.error_code.unwrap_or(0)))),
            _ => {}
        }
    }
    events
}

// ===== TLS =====

/// Handshake with `addr` offering `offer` as ALPN; the protocol the server selected, `None` if
/// it selected none. A failed handshake (e.g. the server rejects every offered protocol) is the
/// error.
pub async fn tls_alpn(addr: SocketAddr, offer: &[&[u8]]) -> io::Result<Option<Vec<u8>>> {
    let tcp = bounded(format!("TCP connect to {addr}"), TcpStream::connect(addr)).await?;
    let tls = bounded(
        format!("TLS handshake with {addr}"),
        tls_handshake(tcp, "localhost", offer),
    )
    .await?;
    Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

async fn tls_handshake(
    tcp: TcpStream,
    authority: &str,
    alpn: &[&[u8]],
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCert(provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let host = host_of(authority);
    let name = ServerName::try_from(host.to_owned())
        .unwrap_or_else(|e| panic!("TLS server name {host:?}: {e}"));
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The host of an authority: `[::1]:443` → `::1`, `localhost:8443` → `localhost`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The proxy under test has a self-signed certificate: accept any, but still check signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ===== Frames: the wire tap and nghttp traces =====

/// One HTTP/2 frame received from the server, from the wire tap under the h2 client (header
/// blocks are not decoded there, so `headers` is empty) or from an `nghttp -nv` trace (with
/// `headers` decoded, in order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    /// `DATA`, `HEADERS`, `PRIORITY`, `RST_STREAM`, `SETTINGS`, `PUSH_PROMISE`, `PING`, `GOAWAY`,
    /// `WINDOW_UPDATE`, `CONTINUATION`, or `UNKNOWN`.
    pub kind: String,
    pub length: u32,
    pub flags: u8,
    pub stream_id: u32,
    /// PUSH_PROMISE.
    pub promised_stream_id: Option<u32>,
    /// RST_STREAM and GOAWAY.
    pub error_code: Option<u32>,
    /// GOAWAY.
    pub last_stream_id: Option<u32>,
    /// SETTINGS: (identifier, value) in frame order.
    pub settings: Vec<(u16, u32)>,
    /// HEADERS and PUSH_PROMISE, nghttp traces only: the decoded fields (for a PUSH_PROMISE, the
    /// promised request).
    pub headers: Vec<(String, String)>,
    /// nghttp traces only: nghttp rejected the frame with this error (`PROTOCOL_ERROR`, ...).
    pub invalid: Option<String>,
}

impl Frame {
    pub fn end_stream(&self) -> bool {
        matches!(self.kind.as_str(), "DATA" | "HEADERS") && self.flags & 0x1 != 0
    }

    /// The first value of a decoded header field (nghttp traces only).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 9113 §6 frame type names.
fn frame_kind(code: u8) -> &'static str {
    match code {
        0x0 => "DATA",
        0x1 => "HEADERS",
        0x2 => "PRIORITY",
        0x3 => "RST_STREAM",
        0x4 => "SETTINGS",
        0x5 => "PUSH_PROMISE",
        0x6 => "PING",
        0x7 => "GOAWAY",
        0x8 => "WINDOW_UPDATE",
        0x9 => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

/// Frames parsed from the bytes the server sent.
#[derive(Default)]
struct WireLog {
    pending: BytesMut,
    frames: Vec<Frame>,
}

impl WireLog {
    fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        // RFC 9113 §4.1: 24-bit length, 8-bit type, 8-bit flags, 31-bit stream id.
        while self.pending.len() >= 9 {
            let p = &self.pending;
            let length = u32::from_be_bytes([0, p[0], p[1], p[2]]);
            if self.pending.len() < 9 + length as usize {
                return;
            }
            let mut frame = self.pending.split_to(9 + length as usize);
            let header = frame.split_to(9);
            let kind = frame_kind(header[3]);
            let flags = header[4];
            let stream_id =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut out = Frame {
                kind: kind.to_owned(),
                length,
                flags,
                stream_id,
                ..Frame::default()
            };
            let mut payload = frame.freeze();
            match kind {
                "PUSH_PROMISE" => {
                    // §6.6: optional pad length (PADDED flag 0x8), then the promised stream id.
                    if flags & 0x8 != 0 && payload.has_remaining() {
                        payload.advance(1);
                    }
                    if payload.remaining() >= 4 {
                        out.promised_stream_id = Some(payload.get_u32() & 0x7fff_ffff);
                    }
                }
                "RST_STREAM" if payload.remaining() >= 4 => {
                    out.error_code = Some(payload.get_u32())
                }
                "GOAWAY" if payload.remaining() >= 8 => {
                    out.last_stream_id = Some(payload.get_u32() & 0x7fff_ffff);
                    out.error_code = Some(payload.get_u32());
                }
                "SETTINGS" => {
                    while payload.remaining() >= 6 {
                        out.settings.push((payload.get_u16(), payload.get_u32()));
                    }
                }
                _ => {}
            }
            self.frames.push(out);
        }
    }
}

/// Records every frame read from `io`, passing bytes through unchanged.
struct Tap<T> {
    io: T,
    wire: Arc<Mutex<WireLog>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.wire.lock().unwrap().feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// ===== External programs =====

/// How long an external program may run. Longer than [`TIMEOUT`], since a program's run includes
/// whole transfers; pass curl's `--max-time` for a tighter bound.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `program` with `args`, bounded by [`PROGRAM_TIMEOUT`]; the process is killed if the test
/// gives up.
async fn run(program: &str, args: &[&str], install: &str) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROGRAM_TIMEOUT, child).await {
        Err(_) => panic!(
            "timed out after {PROGRAM_TIMEOUT:?}: {program} {}",
            args.join(" ")
        ),
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed: {install}")
        }
        Ok(Err(e)) => panic!("running {program}: {e}"),
    }
}

pub struct NghttpOutput {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
    /// The frames nghttp received, in order, parsed from a `-v` trace in `stdout`.
    pub frames: Vec<Frame>,
}

impl NghttpOutput {
    /// Received frames on one stream.
    pub fn frames_on(&self, stream_id: u32) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| f.stream_id == stream_id)
            .collect()
    }

    /// Paths promised by received PUSH_PROMISE frames, in order.
    pub fn promised_paths(&self) -> Vec<&str> {
        self.frames
            .iter()
            .filter(|f| f.kind == "PUSH_PROMISE")
            .filter_map(|f| f.header(":path"))
            .collect()
    }
}

/// Run `nghttp` (Debian nghttp2-client). Pass `-nv` to get `frames`: `-n` discards bodies, `-v`
/// prints the trace.
pub async fn nghttp(args: &[&str]) -> NghttpOutput {
    let out = run("nghttp", args, "apt-get install -y nghttp2-client").await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    NghttpOutput {
        frames: parse_nghttp_frames(&stdout),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

/// The frames an `nghttp -v` trace shows as received, in order. nghttp prints a header block's
/// fields (`recv (stream_id=13) :status: 200`) before the line of the frame that carried them
/// (`recv HEADERS frame <length=92, flags=0x04, stream_id=13>`), then the frame's details on
/// indented lines (`(padlen=0, promised_stream_id=2)`, `(last_stream_id=4,
/// error_code=NO_ERROR(0x00), ...)`, `[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]`). Sent frames
/// are skipped. The format is nghttp2's src/app_helper.cc (`print_frame`,
/// `verbose_on_header_callback`).
pub fn parse_nghttp_frames(trace: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut fields = Vec::new();
    // Whether indented detail lines belong to the last received frame.
    let mut in_recv = false;
    for line in trace.lines().map(strip_ansi) {
        let line = line.as_str();
        if line.starts_with(char::is_whitespace) {
            if in_recv && let Some(frame) = frames.last_mut() {
                parse_nghttp_details(line.trim(), frame);
            }
            continue;
        }
        in_recv = false;
        // `[  0.001] recv ...`; other lines (`[ERROR]`, `Some requests were not processed`) are
        // not frames.
        let Some(rest) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .map(|(_, r)| r)
        else {
            continue;
        };
        // `[INVALID; status=PROTOCOL_ERROR] recv HEADERS frame <...>`: received, and rejected.
        let (invalid, rest) = match rest
            .strip_prefix("[INVALID; status=")
            .and_then(|r| r.split_once("] "))
        {
            Some((status, rest)) => (Some(status.to_owned()), rest),
            None => (None, rest),
        };
        let Some(rest) = rest.strip_prefix("recv ") else {
            continue;
        };
        if let Some(field) = rest.strip_prefix("(stream_id=") {
            // `(stream_id=13) name: value` or `(stream_id=13, sensitive) name: value`; with -vv
            // also `(stream_id=13, length=6, srecv=6, crecv=6) DATA`, which has no ": ".
            let Some((_, nv)) = field.split_once(") ") else {
                continue;
            };
            // Pseudo-header names start with ':' themselves.
            let split = nv.get(1..).and_then(|s| s.find(": ")).map(|i| i + 1);
            if let Some(i) = split {
                fields.push((nv[..i].to_owned(), nv[i + 2..].to_owned()));
            }
            continue;
        }
        let Some((kind, info)) = rest.split_once(" frame <") else {
            continue;
        };
        let mut frame = Frame {
            kind: kind.to_owned(),
            invalid,
            ..Frame::default()
        };
        for item in info.trim_end_matches('>').split(", ") {
            match item.split_once('=') {
                Some(("length", v)) => frame.length = v.parse().unwrap_or(0),
                Some(("flags", v)) => {
                    frame.flags = u8::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0)
                }
                Some(("stream_id", v)) => frame.stream_id = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        // The fields printed since the last frame line belong to this frame's header block.
        let block = std::mem::take(&mut fields);
        if matches!(kind, "HEADERS" | "PUSH_PROMISE") {
            frame.headers = block;
        }
        frames.push(frame);
        in_recv = true;
    }
    frames
}

fn parse_nghttp_details(line: &str, frame: &mut Frame) {
    // `[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]`
    if let Some(setting) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let id = setting
            .split_once("(0x")
            .and_then(|(_, r)| r.split_once(')'))
            .and_then(|(hex, _)| u16::from_str_radix(hex, 16).ok());
        let value = setting.rsplit_once(':').and_then(|(_, v)| v.parse().ok());
        if let (Some(id), Some(value)) = (id, value) {
            frame.settings.push((id, value));
        }
        return;
    }
    // `(padlen=0, promised_stream_id=2)`, `(error_code=CANCEL(0x08))`,
    // `(last_stream_id=4, error_code=NO_ERROR(0x00), opaque_data(0)=[])`
    let Some(inner) = line.strip_prefix('(').and_then(|s| s.strip_suffix(')')) else {
        return;
    };
    for item in inner.split(", ") {
        match item.split_once('=') {
            Some(("promised_stream_id", v)) => frame.promised_stream_id = v.parse().ok(),
            Some(("last_stream_id", v)) => frame.last_stream_id = v.parse().ok(),
            Some(("error_code", v)) => {
                frame.error_code = v
                    .split_once("(0x")
                    .and_then(|(_, r)| r.strip_suffix(')'))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
            }
            _ => {}
        }
    }
}

/// nghttp colours its output on a terminal; drop the escapes in case it did.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub struct CurlOutput {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl CurlOutput {
    /// curl's exit code (18: transfer closed with data outstanding; 7: could not connect; 92:
    /// HTTP/2 stream error).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Run `curl` with exactly these arguments.
pub async fn curl(args: &[&str]) -> CurlOutput {
    let out = run("curl", args, "apt-get install -y curl").await;
    CurlOutput {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

/// Which HTTP version curl is told to use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CurlHttp {
    /// `--http1.1`
    Http1,
    /// `--http2-prior-knowledge`: h2c without upgrade, or h2 over TLS.
    H2PriorKnowledge,
    /// `--http2`: ALPN over TLS; on cleartext, curl tries `Upgrade: h2c`.
    H2,
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct CurlResponse {
    /// curl's exit code; 0 on success.
    pub exit_code: i32,
    /// From the status line: `1.1` or `2`. Empty if no response head arrived.
    pub version: String,
    /// 0 if no response head arrived.
    pub status: u16,
    /// Final response fields in order; names as curl printed them (lowercase over HTTP/2).
    pub headers: Vec<(String, String)>,
    /// 1xx responses in order, with their fields.
    pub informational: Vec<(u16, Vec<(String, String)>)>,
    /// The body (empty for `--head`/`-I`).
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlResponse {
    /// The first value of a final response header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a final response header (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `curl -sS -k <version> -D - -o <tmp> <extra...> <url>`: status, headers (1xx ones apart) and
/// body. Non-zero exits are returned, not panicked on.
pub async fn curl_fetch(http: CurlHttp, url: &str, extra: &[&str]) -> CurlResponse {
    let body_file = TempFile::new("curl-body");
    let version = match http {
        CurlHttp::Http1 => "--http1.1",
        CurlHttp::H2PriorKnowledge => "--http2-prior-knowledge",
        CurlHttp::H2 => "--http2",
    };
    let mut args = vec!["-sS", "-k", version, "-D", "-", "-o", body_file.path_str()];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args).await;
    let head_only = extra.iter().any(|a| *a == "-I" || *a == "--head");
    let body = if head_only {
        Vec::new()
    } else {
        std::fs::read(&body_file.path).unwrap_or_default()
    };

    let mut response = CurlResponse {
        exit_code: out.code().unwrap_or(-1),
        version: String::new(),
        status: 0,
        headers: Vec::new(),
        informational: Vec::new(),
        body,
        stderr: out.stderr,
    };
    // `-D -` writes every response head, 1xx ones included, each ending with an empty line.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut current: Option<(u16, Vec<(String, String)>)> = None;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if let Some(status_line) = line.strip_prefix("HTTP/") {
            let mut parts = status_line.split_whitespace();
            response.version = parts.next().unwrap_or("").to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(done) = current.replace((status, Vec::new())) {
                response.informational.push(done);
            }
        } else if let (Some((_, fields)), Some((name, value))) =
            (current.as_mut(), line.split_once(':'))
        {
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    if let Some((status, fields)) = current {
        response.status = status;
        response.headers = fields;
    }
    response
}

/// A file under the temp dir, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    /// A fresh, not yet created, path.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("linkpush-test-{}-{n}-{label}", std::process::id()));
        TempFile { path }
    }

    pub fn with_contents(label: &str, contents: &[u8]) -> Self {
        let file = TempFile::new(label);
        std::fs::write(&file.path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.path.display()));
        file
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
