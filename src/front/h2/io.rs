//! The IO under an HTTP/2 connection, with one job: never let h2 see a client frame while one
//! of our pushed streams waits in h2's `pending_open` queue.
//!
//! Why: h2 0.4.20 puts every server-initiated stream into `pending_open` when its response
//! HEADERS are queued, and takes it out only when the connection next flushes. A client
//! RST_STREAM for a stream still in that queue is answered with GOAWAY PROTOCOL_ERROR
//! (h2 src/proto/streams/streams.rs, `recv_reset`), killing every stream on the connection. A
//! client that refuses pushes sends exactly that RST, and `Connection::poll` reads all pending
//! frames before it flushes, so a slot alone does not help (measured: GOAWAY on the first page
//! load in about one run out of six, with one push and a free slot).
//!
//! How: reads are handed to h2 one frame at a time (so h2 never holds an undecoded frame beyond
//! the one it is reading), and while a pushed stream's HEADERS are queued but not yet written,
//! reads wait. Written bytes are parsed as frames; the HEADERS (or our RST_STREAM) for the held
//! stream releases the reads. The connection task queues those HEADERS itself (see
//! `front::h2`), so nothing runs between the hold and h2's next write.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// RFC 9113 §3.4: the client connection preface precedes the client's first frame.
const CLIENT_PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
/// One read from the socket, on the stack; only bytes past a frame boundary are kept.
const READ_CHUNK: usize = 16 * 1024;

/// Which pushed streams hold the connection's reads.
#[derive(Default)]
pub struct ReadGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    held: Vec<u32>,
    since: Option<Instant>,
    reader: Option<Waker>,
}

impl ReadGate {
    /// Holds reads until `stream_id`'s HEADERS or RST_STREAM is written.
    pub fn hold(&self, stream_id: u32) {
        let mut s = self.lock();
        if s.held.is_empty() {
            s.since = Some(Instant::now());
        }
        s.held.push(stream_id);
    }

    /// When the current hold began, if reads are held.
    pub fn held_since(&self) -> Option<Instant> {
        self.lock().since
    }

