//! Read-ahead of upstream response bodies, as nginx's `proxy_buffering` does in memory: the
//! upstream body is read into a bounded per-response queue (`upstream.buffer_size`, charged to
//! the client connection's `upstream.buffer_per_client` budget) while the client's stream takes
//! from it at its own pace.
//!
//! No task of its own: whoever sends the body drives the reading. The HTTP/2 send loop
//! (`front::h2::body`) calls [`Buffered::poll_read_ahead`] while it waits for the client's
//! window, so the stream's own future (in its connection's task) keeps reading; hyper's
//! HTTP/1.1 server polls the body for as long as its write buffer takes more, and every
//! [`Body::poll_frame`] reads ahead first.
//!
//! A response that fits is read to its end at once, so its upstream connection goes back to the
//! pool and its slots are released whatever the client's flow-control window (a client
//! with INITIAL_WINDOW_SIZE 0 costs the buffered bytes, not a pool slot). One that came whole with
//! its head is kept as its one chunk, with no reading side built at all. A larger one keeps at most
//! `buffer_size` bytes ahead of the client and then waits for it: backpressure as before, and a
//! 1 GB download still costs a bounded amount of memory (SPEC §3).
//!
//! The bytes of the chunk last handed to the client's stream stay charged until the stream asks
//! for the next one: until then that chunk is still in the send loop, waiting for the client's
//! window, so it is memory this connection holds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::BoxError;
use super::share::ClientShare;

/// The bytes one queued chunk holds: room in its response's read-ahead and in its connection's
/// budget. Released when dropped.
struct Charge {
    _room: Option<OwnedSemaphorePermit>,
    _budget: Option<OwnedSemaphorePermit>,
}

type UpstreamBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;
type Charging = Pin<Box<dyn Future<Output = (Frame<Bytes>, Option<Charge>)> + Send>>;

/// An upstream response body read ahead of the client (see the module docs).
pub struct Buffered {
    /// `None` for a body that was empty from the start. Boxed: a `Buffered` travels in the
    /// response through several futures, and most of this is needed only while reading.
    ahead: Option<Box<Ahead>>,
    /// A body that was read whole when its read-ahead began: its one chunk, charged to the
    /// connection's budget by `in_hand` already (see [`Buffered::read_ahead`]).
    whole: Option<Bytes>,
    /// The charge of the chunk last returned, until the next poll (or of `whole`).
    in_hand: Option<Charge>,
    /// What is left, when the upstream said (Content-Length).
    remaining: Option<u64>,
}

/// The reading side of a [`Buffered`].
struct Ahead {
    /// The upstream body, until its end (or an error) was read.
    body: Option<UpstreamBody>,
    /// The connection's share of the pool, held until the upstream body ends or this is dropped.
    slot: Option<OwnedSemaphorePermit>,
    limits: Limits,
    /// Frames read ahead and charged, oldest first.
    queue: VecDeque<(Frame<Bytes>, Charge)>,
    /// The frame read after them, waiting for room; resolves to it with its charge.
    waiting: Option<Charging>,
    /// The upstream body failed after the queued frames; handed on once they are taken.
    error: Option<BoxError>,
    /// `error` is due: `poll_frame` found nothing else left and yielded once.
    error_due: bool,
}

impl Buffered {
    /// A body read whole, its one chunk `data`, charged to the connection's budget; `data` back
    /// when it is empty (the reading side skips those) or the budget has no room now.
    fn whole(data: Bytes, share: &ClientShare, remaining: Option<u64>) -> Result<Buffered, Bytes> {
        if data.is_empty() {
            return Err(data);
        }
        let charge = charged(data.len(), share.budget_total().max(1));
        let Ok(budget) = share.budget().try_acquire_many_owned(charge) else {
            return Err(data);
        };
        Ok(Buffered {
            ahead: None,
            whole: Some(data),
            in_hand: Some(Charge {
                _room: None,
                _budget: Some(budget),
            }),
            remaining,
        })
    }

