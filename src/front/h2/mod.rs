//! One HTTP/2 connection on the (patched, vendor/h2) h2 crate: settings and flood defences,
//! the accept loop with idle timeout, graceful shutdown and its closing deadline. Each client
//! stream runs in `stream`, each pushed response in `push`: both are futures in one set that
//! the connection's own task polls beside `conn.accept()` (which drives h2's I/O), not tasks
//! of their own, so a connection's work stays on one thread and h2's connection-wide lock is
//! not contended. The set is the connection's active work, for the idle timer and draining.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

mod body;
pub mod digest;
pub mod push;
mod stream;
mod tunnel;

use self::push::PushState;
use self::stream::Stream;
use super::handshake_timeout;
use crate::app::App;
use crate::metrics::Protocol;
use crate::upstream::ClientContext;

/// SPEC §8: bounded header lists. Also the HPACK-bomb and CONTINUATION-flood bound: h2 refuses a
/// header block that decodes to more than this (CVE-2024-27316 family).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Per-stream receive window: what one request body may have in flight before the upstream
/// takes it.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Rapid reset (CVE-2023-44487): streams reset by the client before we accepted them.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams we had to reset because the client misbehaved, before GOAWAY.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// Serves one HTTP/2 connection until the client leaves, it idles out, or shutdown completes.
pub async fn serve<IO>(
    app: Arc<App>,
    io: IO,
    client: ClientContext,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Shared by the connection's streams (see `Stream::client`).
    let client = Arc::new(client);
    let server = &app.config.server;
    let _gauge = app.metrics.connection(Protocol::Http2);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(server.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .header_table_size(4096)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // `server.stream_send_buffer`: with the read-ahead budget, what bounds one connection's
        // memory when its client stops reading (README, "Memory per connection").
        .max_send_buffer_size(server.stream_send_buffer)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        // RFC 8441 §3: WebSocket over HTTP/2 (see `tunnel`).
        .enable_connect_protocol();
    let handshake = tokio::time::timeout(
        handshake_timeout(server.idle_timeout),
        builder.handshake(io),
    );
    let mut conn = match handshake.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            debug!(peer = %client.peer, error = %err, "h2 handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %client.peer, "h2 handshake timed out");
            return;
        }
    };
    // Every client stream and every pushed response of this connection, polled by this task
    // beside the connection itself (see `poll_work`): no task per stream, so a stream's wakeups
    // and its use of h2's connection state stay on this connection's thread. The idle timer runs
    // only while the set is empty, and a draining connection waits for it.
    let mut work: FuturesUnordered<Work> = FuturesUnordered::new();
    let push = Arc::new(PushState::new(
        app.config.push.enabled,
        app.config.push.lru_capacity,
        app.config.push.max_concurrent_pushes,
    ));
    let idle = server.idle_timeout;
    let mut closing = false;
    // Once closing, streams still running at this time are reset.
    let mut close_by: Option<tokio::time::Instant> = None;
    // After the resets, the connection ends by this time even if h2 cannot write them.
    let mut abandon_at: Option<tokio::time::Instant> = None;
    // Requests h2 answered 431 itself (vendor/h2 PATCHES.md 6), counted so far. They never
    // reach `accept`, so they are counted when it next returns: at the next request, or when
    // the connection ends.
    let mut too_large = 0;
    // One idle timer for the connection's life, pushed back each time the connection goes idle:
    // a later deadline only updates the registered entry (tokio's `TimerEntry::reset` extends
    // it without touching the wheel), where a new `sleep` per turn registered and cancelled one.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut was_idle = true;
    loop {
        let idle_now = work.is_empty();
        if idle_now && !was_idle {
            idle_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + idle);
        }
        was_idle = idle_now;
        // Polled in this order on every wakeup: the streams and pushes first, then h2's I/O,
        // so what a stream queued is written in the same turn (no extra wakeup), and a stream
        // that fails after its last DATA (a reset drops what h2 still holds for the stream)
        // does so only after h2 had a turn to write it. No branch starves another: the work
        // branch does not complete while any work is left (see `poll_work`), so every wakeup
        // polls every branch.
        tokio::select! {
            biased;
            // Never ready while streams are running; ready once the last one ends, which
            // restarts the idle timer.
            () = std::future::poll_fn(|cx| poll_work(&mut work, &push, cx)), if !idle_now => {}
            // h2 (vendor/h2 PATCHES.md 5) ends the connection only once every client stream
            // and every promised stream is done, after a GOAWAY.
            next = conn.accept() => {
                count_too_large(&app, &conn, client.peer, &mut too_large);
                match next {
                    Some(Ok((req, respond))) => {
                        // The client's SETTINGS arrive before its first HEADERS, so these are
                        // current.
                        if push.is_enabled() {
                            if conn.is_push_enabled() {
                                push.set_peer_max_streams(conn.max_concurrent_send_streams());
                            } else {
                                push.disable();
                            }
                        }
                        // Past the closing deadline a stream still accepted is reset at once, as
                        // the others were (`respond` dropped: RST_STREAM CANCEL).
                        if abandon_at.is_none() {
                            let stream = Stream::new(app.clone(), push.clone(), client.clone());
                            // Made in its box: `Box::pin(stream.run(..))` built the future
                            // on the stack and copied all 1.8 KB of it (`-Zprint-type-sizes`)
                            // into the heap, though only its first state's 0.5 KB is set.
                            // Callgrind: 32,701 and 46,565 instructions per request
                            // (`/small.txt`, `/index.html`) before, 32,335 and 45,995 after.
                            let boxed = Box::write(Box::new_uninit(), stream.run(req, respond));
                            work.push(Box::into_pin(boxed));
                        }
                    }
                    Some(Err(err)) => {
                        debug!(peer = %client.peer, error = %err, "h2 connection error");
                        break;
                    }
                    None => break,
                }
            }
            () = &mut idle_timer, if idle_now && !closing => {
                debug!(peer = %client.peer, "idle timeout");
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + handshake_timeout(idle));
            }
            _ = shutdown.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + server.shutdown_timeout);
            }
            _ = sleep_until_opt(close_by), if close_by.is_some() => {
                debug!(peer = %client.peer, open = work.len(), "closing deadline reached; resetting open streams");
                // Dropping a stream's or a push's future drops its h2 handles, and h2 resets an
                // unfinished stream with RST_STREAM CANCEL (RFC 9113 §8.1: a server that
                // abandons a response resets the stream).
                work.clear();
                close_by = None;
                abandon_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = sleep_until_opt(abandon_at), if abandon_at.is_some() => {
                debug!(peer = %client.peer, "resets not written in time; dropping the connection");
                break;
            }
        }
    }
    // Whatever still runs ends with the connection, as at the closing deadline; `push` may hold
    // pushes started in the last poll (each holds the state: dropped here, not leaked).
    work.clear();
    drop(push.take_started());
    count_too_large(&app, &conn, client.peer, &mut too_large);
}

