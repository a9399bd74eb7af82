//! Accept loops: one per listen address. Each accepted socket gets TCP_NODELAY, then TLS with
//! ALPN dispatch (`h2` → HTTP/2, otherwise HTTP/1.1) or, in cleartext, preface detection (the
//! HTTP/2 connection preface → h2c with prior knowledge, anything else → HTTP/1.1). The
//! `Upgrade: h2c` dance is not supported (deprecated by RFC 9113 §3.1).

pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::app::App;
use crate::front::{self, handshake_timeout};
use crate::upstream::ClientContext;

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

/// Counts live work so shutdown and idle timers can wait for it: the server's connections, and
/// each HTTP/2 connection's client and pushed streams (`front::h2`).
#[derive(Default)]
pub struct Tracker {
    count: AtomicUsize,
    zero: Notify,
}

impl Tracker {
    pub fn enter(self: &Arc<Self>) -> TrackerGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        TrackerGuard(self.clone())
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

pub struct TrackerGuard(Arc<Tracker>);

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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Without TCP_NODELAY a relayed 103 was measured ~40 ms late.
                    let _ = socket.set_nodelay(true);
                    let guard = connections.enter();
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        serve_connection(socket, peer, &shared, shutdown).await;
                        drop(guard);
                    });
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
    match &shared.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let stream = match tokio::time::timeout(deadline, acceptor.accept(socket)).await {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let client = ClientContext {
                peer,
                scheme: "https",
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                front::h2::serve(app, stream, client, shutdown).await;
            } else {
                front::h1::serve(app, stream, client, shutdown).await;
            }
        }
        None => {
            let client = ClientContext {
                peer,
                scheme: "http",
            };
            let (io, is_h2) = match tokio::time::timeout(deadline, sniff_preface(socket)).await {
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
async fn sniff_preface(mut socket: TcpStream) -> io::Result<(Rewind<TcpStream>, bool)> {
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
