//! The IO under an HTTP/1.1 connection, with one job: let the proxy send `103 Early Hints`,
//! which hyper's server cannot write.
//!
//! The service queues a 103's bytes while its request is in flight; they are written before
//! anything hyper writes next, and at hyper's next flush. hyper's dispatcher polls the service
//! and then always flushes the IO (hyper src/proto/h1/dispatch.rs `poll_loop`), so a 103 queued
//! while the service waits for the upstream goes out at once. hyper handles one request at a
//! time and writes a response head only after its service has answered, so a queued 103
//! always lands before the final response it belongs to (RFC 9110 §15.2).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Interim responses waiting to be written.
#[derive(Default)]
pub struct Interim {
    pending: Mutex<Vec<u8>>,
}

impl Interim {
    /// Queues a `103 Early Hints` carrying only these Link values (SPEC §5).
    pub fn early_hints(&self, links: &[http::HeaderValue]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\n");
        for link in links {
            pending.extend_from_slice(b"link: ");
            pending.extend_from_slice(link.as_bytes());
            pending.extend_from_slice(b"\r\n");
        }
        pending.extend_from_slice(b"\r\n");
    }
}

pub struct InterimIo<T> {
    inner: T,
    interim: Arc<Interim>,
    out: Vec<u8>,
    written: usize,
}

impl<T> InterimIo<T> {
    pub fn new(inner: T, interim: Arc<Interim>) -> Self {
        InterimIo {
            inner,
            interim,
            out: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes every queued interim response before anything else.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                let mut pending = self
                    .interim
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                std::mem::swap(&mut self.out, &mut *pending);
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn queued_hints_go_out_on_flush_and_before_the_next_write() {
        let interim = Arc::new(Interim::default());
        let (mut client, server) = tokio::io::duplex(4096);
        let mut io = InterimIo::new(server, interim.clone());
        interim.early_hints(&[http::HeaderValue::from_static(
            "</a.css>; rel=preload; as=style",
        )]);
        io.flush().await.unwrap();
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(io);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
        );
    }
}