    /// Reads `body` ahead as it is driven. `slot` (the connection's share of the pool) is held
    /// until the upstream body ends or the client's stream drops this body.
    ///
    /// The body is polled once here, with `cx` (so the calling task is the one woken). A small
    /// response usually arrives with its head: then its one chunk is all of it, and it is kept
    /// as it is, charged to the connection's budget, with the upstream connection and `slot`
    /// released at once. That common case needs none of the reading side (no queue, no
    /// per-response room, no allocation); the room it would have charged is a fresh
    /// `buffer_size`, which one chunk always fits.
    pub(super) fn read_ahead<B>(
        mut body: B,
        slot: OwnedSemaphorePermit,
        share: &ClientShare,
        cx: &mut Context<'_>,
    ) -> Buffered
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let done = Buffered {
            ahead: None,
            whole: None,
            in_hand: None,
            remaining: Some(0),
        };
        if body.is_end_stream() {
            // Nothing to read: the upstream connection is already free.
            return done;
        }
        let remaining = body.size_hint().exact();
        let polled = match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if body.is_end_stream() => match frame.into_data() {
                Ok(data) => match Self::whole(data, share, remaining) {
                    Ok(kept) => {
                        // The end: dropping the body returns its connection to the pool, and
                        // the slot goes with it.
                        drop((body, slot));
                        return kept;
                    }
                    // Read ahead the usual way, which waits for the budget.
                    Err(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                },
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            polled => polled.map(|frame| frame.map(|r| r.map_err(Into::into))),
        };
        let cap = share.buffer_size().max(1);
        let mut ahead = Ahead {
            body: Some(Box::pin(http_body_util::BodyExt::map_err(body, Into::into))),
            slot: Some(slot),
            limits: Limits {
                room: Arc::new(Semaphore::new(cap as usize)),
                cap,
                budget: share.budget(),
                budget_total: share.budget_total().max(1),
            },
            queue: VecDeque::new(),
            waiting: None,
            error: None,
            error_due: false,
        };
        // What the poll above gave is handled as `poll_read` would have; it reads on from there.
        ahead.took(polled);
        Buffered {
            ahead: Some(Box::new(ahead)),
            remaining,
            ..done
        }
    }

    /// Reads the upstream body ahead as far as there is room and data, registering `cx` for
    /// whichever it waits for. The sender calls this while it waits for its client (and
    /// `poll_frame` does first), so a small response is read whole, and frees its upstream
    /// connection, however slowly the client reads.
    pub fn poll_read_ahead(&mut self, cx: &mut Context<'_>) {
        if let Some(ahead) = self.ahead.as_mut() {
            ahead.poll_read(cx);
        }
    }