    /// Releases every hold: the fallback if an expected frame never gets written.
    pub fn release_all(&self) {
        let mut s = self.lock();
        s.held.clear();
        s.since = None;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    fn release(&self, stream_id: u32) {
        let mut s = self.lock();
        let before = s.held.len();
        s.held.retain(|id| *id != stream_id);
        if s.held.is_empty() && before > 0 {
            s.since = None;
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        }
    }

    /// `true` (with the waker stored) while reads must wait.
    fn must_wait(&self, cx: &Context<'_>) -> bool {
        let mut s = self.lock();
        if s.held.is_empty() {
            return false;
        }
        s.reader = Some(cx.waker().clone());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a byte stream of HTTP/2 frames is: inside a preface, a frame header, or a payload.
struct FrameCursor {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
}

impl FrameCursor {
    fn new(preface: usize) -> Self {
        FrameCursor {
            preface_left: preface,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Bytes until the end of the current preface, frame header or payload.
    fn until_boundary(&self) -> usize {
        if self.preface_left > 0 {
            self.preface_left
        } else if self.payload_left > 0 {
            self.payload_left
        } else {
            FRAME_HEADER_LEN - self.header_len
        }
    }

    /// Consumes `bytes`, calling `on_header(type, stream_id)` for each completed frame header.
    fn advance(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(u8, u32)) {
        while !bytes.is_empty() {
            let n = self.until_boundary().min(bytes.len());
            if self.preface_left > 0 {
                self.preface_left -= n;
            } else if self.payload_left > 0 {
                self.payload_left -= n;
            } else {
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                if self.header_len == FRAME_HEADER_LEN {
                    let h = &self.header;
                    self.payload_left =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    on_header(h[3], stream_id);
                    self.header_len = 0;
                }
            }
            bytes = &bytes[n..];
        }
    }
}

/// The connection's IO with frame-at-a-time reads and the [`ReadGate`].
pub struct GatedIo<T> {
    inner: T,
    gate: Arc<ReadGate>,
    /// Bytes read from `inner` but not yet handed to h2 (those past a frame boundary). Empty,
    /// and unallocated, on an idle connection.
    pending: Vec<u8>,
    start: usize,
    reads: FrameCursor,
    writes: FrameCursor,
}

impl<T> GatedIo<T> {
    pub fn new(inner: T, gate: Arc<ReadGate>) -> Self {
        GatedIo {
            inner,
            gate,
            pending: Vec::new(),
            start: 0,
            reads: FrameCursor::new(CLIENT_PREFACE_LEN),
            writes: FrameCursor::new(0),
        }
    }

    fn written(&mut self, bytes: &[u8]) {
        let gate = &self.gate;
        self.writes.advance(bytes, |kind, stream_id| {
            if kind == HEADERS || kind == RST_STREAM {
                gate.release(stream_id);
            }
        });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.gate.must_wait(cx) {
            return Poll::Pending;
        }
        if this.start < this.pending.len() {
            let n = this
                .reads
                .until_boundary()
                .min(buf.remaining())
                .min(this.pending.len() - this.start);
            let bytes = &this.pending[this.start..this.start + n];
            buf.put_slice(bytes);
            this.reads.advance(bytes, |_, _| {});
            this.start += n;
            if this.start == this.pending.len() {
                // Free it: idle connections keep no read buffer.
                this.pending = Vec::new();
                this.start = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let filled = chunk.filled();
        // Never past the end of the current frame: h2 must ask again for the next one.
        let n = this
            .reads
            .until_boundary()
            .min(buf.remaining())
            .min(filled.len());
        buf.put_slice(&filled[..n]);
        this.reads.advance(&filled[..n], |_, _| {});
        if n < filled.len() {
            this.pending = filled[n..].to_vec();
            this.start = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written(&buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                self.written(&b[..take]);
                n -= take;
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream_id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn cursor_finds_frame_headers_across_arbitrary_splits() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, 0, &[0; 6]));
        wire.extend(frame(HEADERS, 1, b"abc"));
        wire.extend(frame(RST_STREAM, 2, &[0, 0, 0, 8]));
        for split in 1..wire.len() {
            let mut c = FrameCursor::new(CLIENT_PREFACE_LEN);
            let mut seen = Vec::new();
            for chunk in wire.chunks(split) {
                c.advance(chunk, |k, id| seen.push((k, id)));
            }
            assert_eq!(
                seen,
                vec![(0x4, 0), (HEADERS, 1), (RST_STREAM, 2)],
                "split {split}"
            );
        }
    }

    #[test]
    fn reads_stop_at_frame_boundaries_and_wait_while_held() {
        let gate = Arc::new(ReadGate::default());
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(HEADERS, 1, b"abc"));
        wire.extend(frame(RST_STREAM, 2, &[0, 0, 0, 8]));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut client, server) = tokio::io::duplex(4096);
            client.write_all(&wire).await.unwrap();
            let mut io = GatedIo::new(server, gate.clone());
            let mut buf = [0u8; 1024];
            assert_eq!(io.read(&mut buf).await.unwrap(), 24, "the preface alone");
            assert_eq!(io.read(&mut buf).await.unwrap(), 9, "a frame header alone");
            assert_eq!(io.read(&mut buf).await.unwrap(), 3, "its payload alone");
            gate.hold(2);
            let held =
                tokio::time::timeout(std::time::Duration::from_millis(20), io.read(&mut buf)).await;
            assert!(
                held.is_err(),
                "reads wait while stream 2's HEADERS are unwritten"
            );
            io.write_all(&frame(HEADERS, 2, b"h")).await.unwrap();
            assert_eq!(gate.held_since(), None);
            assert_eq!(io.read(&mut buf).await.unwrap(), 9);
        });
    }
}
