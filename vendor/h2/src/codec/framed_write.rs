use super::buffer_pool;
use crate::codec::UserError;
use crate::codec::UserError::*;
use crate::frame::{self, Frame, FrameSize};
use crate::hpack;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_write_buf;

use std::io::{self, Cursor, IoSlice};

// A macro to get around a method needing to borrow &mut self
macro_rules! limited_write_buf {
    ($self:expr) => {{
        let limit = $self.max_frame_size() + frame::HEADER_LEN;
        $self.buf.get_mut().limit(limit)
    }};
}

#[derive(Debug)]
pub struct FramedWrite<T, B> {
    /// Upstream `AsyncWrite`
    inner: T,
    final_flush_done: bool,

    encoder: Encoder<B>,
}

#[derive(Debug)]
struct Encoder<B> {
    /// HPACK encoder
    hpack: hpack::Encoder,

    /// Write buffer
    ///
    /// TODO: Should this be a ring buffer?
    buf: Cursor<BytesMut>,

    /// Next frame to encode
    next: Option<Next<B>>,

    /// Last data frame
    last_data_frame: Option<frame::Data<B>>,

    /// linkpush patch (PATCHES.md 20): DATA payloads taken without a copy, each with
    /// the position in `buf` it is written at (after its frame head), written together
    /// with `buf` by one vectored write. Only with vectored I/O.
    chained: VecDeque<(usize, Bytes)>,

    /// Bytes of `chained` not yet written.
    chained_bytes: usize,

    /// Whether the I/O takes vectored writes (payloads are chained, not copied).
    vectored: bool,

    /// Max frame size, this is specified by the peer
    max_frame_size: FrameSize,

    /// Chain payloads bigger than this.
    chain_threshold: usize,

    /// Min buffer required to attempt to write a frame
    min_buffer_capacity: usize,
}

#[derive(Debug)]
enum Next<B> {
    Data(frame::Data<B>),
    Continuation(frame::Continuation),
}

/// Allocate this amount of write buffer when there is something to write.
///
/// The minimum MAX_FRAME_SIZE is 16kb, so always be able to send a HEADERS
/// frame that big.
///
/// The buffer is allocated when the first frame is buffered and released
/// once everything buffered has been written, so an idle connection holds
/// no write buffer (PATCHES.md 8).
const DEFAULT_BUFFER_CAPACITY: usize = 16 * 1_024;

/// Chain payloads bigger than this when vectored I/O is enabled. The remote
/// will never advertise a max frame size less than this (well, the spec says
/// the max frame size can't be less than 16kb, so not even close).
const CHAIN_THRESHOLD: usize = 256;

/// Chain payloads bigger than this when vectored I/O is **not** enabled.
/// A larger value in this scenario will reduce the number of small and
/// fragmented data being sent, and hereby improve the throughput.
const CHAIN_THRESHOLD_WITHOUT_VECTORED_IO: usize = 1024;

/// At most this many payloads are chained before the codec writes (PATCHES.md 20): one
/// vectored write then has at most `2 * MAX_CHAINED + 1` slices, under every platform's
/// `IOV_MAX`.
const MAX_CHAINED: usize = 32;

/// At most this many payload bytes are chained before the codec writes (PATCHES.md 20): a
/// bound on what one write hands the I/O, as the copying codec's 16 KiB buffer was.
const MAX_CHAINED_BYTES: usize = 4 * DEFAULT_BUFFER_CAPACITY;