    /// Ready once the body has something to hand on (a chunk, its end or an error); until
    /// then it reads ahead, and `cx` is woken by the upstream's next bytes.
    pub fn poll_started(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(ahead) = self.ahead.as_mut() else {
            // Read whole, or empty from the start.
            return Poll::Ready(());
        };
        ahead.poll_read(cx);
        // A failed body has none left (`took`), so an error counts as its end here.
        let nothing_yet = ahead.body.is_some() && ahead.queue.is_empty() && ahead.waiting.is_none();
        if nothing_yet {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

impl Ahead {
    fn poll_read(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(charging) = &mut self.waiting {
                let Poll::Ready((frame, charge)) = charging.as_mut().poll(cx) else {
                    return;
                };
                self.waiting = None;
                match charge {
                    Some(charge) => self.queue.push_back((frame, charge)),
                    // The semaphores are never closed; were they, the body must not look
                    // complete.
                    None => {
                        self.error = Some("read-ahead budget closed".into());
                        self.body = None;
                        self.slot = None;
                        return;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else {
                return;
            };
            let polled = body.as_mut().poll_frame(cx);
            if !self.took(polled) {
                return;
            }
        }
    }

    /// Takes what a poll of the body gave: a frame is queued with its charge, or waits for room.
    /// Whether to poll the body again now.
    fn took(&mut self, polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> bool {
        let (frame, ended) = match polled {
            Poll::Pending => return false,
            // The end: the body is dropped, which returns the upstream connection to the
            // pool, and `slot` with it.
            Poll::Ready(None) => (None, true),
            // Dropping the failed body closes its connection (the response is unfinished);
            // the error follows the frames already read.
            Poll::Ready(Some(Err(err))) => {
                self.error = Some(err);
                (None, true)
            }
            // The last frame ends it too, without waiting for a poll that would only say so.
            Poll::Ready(Some(Ok(frame))) => {
                let ended = self.body.as_ref().is_none_or(|body| body.is_end_stream());
                (Some(frame), ended)
            }
        };
        if ended {
            self.body = None;
            self.slot = None;
        }
        let Some(frame) = frame else {
            return false;
        };
        let len = frame.data_ref().map_or(0, Bytes::len);
        if frame.is_data() && len == 0 {
            return true;
        }
        match self.limits.try_take(len) {
            Some(charge) => {
                self.queue.push_back((frame, charge));
                true
            }
            None => {
                let take = self.limits.clone().take(len);
                self.waiting = Some(Box::pin(async move { (frame, take.await) }));
                true
            }
        }
    }

    fn is_done(&self) -> bool {
        self.body.is_none() && self.waiting.is_none() && self.queue.is_empty()
    }
}

/// What one response's read-ahead may take.
#[derive(Clone)]
struct Limits {
    /// `upstream.buffer_size` permits, this response's own.
    room: Arc<Semaphore>,
    cap: u32,
    /// The connection's `upstream.buffer_per_client` permits.
    budget: Arc<Semaphore>,
    budget_total: u32,
}

/// What a chunk of `len` bytes is charged against a limit of `limit` (see [`Limits::amounts`]).
fn charged(len: usize, limit: u32) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).min(limit)
}

impl Limits {
    /// A chunk of `len` bytes is charged as at most a whole limit: a larger one then passes
    /// alone (it could never be charged in full). Chunks are at most hyper's read buffer
    /// (`MAX_READ_BUFFER`), so with the defaults the charge is the real size.
    fn amounts(&self, len: usize) -> (u32, u32) {
        (charged(len, self.cap), charged(len, self.budget_total))
    }

    /// [`Limits::take`] when there is room now (the common case: no allocation).
    fn try_take(&self, len: usize) -> Option<Charge> {
        if len == 0 {
            return Some(Charge {
                _room: None,
                _budget: None,
            });
        }
        let (room, budget) = self.amounts(len);
        let room = self.room.clone().try_acquire_many_owned(room).ok()?;
        let budget = self.budget.clone().try_acquire_many_owned(budget).ok()?;
        Some(Charge {
            _room: Some(room),
            _budget: Some(budget),
        })
    }

    /// Charges a chunk of `len` bytes, waiting for room.
    async fn take(self, len: usize) -> Option<Charge> {
        let (room, budget) = self.amounts(len);
        // Room in this response first: a response that is its own bottleneck does not hold any
        // of the connection's budget while it waits.
        let room = self.room.acquire_many_owned(room).await.ok()?;
        let budget = self.budget.acquire_many_owned(budget).await.ok()?;
        Some(Charge {
            _room: Some(room),
            _budget: Some(budget),
        })
    }
}

impl Body for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(data) = this.whole.take() {
            // Its charge is in hand already, until the next poll.
            this.remaining = Some(0);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        // Asked for more: the previous chunk has left the send loop.
        this.in_hand = None;
        let Some(ahead) = this.ahead.as_mut() else {
            return Poll::Ready(None);
        };
        ahead.poll_read(cx);
        if let Some((frame, charge)) = ahead.queue.pop_front() {
            if let (Some(left), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                *left = left.saturating_sub(data.len() as u64);
            }
            this.in_hand = Some(charge);
            return Poll::Ready(Some(Ok(frame)));
        }
        if !ahead.is_done() {
            return Poll::Pending;
        }
        let Some(err) = ahead.error.take() else {
            this.ahead = None;
            return Poll::Ready(None);
        };
        // Handed on only after the stream took every chunk before it and came back for more
        // once: the stream then goes idle for one turn, in which its connection writes what it
        // was given. Handed on at once, it reached the send loop in the same turn as the last
        // chunk, and the reset that follows made h2 drop the still-queued HEADERS (h2 0.4
        // `send_reset` clears the stream's queue): the client saw a bare RST_STREAM.
        if !ahead.error_due {
            ahead.error_due = true;
            ahead.error = Some(err);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.ahead = None;
        Poll::Ready(Some(Err(err)))
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none()
            && self
                .ahead
                .as_ref()
                .is_none_or(|ahead| ahead.is_done() && ahead.error.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http_body_util::{BodyExt, StreamBody};

    fn share(buffer_size: u64, buffer_per_client: u64) -> ClientShare {
        let mut config = Config::default().upstream;
        config.buffer_size = buffer_size;
        config.buffer_per_client = buffer_per_client;
        ClientShare::new(&config)
    }

    /// A body of `chunks` chunks of `len` bytes that counts how many were taken from it.
    fn body(
        chunks: usize,
        len: usize,
    ) -> (
        impl Body<Data = Bytes, Error = BoxError> + Send + 'static,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = taken.clone();
        // `iter` is lazy: `taken` counts the chunks the read-ahead actually pulled.
        let chunks = futures_util::stream::iter((0..chunks).map(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; len])))
        }));
        (StreamBody::new(chunks), taken)
    }

    async fn slot(pool: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        pool.clone().try_acquire_owned().expect("a free slot")
    }

    /// [`Buffered::read_ahead`] in this task, as `SendFor` calls it.
    async fn read_ahead<B>(body: B, slot: OwnedSemaphorePermit, share: &ClientShare) -> Buffered
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut start = Some((body, slot));
        std::future::poll_fn(|cx| {
            let (body, slot) = start.take().expect("polled once");
            Poll::Ready(Buffered::read_ahead(body, slot, share, cx))
        })
        .await
    }

