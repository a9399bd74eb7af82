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
