//! The pooled HTTP/1.1 client to the backend ([`pool`]), the header rewriting of SPEC §3 (one
//! function for both directions and for promised requests), and the capture of upstream 103s.
//!
//! Timeouts: `response_timeout` bounds the wait for a slot and the response head;
//! `read_timeout` (nginx's `proxy_read_timeout`) bounds every wait for the next bytes of a
//! response, head or body, so a stalled body releases its connection and its
//! `max_connections` slot instead of holding them until the backend hangs up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;

mod buffer;
pub mod conn;
mod pool;
mod share;

pub use buffer::Buffered;
pub use pool::Pool;
pub use share::ClientShare;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Any request body: a client's streamed body, or empty for promised requests.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// How many upstream 103s of one request are kept for the front end (a hostile upstream could
/// send thousands; the first few carry all a browser would use).
pub const MAX_INFORMATIONAL: usize = 8;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The fixed list of connection-specific fields (RFC 9110 §7.6.1, RFC 9113 §8.2.2), which never
/// cross the proxy. TE is one unless it is exactly `trailers` (RFC 9113 §8.2.2 allows only that
/// value over HTTP/2).
const FIXED: [HeaderName; 7] = [
    header::TE,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// `name`'s index in [`FIXED`], if it is one of them: one string match (a length test, then at
/// most one comparison). Shared by [`strip_hop_by_hop`] and the upstream request's writer
/// (`conn::write_forwarded`).
fn fixed_index(name: &str) -> Option<usize> {
    Some(match name {
        "te" => 0,
        "connection" => 1,
        "keep-alive" => 2,
        "proxy-connection" => 3,
        "transfer-encoding" => 4,
        "upgrade" => 5,
        "http2-settings" => 6,
        _ => return None,
    })
}

/// Removes connection-specific fields: those of [`FIXED`] (TE unless it is exactly `trailers`)
/// and the fields `Connection` names. Used for trailers, both ways; request heads lose them as
/// they are written (`conn::write_forwarded`) and response heads as they are parsed
/// (`conn::parse_head`).
///
/// One pass over the fields decides what goes, reading `Connection`'s options as it meets
/// them, and only fields present are removed. Callgrind: removing the whole list by name cost
/// ~1,300 instructions per head even when nothing was there (a hash lookup each).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Bit `i` of `present` stands for `FIXED[i]` (`strips_connection_specific_fields` strips
    // every one of them).
    let mut present = 0u8;
    // Fields named by `Connection` (RFC 9110 §7.6.1): rare, so allocated only when met.
    let mut named: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        let Some(bit) = fixed_index(name.as_str()) else {
            continue;
        };
        if name == header::TE && value.as_bytes().eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        if name == header::CONNECTION {
            named.extend(connection_options(value.as_bytes()));
        }
        present |= 1 << bit;
    }
    for (bit, name) in FIXED.into_iter().enumerate() {
        if present & (1 << bit) != 0 {
            headers.remove(name);
        }
    }
    for name in named {
        headers.remove(name);
    }
}

/// The field names a `Connection` value lists, but for its usual options (`keep-alive`,
/// `close`, `upgrade`), which need no lookup: fields of the fixed list, or not a field at all
/// (a field named `close` is not worth a lookup on every response).
fn connection_options(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter_map(connection_option)
}

/// The field one trimmed `Connection` option names, if it names one that needs a lookup (see
/// [`connection_options`]).
fn connection_option(option: &[u8]) -> Option<HeaderName> {
    if option.is_empty()
        || [b"keep-alive".as_slice(), b"close", b"upgrade"]
            .iter()
            .any(|usual| option.eq_ignore_ascii_case(usual))
    {
        return None;
    }
    HeaderName::from_bytes(option).ok()
}