    /// What the HTTP/2 send loop does while the client's window is shut: drive the read-ahead
    /// without taking a frame.
    async fn drive(buffered: &mut Buffered) {
        std::future::poll_fn(|cx| {
            buffered.poll_read_ahead(cx);
            Poll::Ready(())
        })
        .await;
    }

    type Sent = Result<Frame<Bytes>, BoxError>;

    /// A body whose frames the test sends as the upstream would, one at a time.
    fn channel_body() -> (
        tokio::sync::mpsc::UnboundedSender<Sent>,
        impl Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, StreamBody::new(frames))
    }

    /// `poll_started` as `first_bytes` (front/h2/stream.rs) uses it, once.
    async fn started(buffered: &mut Buffered) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(buffered.poll_started(cx).is_ready())).await
    }

    #[tokio::test]
    async fn a_body_has_started_once_its_first_bytes_or_its_end_are_in() {
        let pool = Arc::new(Semaphore::new(2));
        let share = share(64 * 1024, 1024 * 1024);
        // The upstream has sent the head and nothing of the body yet.
        let (tx, rx) = channel_body();
        let mut buffered = read_ahead(rx, slot(&pool).await, &share).await;
        assert!(!started(&mut buffered).await, "nothing of the body is in");
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .unwrap();
        assert!(started(&mut buffered).await, "the first chunk is in");
        drop(tx);
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(&collected[..], b"first");

        // A body that ends without a byte has started too: there is its end to send.
        let (tx, rx) = channel_body();
        let mut buffered = read_ahead(rx, slot(&pool).await, &share).await;
        assert!(!started(&mut buffered).await);
        drop(tx);
        assert!(started(&mut buffered).await, "the end is in");
        assert!(buffered.frame().await.is_none());

        // A body read whole with its head never waits.
        let (small, _) = body(1, 100);
        let mut buffered = read_ahead(small, slot(&pool).await, &share).await;
        assert!(started(&mut buffered).await);
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole_and_frees_its_slot_while_nobody_reads() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(64 * 1024, 1024 * 1024);
        let (small, _) = body(4, 1000);
        let mut buffered = read_ahead(small, slot(&pool).await, &share).await;
        // Driven once, no frame taken: the slot comes back once the body is read.
        drive(&mut buffered).await;
        assert!(pool.try_acquire().is_ok(), "the slot was released");
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 4000);
    }

    #[tokio::test]
    async fn a_large_body_is_read_only_buffer_size_ahead_and_holds_its_slot() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(4096, 1024 * 1024);
        let (large, taken) = body(100, 1024);
        let mut buffered = read_ahead(large, slot(&pool).await, &share).await;
        drive(&mut buffered).await;
        // Four 1 KiB chunks fill the 4 KiB read-ahead; the budget shows them charged.
        let budget = share.budget();
        assert_eq!(budget.available_permits(), 1024 * 1024 - 4096);
        // The fifth chunk was taken from the body and waits for room; no more.
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(pool.try_acquire().is_err(), "the slot is held");
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 100 * 1024);
        assert!(pool.try_acquire().is_ok(), "the slot was released");
        assert_eq!(
            budget.available_permits(),
            1024 * 1024,
            "every charge returned"
        );
    }

    #[tokio::test]
    async fn the_connection_budget_bounds_all_its_responses_together() {
        let pool = Arc::new(Semaphore::new(2));
        let share = share(4096, 6144);
        let (a, _) = body(100, 1024);
        let (b, _) = body(100, 1024);
        let mut a = read_ahead(a, slot(&pool).await, &share).await;
        let mut b = read_ahead(b, slot(&pool).await, &share).await;
        drive(&mut a).await;
        drive(&mut b).await;
        // Two responses of 4 KiB read-ahead each, but 6 KiB for the connection.
        assert_eq!(share.budget().available_permits(), 0);
        // What `a` does not hold any more goes to `b`, which was waiting for it.
        drop(a);
        drive(&mut b).await;
        assert_eq!(share.budget().available_permits(), 6144 - 4096);
    }

    #[tokio::test]
    async fn an_upstream_error_comes_after_the_chunks_and_one_idle_turn() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(64 * 1024, 1024 * 1024);
        let chunks = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"first"))),
            Err("upstream cut".into()),
        ]);
        let mut buffered = read_ahead(StreamBody::new(chunks), slot(&pool).await, &share).await;
        let polls = std::future::poll_fn(|cx| {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(match Pin::new(&mut buffered).poll_frame(cx) {
                    Poll::Ready(Some(Ok(_))) => "data",
                    Poll::Ready(Some(Err(_))) => "error",
                    Poll::Ready(None) => "end",
                    Poll::Pending => "pending",
                });
            }
            Poll::Ready(seen)
        })
        .await;
        // The stream goes idle once after the last chunk, so its connection writes that chunk
        // (and the HEADERS before it) before the reset the error leads to.
        assert_eq!(polls, ["data", "pending", "error"]);
        assert!(
            pool.try_acquire().is_ok(),
            "the failed body's slot was released"
        );
    }

    #[tokio::test]
    async fn a_body_that_came_whole_is_kept_charged_to_the_budget_and_frees_its_slot_at_once() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(64 * 1024, 1024 * 1024);
        let whole = http_body_util::Full::new(Bytes::from(vec![7u8; 1000]));
        let mut buffered = read_ahead(whole, slot(&pool).await, &share).await;
        // Not driven at all: the slot is already back.
        assert!(pool.try_acquire().is_ok(), "the slot was released");
        assert!(buffered.ahead.is_none(), "no reading side");
        assert_eq!(buffered.size_hint().exact(), Some(1000));
        assert!(!buffered.is_end_stream());
        let budget = share.budget();
        assert_eq!(budget.available_permits(), 1024 * 1024 - 1000);
        let frame = buffered.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data").len(), 1000);
        assert!(buffered.is_end_stream());
        // The chunk stays charged until the stream asks for more.
        assert_eq!(budget.available_permits(), 1024 * 1024 - 1000);
        assert!(buffered.frame().await.is_none());
        assert_eq!(
            budget.available_permits(),
            1024 * 1024,
            "the charge returned"
        );
    }

    #[tokio::test]
    async fn a_body_that_came_whole_waits_for_the_budget_when_there_is_none() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(64 * 1024, 4096);
        let held = share
            .budget()
            .try_acquire_many_owned(4096)
            .expect("the whole budget");
        let whole = http_body_util::Full::new(Bytes::from(vec![7u8; 1000]));
        let mut buffered = read_ahead(whole, slot(&pool).await, &share).await;
        // Read and ended, so the slot is free, but the chunk waits for its charge.
        assert!(pool.try_acquire().is_ok(), "the slot was released");
        assert!(buffered.ahead.is_some(), "read ahead the usual way");
        drive(&mut buffered).await;
        assert!(!buffered.is_end_stream());
        drop(held);
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 1000);
        assert_eq!(share.budget().available_permits(), 4096);
    }
}
