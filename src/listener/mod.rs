//! Accept loops: one per listen address. Each accepted socket gets TCP_NODELAY and write-behind
//! (`gather.rs`: its writes leave at the end of the worker's turn, with the other connections'),
//! then TLS with ALPN dispatch (`h2` → HTTP/2, otherwise HTTP/1.1) or, in cleartext, preface
//! detection (the HTTP/2 connection preface → h2c with prior knowledge, anything else →
//! HTTP/1.1). The `Upgrade: h2c` dance is not supported (deprecated by RFC 9113 §3.1).
//!
//! Two bounds on what the process holds: `server.max_connections` (at the limit the loops stop
//! accepting, so new connections wait in the kernel's listen backlog until one closes), and
//! running out of file descriptors (EMFILE/ENFILE): the loop logs once, backs off and retries,
//! never spinning on a listener that stays readable.

mod gather;
pub mod tls;

use gather::Gathered;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::app::App;
use crate::front::{self, handshake_timeout};
use crate::upstream::{ClientContext, ClientShare};

/// RFC 9113 §3.4: the client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the accept loops share: the current app (swapped on reload) and the TLS config.
pub struct Shared {
    pub app: RwLock<Arc<App>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    pub fn app(&self) -> Arc<App> {
        self.app.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How long an accept loop waits after a failed accept (EMFILE and friends) before it tries
/// again: the pending connection stays readable, so retrying at once would spin. Measured:
/// descriptors freed → serving again within one back-off.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Counts the server's live connections (at most `server.max_connections` admitted at once) so
/// shutdown can wait for them. (An HTTP/2 connection's streams and pushes are counted by its
/// own task, which runs them: `front::h2`.)
pub struct Tracker {
    count: AtomicUsize,
    zero: Notify,
    /// One permit per connection `server.max_connections` allows.
    slots: Arc<Semaphore>,
    /// Set while the accept loops are paused at the limit, so the pause is logged once.
    limited: AtomicBool,
}

impl Tracker {
    pub fn new(max_connections: usize) -> Self {
        Tracker {
            count: AtomicUsize::new(0),
            zero: Notify::new(),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            limited: AtomicBool::new(false),
        }
    }

    pub fn enter(self: &Arc<Self>) -> TrackerGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        TrackerGuard(self.clone(), None)
    }

    /// A slot for the next connection, waiting while `server.max_connections` are open.
    async fn admit(&self, metrics: &crate::metrics::Metrics) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            if self.limited.swap(false, Ordering::AcqRel) {
                info!("below server.max_connections again");
            }
            return Some(slot);
        }
        metrics.connections_limited();
        if !self.limited.swap(true, Ordering::AcqRel) {
            warn!(
                open = self.count(),
                "server.max_connections reached; new connections wait in the backlog"
            );
        }
        self.slots.clone().acquire_owned().await.ok()
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once nothing is left.
    pub async fn drained(&self) {
        loop {
            let notified = self.zero.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One live connection; holds its `server.max_connections` slot.
pub struct TrackerGuard(Arc<Tracker>, Option<OwnedSemaphorePermit>);

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// Binds one listen address, with SO_REUSEADDR so a restart does not wait out TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        // "[::]:8443" beside "0.0.0.0:8443" must not collide.
        let sock = socket2::SockRef::from(&socket);
        sock.set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Set while accepts fail, so a run of EMFILE is one warning, not twenty a second.
    let mut failing = false;
    loop {
        // At the limit, stop accepting: new connections wait in the backlog (SPEC §2).
        let metrics = shared.app().metrics.clone();
        let slot = tokio::select! {
            slot = connections.admit(&metrics) => slot,
            _ = shutdown.changed() => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if std::mem::take(&mut failing) {
                        info!("accepting connections again");
                    }
                    // Without TCP_NODELAY a relayed 103 was measured ~40 ms late.
                    let _ = socket.set_nodelay(true);
                    let mut guard = connections.enter();
                    guard.1 = slot;
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    // Each poll of a connection's task is a turn of `clock`: its streams read
                    // the time once per poll.
                    tokio::spawn(crate::clock::turns(async move {
                        serve_connection(socket, peer, &shared, shutdown).await;
                        drop(guard);
                    }));
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning, and say it once.
                    if failing {
                        debug!(error = %err, "accept failed");
                    } else {
                        warn!(error = %err, "accept failed; retrying every 50ms until it succeeds");
                        failing = true;
                    }
                    drop(slot);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) {
    let app = shared.app();
    let deadline = handshake_timeout(app.config.server.idle_timeout);
    let upstream_share = ClientShare::new(&app.config.upstream);
    match &shared.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            // Boxed: the rustls connection is 1.2 KB, and an async fn keeps the slot of an
            // argument (rust-lang/rust#62958) or of a borrowed local after moving it into an
            // awaited future. Inline, this task and `front::h2::serve` each kept a dead copy
            // for the connection's life: heaptrack at 2000 idle connections, 6.4 KB per task
            // before, 2.9 KB plus this 1.2 KB box after (docs/BENCHMARKS.md, idle memory).
            let stream = match tokio::time::timeout(
                deadline,
                acceptor.accept(Gathered::new(socket)),
            )
            .await
            {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(err)) => {
                    let reason = tls::HandshakeError::classify(&err);
                    app.metrics.tls_handshake_error(reason);
                    debug!(%peer, reason = reason.as_str(), error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    let reason = tls::HandshakeError::Timeout;
                    app.metrics.tls_handshake_error(reason);
                    debug!(%peer, reason = reason.as_str(), "TLS handshake failed");
                    return;
                }
            };
            let client = ClientContext::new(peer, "https", upstream_share);
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                front::h2::serve(app, stream, client, shutdown).await;
            } else {
                front::h1::serve(app, stream, client, shutdown).await;
            }
        }
        None => {
            let client = ClientContext::new(peer, "http", upstream_share);
            let (io, is_h2) =
                match tokio::time::timeout(deadline, sniff_preface(Gathered::new(socket))).await {
                    Ok(Ok(sniffed)) => sniffed,
                    Ok(Err(err)) => {
                        debug!(%peer, error = %err, "connection closed before a request");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "no request within the handshake deadline");
                        return;
                    }
                };
            if is_h2 {
                front::h2::serve(app, io, client, shutdown).await;
            } else {
                front::h1::serve(app, io, client, shutdown).await;
            }
        }
    }
}

/// Reads just enough to tell the HTTP/2 preface from an HTTP/1.1 request line, and hands back
/// an IO that replays what was read.
async fn sniff_preface(mut socket: Gathered) -> io::Result<(Rewind<Gathered>, bool)> {
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    while n < buf.len() {
        let read = socket.read(&mut buf[n..]).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n += read;
        if buf[..n] != PREFACE[..n] {
            break;
        }
    }
    let is_h2 = buf[..n] == PREFACE[..];
    Ok((
        Rewind {
            prefix: Bytes::copy_from_slice(&buf[..n]),
            inner: socket,
        },
        is_h2,
    ))
}

/// An IO that first yields `prefix`, then reads from `inner`.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