/// A client's request body failed (an aborted upload, a malformed chunked body, a reset
/// stream). The front ends wrap their request bodies' errors in this so that an upstream request
/// that fails because of it is blamed on the client, not on the backend.
#[derive(Debug, thiserror::Error)]
#[error("client request body failed")]
pub struct ClientBodyError(#[source] pub BoxError);

impl ClientBodyError {
    pub fn boxed(err: impl Into<BoxError>) -> BoxError {
        Box::new(ClientBodyError(err.into()))
    }
}

/// Whether `err` or one of its causes is a [`ClientBodyError`].
fn caused_by_client_body(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<ClientBodyError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What the front end knows about the client side of a request.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub peer: std::net::SocketAddr,
    /// "https" or "http": the scheme the client used to reach linkpush.
    pub scheme: &'static str,
    /// This connection's share of the upstream pool and read-ahead memory.
    pub upstream_share: ClientShare,
    /// The peer's address as an `X-Forwarded-For` element, made once per connection: every
    /// request of the connection shares its bytes (formatting it per request was two
    /// allocations).
    forwarded_for: HeaderValue,
    /// The peer's address as the access log writes it (`127.0.0.1:4321`, `[::1]:4321`), made
    /// once per connection.
    pub address: std::sync::Arc<str>,
}

impl ClientContext {
    pub fn new(
        peer: std::net::SocketAddr,
        scheme: &'static str,
        upstream_share: ClientShare,
    ) -> Self {
        let ip = bytes::Bytes::from(peer.ip().to_string());
        // An IP address in text form is always a valid field value.
        let forwarded_for =
            HeaderValue::from_maybe_shared(ip).unwrap_or(HeaderValue::from_static("unknown"));
        ClientContext {
            peer,
            scheme,
            upstream_share,
            forwarded_for,
            address: peer.to_string().into(),
        }
    }
}

/// How a request is forwarded to the upstream (SPEC §3). The connection writes it into the
/// request head (`conn::encode`) in the one pass that writes the client's fields, so the request's
/// header map is never rewritten:
///
/// - connection-specific fields are left out (Connection and the fields it names, Keep-Alive,
///   Proxy-Connection, Transfer-Encoding, Upgrade, HTTP2-Settings, and TE unless it is exactly
///   `trailers`);
/// - `Host` and `X-Forwarded-Host` are the client's authority;
/// - the client's address is appended to `X-Forwarded-For`, and `X-Forwarded-Proto` is the scheme
///   it used;
/// - cookies are joined into one field with "; " (RFC 9113 §8.2.3: an HTTP/2 client may split
///   them; HTTP/1.1 needs one field);
/// - with an upgrade token, `Upgrade` and `Connection: upgrade` are put back, for a protocol
///   switch.
///
/// It borrows the request's authority (owned only for a push's fetch, which outlives its parent's
/// stream: [`Forward::into_owned`]).
#[derive(Clone, Debug)]
pub struct Forward<'a> {
    /// `None` only for an authority that is not all visible ASCII, which `request_authority`
    /// never returns.
    host: Option<std::borrow::Cow<'a, str>>,
    forwarded_for: HeaderValue,
    proto: &'static str,
    upgrade: Option<HeaderValue>,
    /// A request id made here, written in place of the client's `X-Request-Id` fields.
    request_id: Option<[u8; 16]>,
}

impl<'a> Forward<'a> {
    pub fn new(authority: &'a str, client: &ClientContext) -> Self {
        // Checked, though every caller's authority passed `check_authority`: it is written into
        // the request head as it is.
        let valid = !authority.is_empty() && authority.bytes().all(|b| b.is_ascii_graphic());
        Forward {
            host: valid.then_some(std::borrow::Cow::Borrowed(authority)),
            forwarded_for: client.forwarded_for.clone(),
            proto: client.scheme,
            upgrade: None,
            request_id: None,
        }
    }

    /// The request's id goes upstream: a made one replaces the client's fields, a given one is
    /// the client's field, forwarded as it is.
    pub fn request_id(mut self, id: &crate::front::RequestId) -> Self {
        if let crate::front::RequestId::Made(hex) = id {
            self.request_id = Some(*hex);
        }
        self
    }

    /// The request asks the upstream to switch to `token`'s protocol.
    pub fn upgrade(mut self, token: HeaderValue) -> Self {
        self.upgrade = Some(token);
        self
    }

    pub fn into_owned(self) -> Forward<'static> {
        Forward {
            host: self.host.map(|h| std::borrow::Cow::Owned(h.into_owned())),
            forwarded_for: self.forwarded_for,
            proto: self.proto,
            upgrade: self.upgrade,
            request_id: self.request_id,
        }
    }
}

/// The Link fields of one upstream 103.
pub type Informational = Vec<HeaderValue>;

/// Upstream 103s of one request, from the exchange that reads them ([`conn::exchange`]) to the
/// request's stream: at most [`MAX_INFORMATIONAL`] held, the rest dropped.
///
/// A local of the stream, lent to the upstream future: the exchange runs inside that future, in
/// the stream's own task, so a 103 is queued only while the stream polls it. The stream takes
/// what is queued before and after each poll ([`InformationalQueue::take`]): no waker, and no
/// allocation for what is almost always no 103 at all (callgrind: an `Arc`'d queue with a waker
/// was ~250 instructions per request). The lock is never contended; it makes the queue `Sync`,
/// so the future that borrows it stays `Send`.
#[derive(Default)]
pub struct InformationalQueue {
    queue: std::sync::Mutex<std::collections::VecDeque<Informational>>,
    /// Whether `queue` holds any, so that the stream's checks after each poll take no lock.
    /// Set and cleared with the lock held.
    queued: std::sync::atomic::AtomicBool,
}