// TODO: Make generic
impl<T, B> FramedWrite<T, B>
where
    T: AsyncWrite + Unpin,
    B: Buf,
{
    pub fn new(inner: T) -> FramedWrite<T, B> {
        let vectored = inner.is_write_vectored();
        let chain_threshold = if vectored {
            CHAIN_THRESHOLD
        } else {
            CHAIN_THRESHOLD_WITHOUT_VECTORED_IO
        };
        FramedWrite {
            inner,
            final_flush_done: false,
            encoder: Encoder {
                hpack: hpack::Encoder::default(),
                buf: Cursor::new(BytesMut::new()),
                next: None,
                last_data_frame: None,
                chained: VecDeque::new(),
                chained_bytes: 0,
                vectored,
                max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
                chain_threshold,
                min_buffer_capacity: chain_threshold + frame::HEADER_LEN,
            },
        }
    }

    /// Returns `Ready` when `send` is able to accept a frame
    ///
    /// Calling this function may result in the current contents of the buffer
    /// to be flushed to `T`.
    pub fn poll_ready(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.encoder.has_capacity() {
            // Try flushing
            ready!(self.flush(cx))?;

            if !self.encoder.has_capacity() {
                return Poll::Pending;
            }
        }

        Poll::Ready(Ok(()))
    }

    /// Returns whether a frame can be buffered without first flushing the
    /// underlying I/O object.
    pub(crate) fn has_capacity(&self) -> bool {
        self.encoder.has_capacity()
    }

    /// Buffer a frame.
    ///
    /// `poll_ready` must be called first to ensure that a frame may be
    /// accepted.
    pub fn buffer(&mut self, item: Frame<B>) -> Result<(), UserError> {
        self.encoder.buffer(item)
    }

    /// Flush buffered data to the wire
    pub fn flush(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        let span = tracing::trace_span!("FramedWrite::flush");
        let _e = span.enter();

        loop {
            while !self.encoder.is_empty() {
                let n = match self.encoder.next {
                    Some(Next::Data(ref mut frame)) => {
                        tracing::trace!(queued_data_frame = true);
                        let mut buf = (&mut self.encoder.buf).chain(frame.payload_mut());
                        ready!(poll_write_buf(Pin::new(&mut self.inner), cx, &mut buf))?
                    }
                    _ if !self.encoder.chained.is_empty() => {
                        tracing::trace!(chained = self.encoder.chained.len());
                        ready!(self
                            .encoder
                            .poll_write_chained(Pin::new(&mut self.inner), cx))?
                    }
                    _ => {
                        tracing::trace!(queued_data_frame = false);
                        ready!(poll_write_buf(
                            Pin::new(&mut self.inner),
                            cx,
                            &mut self.encoder.buf
                        ))?
                    }
                };
                if n == 0 {
                    // No progress is possible; retrying would busy-loop.
                    tracing::trace!("write returned zero, but non-zero bytes remaining");
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
            }

            match self.encoder.unset_frame() {
                ControlFlow::Continue => (),
                ControlFlow::Break => break,
            }
        }

        // Everything buffered has been handed to `T`: give the buffer back.
        self.encoder.release_buf();

        tracing::trace!("flushing buffer");
        // Flush the upstream
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;

        Poll::Ready(Ok(()))
    }

    /// Close the codec
    pub fn shutdown(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.final_flush_done {
            ready!(self.flush(cx))?;
            self.final_flush_done = true;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[must_use]
enum ControlFlow {
    Continue,
    Break,
}

impl<B> Encoder<B>
where
    B: Buf,
{
    /// One vectored write of what is buffered and the chained payloads between it, in wire
    /// order (PATCHES.md 20). Returns how many bytes the I/O took, which are consumed.
    fn poll_write_chained<T: AsyncWrite>(
        &mut self,
        io: Pin<&mut T>,
        cx: &mut Context,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); 2 * MAX_CHAINED + 1];
        let mut n = 0;
        let data = self.buf.get_ref();
        let mut pos = self.buf.position() as usize;
        for (at, payload) in &self.chained {
            if *at > pos {
                slices[n] = IoSlice::new(&data[pos..*at]);
                n += 1;
                pos = *at;
            }
            slices[n] = IoSlice::new(payload);
            n += 1;
        }
        if pos < data.len() {
            slices[n] = IoSlice::new(&data[pos..]);
            n += 1;
        }
        let written = ready!(io.poll_write_vectored(cx, &slices[..n]))?;
        self.consume_chained(written);
        Poll::Ready(Ok(written))
    }

    /// Consumes `n` written bytes from the front of the buffer and the chained payloads.
    fn consume_chained(&mut self, mut n: usize) {
        while n > 0 {
            let pos = self.buf.position() as usize;
            let k = match self.chained.front_mut() {
                Some((at, payload)) if *at == pos => {
                    let k = n.min(payload.len());
                    payload.advance(k);
                    self.chained_bytes -= k;
                    if payload.is_empty() {
                        self.chained.pop_front();
                    }
                    n -= k;
                    continue;
                }
                Some((at, _)) => n.min(*at - pos),
                None => n.min(self.buf.get_ref().len() - pos),
            };
            if k == 0 {
                debug_assert!(false, "the I/O took more than it was given");
                return;
            }
            self.buf.set_position((pos + k) as u64);
            n -= k;
        }
    }

    fn unset_frame(&mut self) -> ControlFlow {
        debug_assert!(self.chained.is_empty(), "unset with chained payloads");
        // Clear internal buffer
        self.buf.set_position(0);
        self.buf.get_mut().clear();

        // The data frame has been written, so unset it
        match self.next.take() {
            Some(Next::Data(frame)) => {
                self.last_data_frame = Some(frame);
                debug_assert!(self.is_empty());
                ControlFlow::Break
            }
            Some(Next::Continuation(frame)) => {
                // Buffer the continuation frame, then try to write again
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = frame.encode(&mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
                ControlFlow::Continue
            }
            None => ControlFlow::Break,
        }
    }

    /// Frees the write buffer when nothing is left in it to write, so that an
    /// idle connection does not hold `DEFAULT_BUFFER_CAPACITY` bytes.
    fn release_buf(&mut self) {
        if self.next.is_none()
            && self.chained.is_empty()
            && !self.buf.has_remaining()
            && self.buf.get_ref().capacity() > 0
        {
            let buf = std::mem::take(self.buf.get_mut());
            self.buf.set_position(0);
            buffer_pool::give(&buffer_pool::WRITE, buf, DEFAULT_BUFFER_CAPACITY);
        }
    }

    fn buffer(&mut self, item: Frame<B>) -> Result<(), UserError> {
        // Ensure that we have enough capacity to accept the write.
        assert!(self.has_capacity());
        if self.buf.get_ref().capacity() == 0 {
            // Released after the last flush (or never allocated): take a whole
            // one now rather than growing it frame by frame.
            *self.buf.get_mut() = buffer_pool::take(&buffer_pool::WRITE, DEFAULT_BUFFER_CAPACITY);
        }
        let span = tracing::trace_span!("FramedWrite::buffer", frame = ?item);
        let _e = span.enter();

        tracing::debug!(frame = ?item, "send");

        match item {
            Frame::Data(mut v) => {
                // Ensure that the payload is not greater than the max frame.
                let len = v.payload().remaining();

                if len > self.max_frame_size() {
                    return Err(PayloadTooBig);
                }

                let room = self.buf.get_ref().capacity() - self.buf.get_ref().len();
                if self.vectored && len >= self.chain_threshold {
                    // linkpush patch (PATCHES.md 20): with vectored I/O the payload is
                    // not copied at all. Its head goes into the buffer and the payload is
                    // taken as `Bytes` (no copy when `B` is `Bytes`: `Prioritized` and
                    // `Take` pass `copy_to_bytes` through), to be written after that head
                    // by the same vectored write as the buffer. The emptied frame is kept
                    // as the last one, as an encoded frame is, so that what its stream
                    // holds beyond this frame is reclaimed.
                    v.head().encode(len, self.buf.get_mut());
                    let payload = v.payload_mut().copy_to_bytes(len);
                    self.chained_bytes += len;
                    self.chained.push_back((self.buf.get_ref().len(), payload));
                    self.last_data_frame = Some(v);
                } else if len >= self.chain_threshold && frame::HEADER_LEN + len > room {
                    // linkpush patch (PATCHES.md 11), without vectored I/O: only a payload
                    // larger than the buffer's free room is chained (with no copy); one that
                    // fits is copied there below, as a small one is. A chained frame had to
                    // be written before any other frame could be buffered, so every response
                    // body of a few KB cost its own write to the socket (and its own TLS
                    // record); copied, the frames of many streams go out in one write.
                    let head = v.head();

                    // Encode the frame head to the buffer
                    head.encode(len, self.buf.get_mut());

                    if self.buf.get_ref().remaining() < self.chain_threshold {
                        let extra_bytes = self.chain_threshold - self.buf.remaining();
                        self.buf.get_mut().put(v.payload_mut().take(extra_bytes));
                    }

                    // Save the data frame
                    self.next = Some(Next::Data(v));
                } else {
                    v.encode_chunk(self.buf.get_mut());

                    // The chunk has been fully encoded, so there is no need to
                    // keep it around
                    assert_eq!(v.payload().remaining(), 0, "chunk not fully encoded");

                    // Save off the last frame...
                    self.last_data_frame = Some(v);
                }
            }
            Frame::Headers(v) => {
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = v.encode(&mut self.hpack, &mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
            }
            Frame::PushPromise(v) => {
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = v.encode(&mut self.hpack, &mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
            }
            Frame::Settings(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded settings");
            }
            Frame::GoAway(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded go_away");
            }
            Frame::Ping(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded ping");
            }
            Frame::WindowUpdate(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded window_update");
            }

            Frame::Priority(_) => {
                /*
                v.encode(self.buf.get_mut());
                tracing::trace!("encoded priority; rem={:?}", self.buf.remaining());
                */
                unimplemented!();
            }
            Frame::Reset(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded reset");
            }
        }

        Ok(())
    }

    fn has_capacity(&self) -> bool {
        // A released buffer (capacity 0) is allocated by `buffer`.
        self.next.is_none()
            && self.chained.len() < MAX_CHAINED
            && self.chained_bytes < MAX_CHAINED_BYTES
            && (self.buf.get_ref().capacity() == 0
                || self.buf.get_ref().capacity() - self.buf.get_ref().len()
                    >= self.min_buffer_capacity)
    }

    fn is_empty(&self) -> bool {
        match self.next {
            Some(Next::Data(ref frame)) => !frame.payload().has_remaining(),
            _ => !self.buf.has_remaining() && self.chained.is_empty(),
        }
    }
}

impl<B> Encoder<B> {
    fn max_frame_size(&self) -> usize {
        self.max_frame_size as usize
    }
}

impl<T, B> FramedWrite<T, B> {
    /// Returns the max frame size that can be sent
    pub fn max_frame_size(&self) -> usize {
        self.encoder.max_frame_size()
    }

    /// Set the peer's max frame size.
    pub fn set_max_frame_size(&mut self, val: usize) {
        assert!(val <= frame::MAX_MAX_FRAME_SIZE as usize);
        self.encoder.max_frame_size = val as FrameSize;
    }

    /// Set the peer's header table size.
    pub fn set_header_table_size(&mut self, val: usize) {
        self.encoder.hpack.update_max_size(val);
    }

    /// Retrieve the last data frame that has been sent
    pub fn take_last_data_frame(&mut self) -> Option<frame::Data<B>> {
        self.encoder.last_data_frame.take()
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin, B> AsyncRead for FramedWrite<T, B> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

// We never project the Pin to `B`.
impl<T: Unpin, B> Unpin for FramedWrite<T, B> {}

#[cfg(feature = "unstable")]
mod unstable {
    use super::*;

    impl<T, B> FramedWrite<T, B> {
        pub fn get_ref(&self) -> &T {
            &self.inner
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn capacity<T, B>(codec: &FramedWrite<T, B>) -> usize {
        codec.encoder.buf.get_ref().capacity()
    }

    /// PATCHES.md 8: an idle connection holds no write buffer. Unpatched, the
    /// codec allocated 16 KiB when it was made and kept it for its lifetime.
    #[test]
    fn write_buffer_exists_only_while_there_is_something_to_write() {
        let mut codec: FramedWrite<Vec<u8>, bytes::Bytes> = FramedWrite::new(Vec::new());
        assert_eq!(capacity(&codec), 0, "a new codec holds no write buffer");

        let mut cx = Context::from_waker(Waker::noop());
        for (round, written) in [(1, 9), (2, 9 + 17)] {
            assert!(matches!(codec.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let frame: Frame<bytes::Bytes> = if round == 1 {
                frame::Settings::default().into()
            } else {
                frame::Ping::new([7; 8]).into()
            };
            codec.buffer(frame).expect("buffer");
            assert!(
                capacity(&codec) >= DEFAULT_BUFFER_CAPACITY,
                "round {round}: allocated whole for the first frame"
            );
            assert!(matches!(codec.flush(&mut cx), Poll::Ready(Ok(()))));
            assert_eq!(
                capacity(&codec),
                0,
                "round {round}: released once everything is written"
            );
            assert_eq!(
                codec.get_mut().len(),
                written,
                "round {round}: bytes on the wire"
            );
        }
    }

    /// An I/O that records each write: its size, the bytes, and where each slice of a
    /// vectored write points. `max` bytes at most are taken per write (0: no limit);
    /// `vectored` is what it answers to `is_write_vectored`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        wire: Vec<u8>,
        slices: Vec<*const u8>,
        max: usize,
        vectored: bool,
    }

    impl Recorder {
        fn vectored() -> Self {
            Recorder {
                vectored: true,
                ..Recorder::default()
            }
        }

        fn take(&mut self, bufs: &[&[u8]]) -> usize {
            let mut n = 0;
            for buf in bufs {
                self.slices.push(buf.as_ptr());
                let k = if self.max == 0 {
                    buf.len()
                } else {
                    buf.len().min(self.max - n)
                };
                self.wire.extend_from_slice(&buf[..k]);
                n += k;
                if k < buf.len() {
                    break;
                }
            }
            self.writes.push(n);
            n
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(self.take(&[buf])))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bufs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            Poll::Ready(Ok(self.take(&bufs)))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// PATCHES.md 11: without vectored I/O, DATA frames of a few KB, from several streams, are
    /// copied into the buffer together and written at once. Unpatched, each was chained and
    /// written on its own before the next could be buffered: three writes of 4,009 bytes.
    #[test]
    fn data_frames_that_fit_are_buffered_together_and_written_at_once() {
        let mut codec: FramedWrite<Recorder, bytes::Bytes> = FramedWrite::new(Recorder::default());
        let mut cx = Context::from_waker(Waker::noop());
        for id in [1u32, 3, 5] {
            assert!(matches!(codec.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let data = frame::Data::new(
                frame::StreamId::from(id),
                bytes::Bytes::from(vec![b'x'; 4000]),
            );
            codec.buffer(data.into()).expect("buffer");
        }
        assert!(
            codec.get_mut().writes.is_empty(),
            "nothing written before the flush"
        );
        assert!(matches!(codec.flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(codec.get_mut().writes, [3 * (frame::HEADER_LEN + 4000)]);

        // A payload larger than the free room (a whole 16 KiB frame after a PING) is still
        // chained, without a copy: its head goes out with what was buffered.
        codec.get_mut().writes.clear();
        assert!(matches!(codec.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let ping: Frame<bytes::Bytes> = frame::Ping::new([7; 8]).into();
        codec.buffer(ping).expect("buffer");
        let big = frame::Data::new(
            frame::StreamId::from(7),
            bytes::Bytes::from(vec![b'y'; 16_384]),
        );
        codec.buffer(big.into()).expect("buffer");
        assert!(!codec.has_capacity(), "chained");
        assert!(matches!(codec.flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(
            codec.get_mut().writes.iter().sum::<usize>(),
            17 + frame::HEADER_LEN + 16_384
        );
    }

    /// A mix of frames: DATA payloads of 4,000 bytes (chained with vectored I/O), a PING and
    /// a 100-byte DATA frame between them (copied either way), and a whole 16 KiB frame.
    fn mixed_frames() -> Vec<Frame<bytes::Bytes>> {
        let data = |id: u32, byte: u8, len: usize, end: bool| -> Frame<bytes::Bytes> {
            let mut frame = frame::Data::new(
                frame::StreamId::from(id),
                bytes::Bytes::from(vec![byte; len]),
            );
            frame.set_end_stream(end);
            frame.into()
        };
        vec![
            data(1, b'a', 4000, true),
            frame::Ping::new([7; 8]).into(),
            data(3, b'b', 100, false),
            data(5, b'c', 4000, false),
            data(3, b'd', 4000, true),
            data(7, b'e', 16_384, false),
        ]
    }

    /// Buffers `frames` into `codec`, flushing whenever it has no room, then flushes; returns
    /// the payload pointers of the DATA frames of at least `CHAIN_THRESHOLD` bytes.
    fn send_all(
        codec: &mut FramedWrite<Recorder, bytes::Bytes>,
        frames: Vec<Frame<bytes::Bytes>>,
    ) -> Vec<*const u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut payloads = Vec::new();
        for frame in frames {
            if let Frame::Data(ref data) = frame {
                if data.payload().len() >= CHAIN_THRESHOLD {
                    payloads.push(data.payload().as_ptr());
                }
            }
            assert!(matches!(codec.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            codec.buffer(frame).expect("buffer");
        }
        assert!(matches!(codec.flush(&mut cx), Poll::Ready(Ok(()))));
        payloads
    }

    /// PATCHES.md 20: with vectored I/O, DATA payloads are not copied: each goes to the I/O
    /// as its own slice, pointing at the payload itself, in one write with the frame heads and
    /// the small frames between them, and the bytes on the wire are those the copying codec
    /// writes. Unpatched, each payload was copied into the buffer (or chained one at a time).
    #[test]
    fn data_payloads_are_written_from_where_they_are_with_vectored_io() {
        let mut copied: FramedWrite<Recorder, bytes::Bytes> = FramedWrite::new(Recorder::default());
        send_all(&mut copied, mixed_frames());
        let expected = std::mem::take(&mut copied.get_mut().wire);
        assert_eq!(
            expected.len(),
            6 * frame::HEADER_LEN + 8 + 3 * 4000 + 100 + 16_384
        );

        let mut codec: FramedWrite<Recorder, bytes::Bytes> = FramedWrite::new(Recorder::vectored());
        let payloads = send_all(&mut codec, mixed_frames());
        assert_eq!(codec.get_mut().wire, expected, "the same bytes on the wire");
        assert_eq!(codec.get_mut().writes, [expected.len()], "in one write");
        for payload in payloads {
            assert!(
                codec.get_mut().slices.contains(&payload),
                "every payload of {CHAIN_THRESHOLD} bytes or more is written where it is"
            );
        }
        assert_eq!(
            capacity(&codec),
            0,
            "the buffer is released once all is written"
        );
        assert!(codec.encoder.is_empty());
    }

    /// PATCHES.md 20: an I/O that takes part of a write (997 bytes at a time, so that writes
    /// end inside heads, payloads and buffered frames) gets every byte once, in order.
    #[test]
    fn chained_payloads_survive_partial_writes() {
        let mut copied: FramedWrite<Recorder, bytes::Bytes> = FramedWrite::new(Recorder::default());
        send_all(&mut copied, mixed_frames());
        let expected = std::mem::take(&mut copied.get_mut().wire);

        let mut codec: FramedWrite<Recorder, bytes::Bytes> = FramedWrite::new(Recorder {
            max: 997,
            ..Recorder::vectored()
        });
        send_all(&mut codec, mixed_frames());
        assert_eq!(codec.get_mut().wire, expected);
        assert_eq!(
            codec.get_mut().writes.len(),
            expected.len().div_ceil(997),
            "every write but the last takes 997 bytes"
        );
        assert_eq!(codec.encoder.chained_bytes, 0);
        assert_eq!(capacity(&codec), 0);
    }

    /// PATCHES.md 20: chained payloads are bounded, in number (`MAX_CHAINED`) and in bytes
    /// (`MAX_CHAINED_BYTES`): past either, the codec has no room until it has written.
    #[test]
    fn chained_payloads_are_bounded() {
        let mut cx = Context::from_waker(Waker::noop());
        for (len, fits) in [(300, MAX_CHAINED), (16_384, MAX_CHAINED_BYTES / 16_384)] {
            let mut codec: FramedWrite<Recorder, bytes::Bytes> =
                FramedWrite::new(Recorder::vectored());
            for i in 0..fits {
                assert!(codec.has_capacity(), "{len}-byte payload {i} has room");
                let data = frame::Data::new(
                    frame::StreamId::from(1),
                    bytes::Bytes::from(vec![b'x'; len]),
                );
                codec.buffer(data.into()).expect("buffer");
            }
            assert!(
                !codec.has_capacity(),
                "{fits} payloads of {len} bytes fill it"
            );
            assert!(codec.get_mut().writes.is_empty());
            assert!(matches!(codec.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            assert_eq!(codec.get_mut().writes, [fits * (frame::HEADER_LEN + len)]);
            assert!(codec.has_capacity());
        }
    }
}
