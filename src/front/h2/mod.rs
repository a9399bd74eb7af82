//! One HTTP/2 connection on the (patched, vendor/h2) h2 crate: settings and flood defences,
//! the accept loop with idle timeout, graceful shutdown and its closing deadline. Each client
//! stream runs in `stream`, each pushed response in `push`; both count as the connection's
//! active work.

use std::sync::Arc;

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
use crate::listener::Tracker;
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
    // Client streams and pushed streams alike: the idle timer runs only while there are none,
    // and a draining connection waits for them.
    let active = Arc::new(Tracker::default());
    // Set at the closing deadline: every stream and push task still running drops its h2
    // handles, which makes h2 reset the stream with RST_STREAM CANCEL.
    let (cancel, cancelled_rx) = watch::channel(false);
    let push = Arc::new(PushState::new(
        app.config.push.enabled,
        app.config.push.lru_capacity,
        app.config.push.max_concurrent_pushes,
        active.clone(),
        cancelled_rx.clone(),
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
    loop {
        let idle_now = active.count() == 0;
        tokio::select! {
            // h2 (vendor/h2 PATCHES.md 5) ends the connection only once every client stream
            // and every promised stream is done, after a GOAWAY.
            next = conn.accept() => {
                count_too_large(&app, &conn, client.peer, &mut too_large);
                match next {
                    Some(Ok((req, respond))) => {
                        // The client's SETTINGS arrive before its first HEADERS, so this is current.
                        push.set_peer_max_streams(conn.max_concurrent_send_streams());
                        let stream = Stream::new(app.clone(), push.clone(), client.clone());
                        let guard = active.enter();
                        let mut cancel = cancelled_rx.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = stream.run(req, respond) => {}
                                () = cancelled(&mut cancel) => {}
                            }
                            drop(guard);
                        });
                    }
                    Some(Err(err)) => {
                        debug!(peer = %client.peer, error = %err, "h2 connection error");
                        break;
                    }
                    None => break,
                }
            }
            _ = tokio::time::sleep(idle), if idle_now && !closing => {
                debug!(peer = %client.peer, "idle timeout");
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + handshake_timeout(idle));
            }
            // Restarts the idle timer when the last stream ends.
            _ = active.drained(), if !idle_now && !closing => {}
            _ = shutdown.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + server.shutdown_timeout);
            }
            _ = sleep_until_opt(close_by), if close_by.is_some() => {
                debug!(peer = %client.peer, open = active.count(), "closing deadline reached; resetting open streams");
                let _ = cancel.send(true);
                close_by = None;
                abandon_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = sleep_until_opt(abandon_at), if abandon_at.is_some() => {
                debug!(peer = %client.peer, "resets not written in time; dropping the connection");
                break;
            }
        }
    }
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

/// Resolves when the connection's closing deadline resets its streams (or the connection is
/// gone). A task that stops here drops its h2 handles; h2 then resets an unfinished stream with
/// RST_STREAM CANCEL (RFC 9113 §8.1: a server that abandons a response resets the stream).
pub(super) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    let _ = cancel.wait_for(|c| *c).await;
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