impl InformationalQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Informational>> {
        // A poisoned lock only means a panic elsewhere mid-push of a plain queue: still usable.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues one 103's links, unless [`MAX_INFORMATIONAL`] are waiting already.
    pub(crate) fn send(&self, links: Informational) {
        let mut q = self.lock();
        if q.len() < MAX_INFORMATIONAL {
            q.push_back(links);
            self.queued
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// The oldest 103 queued, if any.
    pub fn take(&self) -> Option<Informational> {
        if !self.queued.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut q = self.lock();
        let links = q.pop_front();
        self.queued
            .store(!q.is_empty(), std::sync::atomic::Ordering::Release);
        links
    }

    /// Polls `upstream`, the request whose exchange queues its 103s on `queue`, taking from the
    /// queue before and after: it fills only while `upstream` is polled, in the caller's task,
    /// so nothing wakes the task for it. A 103 comes out before the final response it preceded;
    /// those queued by the poll that also read the final head are left for
    /// [`InformationalQueue::take`].
    pub fn poll_next<F: Future>(
        queue: Option<&Self>,
        upstream: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Next<F::Output>> {
        let hints = || queue.and_then(Self::take);
        if let Some(links) = hints() {
            return Poll::Ready(Next::Hints(links));
        }
        if let Poll::Ready(out) = upstream.poll(cx) {
            return Poll::Ready(Next::Done(out));
        }
        match hints() {
            Some(links) => Poll::Ready(Next::Hints(links)),
            None => Poll::Pending,
        }
    }
}

/// What waiting on an upstream request gives next ([`InformationalQueue::poll_next`]).
pub enum Next<T> {
    /// One upstream 103's links.
    Hints(Informational),
    /// The request's own result.
    Done(T),
}

/// The pooled client. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    pool: Pool,
    limit: Arc<Semaphore>,
    response_timeout: Duration,
    read_timeout: Duration,
    metrics: Metrics,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, metrics: Metrics) -> Self {
        Upstream {
            pool: Pool::new(
                &config.authority,
                config.connect_timeout,
                config.max_idle_per_host,
                config.max_connections,
                metrics.clone(),
            ),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            response_timeout: config.response_timeout,
            read_timeout: config.read_timeout,
            metrics,
        }
    }

    /// The upstream request target for a path and query: origin-form (RFC 9112 §3.2.1); the
    /// `Host` field carries the authority.
    pub fn uri_for(
        &self,
        path_and_query: http::uri::PathAndQuery,
    ) -> Result<http::Uri, ProxyError> {
        Ok(http::Uri::from(path_and_query))
    }

    /// [`Upstream::uri_for`] from a path string (a resolved Link target).
    pub fn uri_for_path(&self, path_and_query: &str) -> Result<http::Uri, ProxyError> {
        let pq = http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        self.uri_for(pq)
    }

    /// Sends `req` (its URI from [`Upstream::uri_for`]), rewritten as `forward` says, on an idle
    /// pooled connection or a new one. Upstream 103s are queued on `informational` as they arrive, before this future
    /// resolves. The response head is normalised ([`crate::headers::normalize_response`]); a 101
    /// is accepted only when `req` carries `Upgrade`, and then [`UpstreamBody::take_upgraded`]
    /// yields the connection.
    ///
    /// An `async` block, not an `async fn`, here and on the rest of the request path: an async
    /// fn's future keeps its arguments twice, as captured and as moved into the body
    /// (rust-lang/rust#62958), and every level of the path is copied whole as it is awaited.
    /// As blocks, an HTTP/2 stream's future is 3.0 KB instead of 4.5 KB (`-Zprint-type-sizes`),
    /// ~570 instructions per request less `memcpy` (callgrind, `/small.txt`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn send(
        &self,
        req: Request<RequestBody>,
        forward: Option<Forward<'_>>,
        informational: Option<&InformationalQueue>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, ProxyError>> {
        async move {
            // (The request-target is written in origin-form whatever the URI's form: `conn::encode`.)
            let upgrade_requested = conn::asks_upgrade(req.headers(), forward.as_ref());
            // Deadlines on tokio's clock, one read for both in the common case; the duration
            // measured on the turn's (`crate::clock`).
            let now = tokio::time::Instant::now();
            let started = crate::clock::stamp();
            let deadline = now + self.response_timeout;
            // When the head's wait starts: now, or after a wait for a permit.
            let mut head_from = now;
            // `max_connections`: every request in flight holds a connection, so a permit per request
            // (released when its body is done) bounds the connections open at once.
            // A free slot is taken without arming a timer (the common case).
            let permit = match self.limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Boxed, as the connect below: a rare wait kept out of the future's size.
                    let wait =
                        tokio::time::timeout_at(deadline, self.limit.clone().acquire_owned());
                    match Box::pin(wait).await {
                        Ok(Ok(p)) => {
                            head_from = tokio::time::Instant::now();
                            p
                        }
                        Ok(Err(_)) => return Err(ProxyError::Internal("upstream limiter closed")),
                        Err(_) => {
                            let err = ProxyError::UpstreamSaturated(self.response_timeout);
                            self.metrics.upstream_error(err.kind());
                            return Err(err);
                        }
                    }
                }
            };
            let permit = Held {
                _permit: permit,
                _in_use: self.metrics.upstream_in_use(),
            };
            // The head is the first bytes `read_timeout` waits for. The connection's own timer
            // keeps this deadline (`conn::exchange`), and a connect waits for it too.
            let head_deadline = deadline.min(head_from + self.read_timeout);
            // One request on a pooled connection, or on a new one when none is idle. A pooled
            // connection that closed before any byte of a response is tried once more on a new
            // connection when the request may be sent again (see [`conn`]: the backend closed an
            // idle keep-alive connection, RFC 9112 §9.3.1). Written here rather than as a
            // function of its own: one level of futures fewer to move the request and the
            // response through (callgrind, `/small.txt`: ~250 instructions per request).
            let result: Result<conn::Exchanged, ProxyError> = 'exchange: {
                // A new connection is bounded by the head's deadline too (and by `connect_timeout`).
                // Boxed: the connect's state (440 bytes) is needed only when no connection is
                // idle, and unboxed it made every request's future that much larger, copied whole
                // at each level that awaits it.
                let connect = || {
                    Box::pin(async {
                        match tokio::time::timeout_at(head_deadline, self.pool.connect()).await {
                            Ok(connected) => connected,
                            Err(_) => Err(ProxyError::UpstreamRequest(conn::Error::HeadTimedOut)),
                        }
                    })
                };
                let mut conn = match self.pool.checkout() {
                    Some(conn) => conn,
                    None => match connect().await {
                        Ok(conn) => conn,
                        Err(e) => break 'exchange Err(e),
                    },
                };
                let out = conn.encode(req, forward.as_ref());
                let out = match conn::exchange(conn, out, informational, head_deadline).await {
                    Ok(res) => break 'exchange Ok(res),
                    Err(conn::Failed::Retry(again)) => again,
                    Err(conn::Failed::Error(e)) => {
                        break 'exchange Err(ProxyError::UpstreamRequest(e));
                    }
                };
                let conn = match connect().await {
                    Ok(conn) => conn,
                    Err(e) => break 'exchange Err(e),
                };
                match conn::exchange(conn, out, informational, head_deadline).await {
                    Ok(res) => Ok(res),
                    Err(conn::Failed::Retry(_)) => {
                        Err(ProxyError::UpstreamRequest(conn::Error::Closed))
                    }
                    Err(conn::Failed::Error(e)) => Err(ProxyError::UpstreamRequest(e)),
                }
            };
            self.metrics.upstream_duration(crate::clock::since(started));
            let err = match result {
                Ok(mut res) => {
                    match crate::headers::normalize_response(
                        res.status,
                        &mut res.headers,
                        upgrade_requested,
                    ) {
                        Ok(()) => {
                            let mut response = Response::new(UpstreamBody {
                                inner: Some(res.body),
                                permit: Some(permit),
                                read_timeout: self.read_timeout,
                                waiting: None,
                                metrics: self.metrics.clone(),
                                pool: Some(self.pool.clone()),
                            });
                            *response.status_mut() = res.status;
                            *response.version_mut() = res.version;
                            *response.headers_mut() = res.headers;
                            return Ok(response);
                        }
                        Err(err) => err,
                    }
                }
                // The request failed because the client's body did: the client's fault, not the
                // backend's (no upstream error counted, no WARN).
                Err(ProxyError::UpstreamRequest(e)) if caused_by_client_body(&e) => {
                    return Err(ProxyError::ClientBody(e.into()));
                }
                Err(ProxyError::UpstreamRequest(conn::Error::HeadTimedOut))
                    if head_deadline < deadline =>
                {
                    ProxyError::UpstreamReadTimeout(self.read_timeout)
                }
                Err(ProxyError::UpstreamRequest(conn::Error::HeadTimedOut)) => {
                    ProxyError::UpstreamTimeout(self.response_timeout)
                }
                Err(e) => e,
            };
            self.metrics.upstream_error(err.kind());
            Err(err)
        }
    }
}

