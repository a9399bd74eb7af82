//! What one client connection may hold of the upstream (issue 11, "the pool shared fairly"): at
//! most `upstream.max_connections_per_client` of the pool's `max_connections` slots, pushes
//! included, and at most `upstream.buffer_per_client` bytes of responses read ahead of the client.
//!
//! Without a share, a few connections that open many streams and never read (INITIAL_WINDOW_SIZE
//! 0) held every slot: 4 connections × 128 streams took all 512, and a well-behaved client got
//! 504s. With a share, such a connection's extra streams wait for its own slots (then 504 after
//! `response_timeout`); nobody else's requests wait behind them. Small responses do not hold a
//! slot at all once read ahead whole (see `buffer`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::buffer::Buffered;
use super::{Forward, InformationalQueue, RequestBody, Upstream, UpstreamBody};
use crate::config::UpstreamConfig;
use crate::error::ProxyError;

/// One client connection's share of the upstream. Cheap to clone; every stream and push of the
/// connection holds a clone.
#[derive(Clone)]
pub struct ClientShare {
    inner: Arc<Inner>,
}

struct Inner {
    /// `upstream.max_connections_per_client` permits; one held per upstream request until its
    /// body is read to the end (or dropped).
    slots: Arc<Semaphore>,
    per_client: usize,
    /// `upstream.buffer_per_client` permits, one per byte read ahead and not yet taken by the
    /// client's stream.
    budget: Arc<Semaphore>,
    budget_total: u32,
    /// `upstream.buffer_size`: how far one response is read ahead.
    buffer_size: u32,
}

/// Semaphores count permits in `u32` for `acquire_many`; the config caps sizes below that.
fn permits(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ClientShare {
    pub fn new(config: &UpstreamConfig) -> Self {
        let budget = permits(config.buffer_per_client);
        ClientShare {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_connections_per_client)),
                per_client: config.max_connections_per_client,
                budget: Arc::new(Semaphore::new(budget as usize)),
                budget_total: budget,
                buffer_size: permits(config.buffer_size),
            }),
        }
    }

    /// Upstream slots this connection holds right now.
    pub fn slots_held(&self) -> usize {
        self.inner.per_client - self.inner.slots.available_permits()
    }

    pub(super) fn budget(&self) -> Arc<Semaphore> {
        self.inner.budget.clone()
    }

    pub(super) fn buffer_size(&self) -> u32 {
        self.inner.buffer_size
    }

    pub(super) fn budget_total(&self) -> u32 {
        self.inner.budget_total
    }
}

impl fmt::Debug for ClientShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientShare")
            .field("slots_held", &self.slots_held())
            .field("per_client", &self.inner.per_client)
            .finish()
    }
}

impl Upstream {
    /// [`Upstream::send`] on behalf of a client connection: first one of the connection's own
    /// slots (waiting at most `response_timeout`, then 504), then the pool's, then the response
    /// body is read ahead (see `buffer`) so a small one frees both slots at once.
    ///
    /// Each of the two waits is bounded by `response_timeout`: the connection's own share first,
    /// so a connection at its limit waits on itself without holding a pool slot meanwhile.
    pub fn send_for<'a>(
        &'a self,
        share: &'a ClientShare,
        req: Request<RequestBody>,
        forward: Forward<'a>,
        informational: Option<&'a InformationalQueue>,
    ) -> impl Future<Output = Result<Response<Buffered>, ProxyError>> + 'a {
        SendFor {
            upstream: self,
            share,
            slot: None,
            waiting: None,
            // Not polled before the slot is held.
            send: self.send(req, Some(forward), informational),
        }
    }

    /// Waits for one of the connection's slots once none was free.
    async fn client_slot_wait(
        &self,
        share: &ClientShare,
    ) -> Result<OwnedSemaphorePermit, ProxyError> {
        self.metrics.upstream_client_limited();
        let wait: Duration = self.response_timeout;
        match tokio::time::timeout(wait, share.inner.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(ProxyError::Internal("client share closed")),
            Err(_) => Err(ProxyError::ClientShareTimeout(wait)),
        }
    }
}

/// A slot wait's future, boxed: rare, and kept out of every request's future.
type SlotWait<'a> =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, ProxyError>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// [`Upstream::send_for`]'s future. Written out, not an `async` block: a block keeps its
    /// arguments (the request, `forward`) beside the `send` future they are moved into, and
    /// `send` would be built and copied into it when first polled; here `send` is built in
    /// place (its arguments once), and the stream's future that holds this is 0.5 KB smaller,
    /// copied once less per level (callgrind, `/small.txt`: see BENCHMARKS.md).
    struct SendFor<'a, F> {
        upstream: &'a Upstream,
        share: &'a ClientShare,
        // Held from before `send` is first polled until the body is read ahead.
        slot: Option<OwnedSemaphorePermit>,
        waiting: Option<SlotWait<'a>>,
        #[pin]
        send: F,
    }
}

impl<F> Future for SendFor<'_, F>
where
    F: Future<Output = Result<Response<UpstreamBody>, ProxyError>>,
{
    type Output = Result<Response<Buffered>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.slot.is_none() {
            if this.waiting.is_none() {
                // A free slot is taken without arming a timer (the common case).
                match this.share.inner.slots.clone().try_acquire_owned() {
                    Ok(slot) => *this.slot = Some(slot),
                    Err(_) => {
                        *this.waiting = Some(Box::pin(this.upstream.client_slot_wait(this.share)));
                    }
                }
            }
            if let Some(waiting) = this.waiting.as_mut() {
                let slot = std::task::ready!(waiting.as_mut().poll(cx));
                *this.waiting = None;
                *this.slot = Some(slot?);
            }
        }
        let response = std::task::ready!(this.send.poll(cx))?;
        let Some(slot) = this.slot.take() else {
            return Poll::Ready(Err(ProxyError::Internal("send_for polled after its end")));
        };
        let (parts, body) = response.into_parts();
        let body = Buffered::read_ahead(body, slot, this.share, cx);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