/// Counts and logs the requests h2 answered 431 since the last call.
fn count_too_large<T: AsyncRead + AsyncWrite + Unpin, B: bytes::Buf>(
    app: &App,
    conn: &h2::server::Connection<T, B>,
    peer: std::net::SocketAddr,
    counted: &mut u64,
) {
    let total = conn.num_oversized_header_lists();
    if total > *counted {
        let requests = total - *counted;
        debug!(%peer, requests, "request header list over our limit; h2 answered 431");
        super::heads_too_large(&app.metrics, Protocol::Http2, requests);
        *counted = total;
    }
}

/// How long a connection whose streams were reset at the closing deadline may take to write
/// those RST_STREAMs and its final GOAWAY before it is dropped (a client that stopped reading).
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A client stream or a pushed response, run by its connection's task.
pub(super) type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls the connection's streams and pushes, taking in the pushes they started meanwhile
/// (`PushState::start`). Pending while any is left, so the select polls every branch on every
/// wakeup however busy the streams are: h2's own I/O (`conn.accept()`) and the timers are
/// never starved. `FuturesUnordered` polls only the futures that were woken and yields by
/// itself (waking this task) after a round through the set, or as soon as two of them yield
/// (tokio's cooperative budget spent). Ready when the set is empty.
fn poll_work(
    work: &mut FuturesUnordered<Work>,
    push: &PushState,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        let next = work.poll_next_unpin(cx);
        // New futures are polled by the next `poll_next`: go round again if there are any.
        let started = push.take_started();
        let more = !started.is_empty();
        work.extend(started);
        match next {
            // One finished; the next round takes the others that are ready.
            Poll::Ready(Some(())) => {}
            Poll::Ready(None) if !more => return Poll::Ready(()),
            Poll::Pending if !more => return Poll::Pending,
            Poll::Ready(None) | Poll::Pending => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