/// An upstream response body; holds its connection-limit permit until dropped, and fails with
/// [`ProxyError::UpstreamReadTimeout`] when no bytes come for `read_timeout`.
///
/// On that failure the connection is closed at once (a connection whose body was not read to
/// the end is never reused) and the permit released; the front end resets the client's stream,
/// since a truncated body must never end cleanly (SPEC §3).
pub struct UpstreamBody {
    /// `None` once the body failed on a read timeout.
    inner: Option<conn::ConnBody>,
    permit: Option<Held>,
    read_timeout: Duration,
    /// Armed when a poll found no data, reset whenever a frame arrives; allocated on first use.
    waiting: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
    metrics: Metrics,
    /// Where the connection goes back when the body has ended, if it may carry another request.
    pool: Option<Pool>,
}

impl UpstreamBody {
    /// Pools the connection if the body has ended and it may serve another request.
    fn release(&mut self) {
        if let (Some(pool), Some(inner)) = (&self.pool, self.inner.as_mut())
            && let Some(conn) = inner.take_reusable()
        {
            pool.checkin(conn);
        }
        self.pool = None;
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body complete without a last poll (empty, or its end seen via `is_end_stream`).
        if self.pool.is_some() {
            self.release();
        }
    }
}

/// A `max_connections` slot, counted in `linkpush_upstream_connections{state="in_use"}` until
/// dropped.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    _in_use: crate::metrics::GaugeGuard,
}

