//! Read-ahead of upstream response bodies, as nginx's `proxy_buffering` does in memory: a task
//! reads the upstream body into a bounded per-response queue (`upstream.buffer_size`, charged
//! to the client connection's `upstream.buffer_per_client` budget) while the client's stream
//! takes from it at its own pace.
//!
//! A response that fits is read to its end at once, so its upstream connection goes back to the
//! pool and its slots are released whatever the client's flow-control window (a client with
//! INITIAL_WINDOW_SIZE 0 costs the buffered bytes, not a pool slot). A larger one keeps at most
//! `buffer_size` bytes ahead of the client and then waits for it: backpressure as before, and a
//! 1 GB download still costs a bounded amount of memory (SPEC §3).
//!
//! The bytes of the chunk last handed to the client's stream stay charged until the stream asks
//! for the next one: until then that chunk is still in the send loop, waiting for the client's
//! window, so it is memory this connection holds.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::BoxError;
use super::share::ClientShare;

/// The bytes one queued chunk holds: room in its response's read-ahead and in its connection's
/// budget. Released when dropped.
struct Charge {
    _room: Option<OwnedSemaphorePermit>,
    _budget: Option<OwnedSemaphorePermit>,
}

type Item = Result<(Frame<Bytes>, Charge), BoxError>;

/// An upstream response body read ahead of the client (see the module docs).
pub struct Buffered {
    /// `None` once the end was seen (or for a body that was empty from the start).
    rx: Option<mpsc::UnboundedReceiver<Item>>,
    /// The charge of the chunk last returned, until the next poll.
    in_hand: Option<Charge>,
    /// What is left, when the upstream said (Content-Length).
    remaining: Option<u64>,
}

