//! One HTTP/2 connection on the h2 crate: settings and flood defences, the accept loop with idle
//! timeout, closing deadline and graceful shutdown, and the one place pushed streams' response
//! HEADERS are queued (with the connection's reads held, see `io`). Each client stream runs
//! in `stream`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

mod body;
pub mod digest;
mod io;
pub mod push;
mod stream;
mod tunnel;

use self::io::{GatedIo, ReadGate};
use self::push::{PushState, PushedHead};
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
    let gate = Arc::new(ReadGate::default());
    let io = GatedIo::new(io, gate.clone());
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
    let (heads, mut pushed_heads) = mpsc::unbounded_channel::<PushedHead>();
    let push = Arc::new(PushState::new(
        app.config.push.enabled,
        app.config.push.lru_capacity,
        app.config.push.max_concurrent_pushes,
        heads,
    ));
    let active = Arc::new(Active::default());
    let idle = server.idle_timeout;
    let mut closing = false;
    // Once closing, the connection ends by this time even if the client never acknowledges the
    // GOAWAY's PING or its streams never finish.
    let mut close_by: Option<tokio::time::Instant> = None;
    loop {
        let idle_now = active.count() == 0;
        let held_until = gate
            .held_since()
            .map(|t| tokio::time::Instant::from_std(t) + GATE_FALLBACK);
        tokio::select! {
            Some(head) = pushed_heads.recv() => send_pushed_head(&gate, head),
            _ = sleep_until_opt(held_until), if held_until.is_some() => {
                tracing::warn!(peer = %client.peer, "pushed HEADERS not written in time; releasing reads");
                gate.release_all();
            }
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    // The client's SETTINGS arrive before its first HEADERS, so this is current.
                    push.set_peer_max_streams(conn.max_concurrent_send_streams());
                    let stream = Stream::new(app.clone(), push.clone(), client.clone());
                    let guard = active.enter();
                    tokio::spawn(async move {
                        stream.run(req, respond).await;
                        drop(guard);
                    });
                }
                Some(Err(err)) => {
                    debug!(peer = %client.peer, error = %err, "h2 connection error");
                    break;
                }
                None => break,
            },
            _ = tokio::time::sleep(idle), if idle_now && !closing => {
                debug!(peer = %client.peer, "idle timeout");
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + handshake_timeout(idle));
            }
            _ = sleep_until_opt(close_by), if close_by.is_some() => {
                debug!(peer = %client.peer, "closing deadline reached; dropping the connection");
                break;
            }
            _ = active.changed.notified(), if !closing => {}
            _ = shutdown.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + server.shutdown_timeout);
            }
        }
    }
}

/// How long reads may wait for a pushed stream's HEADERS to be written before the gate gives up
/// (only reached if h2 never writes them, e.g. the socket stopped draining).
const GATE_FALLBACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Queues a pushed stream's response HEADERS. Runs on the connection task, with the connection's
/// reads held until those HEADERS are on the wire: a client RST_STREAM that h2 processed while
/// the stream sits in `pending_open` would cost the whole connection (see `io`).
fn send_pushed_head(gate: &ReadGate, head: PushedHead) {
    let PushedHead {
        mut pushed,
        response,
        end_of_stream,
        reply,
    } = head;
    let id = u32::from(pushed.stream_id());
    gate.hold(id);
    let sent = pushed.send_response(response, end_of_stream);
    if sent.is_err() {
        // Nothing was queued (the client already reset the promise): nothing to wait for.
        gate.release_all();
    }
    let _ = reply.send(sent);
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Open client streams on a connection; the idle timer runs only while there are none.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    changed: Notify,
}

impl Active {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
    fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }
}

struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one keeps a permit if the loop is not waiting right now.
            self.0.changed.notify_one();
        }
    }
}