impl UpstreamBody {
    /// The connection-limit permit, for a tunnel that keeps the upstream connection after a
    /// 101 (the body of which is empty).
    pub fn take_permit(&mut self) -> Option<Held> {
        self.permit.take()
    }

    /// The connection of a 101 to a request that asked to upgrade, for its tunnel.
    pub fn take_upgraded(&mut self) -> Option<conn::Upgraded> {
        self.pool = None;
        self.inner.as_mut()?.take_upgraded()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(ProxyError::UpstreamReadTimeout(
                this.read_timeout,
            )))));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                // Done: free the slot and the connection now, not when the front end gets round
                // to dropping us.
                this.permit = None;
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if let Some((armed, _)) = &mut this.waiting {
                    *armed = false;
                }
                if frame.is_err() {
                    this.pool = None;
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.read_timeout;
                let (armed, sleep) = this
                    .waiting
                    .get_or_insert_with(|| (false, Box::pin(tokio::time::sleep_until(deadline))));
                if !*armed {
                    sleep.as_mut().reset(deadline);
                    *armed = true;
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Nothing for `read_timeout`: drop the connection and the slot now.
                this.inner = None;
                this.permit = None;
                this.pool = None;
                let err = ProxyError::UpstreamReadTimeout(this.read_timeout);
                this.metrics.upstream_error(err.kind());
                Poll::Ready(Some(Err(Box::new(err))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_connection_specific_fields() {
        let mut h = map(&[
            ("connection", "x-custom, keep-alive"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn informational_queue_keeps_the_first_few_in_order() {
        let queue = InformationalQueue::default();
        assert!(queue.take().is_none());
        for i in 0..MAX_INFORMATIONAL + 3 {
            queue.send(vec![HeaderValue::from(i)]);
        }
        let got: Vec<String> = std::iter::from_fn(|| queue.take())
            .map(|links| links[0].to_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..MAX_INFORMATIONAL).map(|i| i.to_string()).collect();
        assert_eq!(got, expected, "in order, the extra ones dropped");
        queue.send(vec![HeaderValue::from_static("late")]);
        assert_eq!(queue.take().unwrap()[0], "late");
        assert!(queue.take().is_none());
    }

    #[test]
    fn a_head_without_connection_specific_fields_is_left_as_it_is() {
        let mut h = map(&[
            ("x-a", "1"),
            ("cookie", "c"),
            ("te", "trailers"),
            ("x-b", "2"),
        ]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn te_goes_when_any_value_is_not_trailers_or_connection_names_it() {
        let mut h = map(&[("te", "trailers"), ("te", "gzip")]);
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[
            ("connection", "te"),
            ("connection", "X-A"),
            ("te", "trailers"),
        ]);
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-b"], "2");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
    }
}