impl Buffered {
    /// Starts reading `body` ahead. `slot` (the connection's share of the pool) is held until
    /// the upstream body ends or the client's stream drops this body.
    pub fn read_ahead<B>(body: B, slot: OwnedSemaphorePermit, share: &ClientShare) -> Buffered
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send,
    {
        let remaining = body.size_hint().exact();
        if body.is_end_stream() {
            // Nothing to read: no task, and the upstream connection is already free.
            return Buffered {
                rx: None,
                in_hand: None,
                remaining: Some(0),
            };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let cap = share.buffer_size().max(1);
        let room = Arc::new(Semaphore::new(cap as usize));
        let limits = Limits {
            room,
            cap,
            budget: share.budget(),
            budget_total: share.budget_total().max(1),
        };
        tokio::spawn(read(Box::pin(body), tx, limits, slot));
        Buffered {
            rx: Some(rx),
            in_hand: None,
            remaining,
        }
    }
}

/// The read-ahead task. The channel is unbounded in items but not in bytes: every data chunk is
/// charged (up to `cap`) before it is queued, and the charge is released only when the client's
/// stream has taken the chunk and asked for the next one.
async fn read<B>(
    mut body: Pin<Box<B>>,
    tx: mpsc::UnboundedSender<Item>,
    limits: Limits,
    _slot: OwnedSemaphorePermit,
) where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    loop {
        // The client's stream gone (reset, connection closed): stop reading at once; dropping
        // the body closes the upstream connection (its response is unfinished).
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = tx.closed() => return,
        };
        let frame = match frame {
            // The end: the sender and the body are dropped, which ends the client's body and
            // returns the upstream connection to the pool; `slot` is released with them.
            None => return,
            Some(Err(err)) => {
                // Delivered only once the stream has taken every chunk before it and come back
                // for more (all room returned): the stream then goes idle once, so the
                // connection gets a turn to write what it was given. Delivered at once, it
                // reached the send loop in the same turn as the last chunk, and the reset that
                // follows made h2 drop the still-queued HEADERS (h2 0.4 `send_reset` clears the
                // stream's queue): the client saw a bare RST_STREAM.
                let drained = tokio::select! {
                    all = limits.room.acquire_many(limits.cap) => all.ok(),
                    _ = tx.closed() => return,
                };
                drop(drained);
                let _ = tx.send(Err(err.into()));
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let len = frame.data_ref().map_or(0, Bytes::len);
        if frame.is_data() && len == 0 {
            continue;
        }
        let charge = tokio::select! {
            charge = limits.take(len) => charge,
            _ = tx.closed() => return,
        };
        let Some(charge) = charge else {
            return;
        };
        if tx.send(Ok((frame, charge))).is_err() {
            return;
        }
    }
}

/// What one response's read-ahead may take.
struct Limits {
    /// `upstream.buffer_size` permits, this response's own.
    room: Arc<Semaphore>,
    cap: u32,
    /// The connection's `upstream.buffer_per_client` permits.
    budget: Arc<Semaphore>,
    budget_total: u32,
}

impl Limits {
    /// Charges a chunk of `len` bytes, waiting for room. A chunk larger than a whole limit is
    /// charged as that limit (it then passes alone; it could never be charged in full). Chunks
    /// are at most hyper's read buffer (`MAX_READ_BUFFER`), so with the defaults the charge is
    /// the real size.
    async fn take(&self, len: usize) -> Option<Charge> {
        if len == 0 {
            return Some(Charge {
                _room: None,
                _budget: None,
            });
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        // Room in this response first: a response that is its own bottleneck does not hold any
        // of the connection's budget while it waits.
        let room = self
            .room
            .clone()
            .acquire_many_owned(len.min(self.cap))
            .await
            .ok()?;
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(len.min(self.budget_total))
            .await
            .ok()?;
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
        // Asked for more: the previous chunk has left the send loop.
        this.in_hand = None;
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Ok((frame, charge)))) => {
                if let (Some(left), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    *left = left.saturating_sub(data.len() as u64);
                }
                this.in_hand = Some(charge);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.rx = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // The task drops its sender after the last frame: closed and drained is the end.
        self.rx
            .as_ref()
            .is_none_or(|rx| rx.is_closed() && rx.is_empty())
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
    use http_body_util::StreamBody;

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

    #[tokio::test]
    async fn a_small_body_is_read_whole_and_frees_its_slot_while_nobody_reads() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(64 * 1024, 1024 * 1024);
        let (small, _) = body(4, 1000);
        let buffered = Buffered::read_ahead(small, slot(&pool).await, &share);
        // Nobody polls `buffered`; the slot still comes back once the body is read.
        let freed = tokio::time::timeout(std::time::Duration::from_secs(10), pool.acquire()).await;
        assert!(freed.is_ok(), "the slot was released");
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 4000);
    }

    #[tokio::test]
    async fn a_large_body_is_read_only_buffer_size_ahead_and_holds_its_slot() {
        let pool = Arc::new(Semaphore::new(1));
        let share = share(4096, 1024 * 1024);
        let (large, taken) = body(100, 1024);
        let buffered = Buffered::read_ahead(large, slot(&pool).await, &share);
        // Four 1 KiB chunks fill the 4 KiB read-ahead; the budget shows them charged.
        let budget = share.budget();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while budget.available_permits() > 1024 * 1024 - 4096 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the read-ahead filled");
        assert_eq!(budget.available_permits(), 1024 * 1024 - 4096);
        // The fifth chunk was taken from the body and waits for room; no more.
        assert!(taken.load(std::sync::atomic::Ordering::SeqCst) <= 5);
        assert!(pool.try_acquire().is_err(), "the slot is held");
        let collected = buffered.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 100 * 1024);
        let freed = tokio::time::timeout(std::time::Duration::from_secs(10), pool.acquire()).await;
        assert!(freed.is_ok());
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
        let _a = Buffered::read_ahead(a, slot(&pool).await, &share);
        let _b = Buffered::read_ahead(b, slot(&pool).await, &share);
        let budget = share.budget();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while budget.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the budget filled");
        // Two responses of 4 KiB read-ahead each, but 6 KiB for the connection.
        assert_eq!(budget.available_permits(), 0);
    }
}
