//! Write-behind for client sockets: what a connection writes in a turn of its worker thread is
//! written to the socket at the end of that turn, together with every other connection's, as
//! h2o's event loop does (its HTTP/2 connections write on a zero timeout, once per loop turn:
//! `request_gathered_write` in lib/http2/connection.c).
//!
//! Why: each connection's task writes when it runs, and the next connection's task first does
//! its own work, so a client holding many connections was woken once per connection and took
//! in one connection's responses at a time. Measured against h2o with h2load on the other core
//! (docs/BENCHMARKS.md, 2026-12-05): h2load context-switched 5.0k times per 100,000 responses
//! from linkpush against 2.0k from h2o and spent 1.17x the CPU on each; gathered, 1.3k and less
//! than h2o's.
//!
//! Only in a runtime with one worker (`Flusher::gathers`); with several, each write goes
//! straight to the socket and only what it does not take waits.
//!
//! How: `poll_write` appends to the connection's pending bytes and puts the connection on its
//! thread's list; the thread's flusher task, woken then, yields (tokio runs a yielded task after
//! the tasks its next poll of the I/O driver woke), yields again while that poll brought more
//! writes (at most `GATHER_POLLS` times: no timer, and no wait at all once the worker has
//! nothing more to do) and writes every listed connection's bytes, back to back. A socket that
//! takes only part is handed to a task that waits until it takes more. Bounds and failures:
//! - at most `LIMIT` bytes wait per connection: past it, `poll_write` writes at once, and is
//!   Pending while the socket takes nothing (the backpressure a plain socket gives);
//! - the first write error is kept, and every later write, flush or shutdown returns it;
//! - `poll_shutdown` writes everything still pending before it shuts the write side;
//! - bytes pending when the connection is dropped are still written; a task waiting for a client
//!   that stopped reading gives up `ORPHAN_GRACE` after the drop.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Bytes a connection may leave waiting for the end of the turn. An HTTP/2 connection's turn
/// rarely writes more than a few frames; a large body writes through at once past this.
const LIMIT: usize = 64 * 1024;

/// At most this many polls of the I/O driver gather one flush: the flusher yields again while
/// the last one brought more writes. Under load, the responses of an origin's burst then reach
/// a client in a few large writes, not one per turn. Measured against h2o (benches/compare.sh,
/// default round, 3 runs each; docs/BENCHMARKS.md, 2026-12-05 17:30): with one poll, the asset
/// at 0.92-0.95x h2o's req/s and 1.15x its p99; with 4, 8 and 16, at 1.01-1.03x and 0.85-1.02x,
/// linkpush's CPU per request 0.90-0.93x h2o's and h2load's 0.91-0.97x. 8: as good as 16 with
/// half the wait a client can see.
const GATHER_POLLS: usize = 8;

/// How long bytes a dropped connection left behind may wait for a client that stopped reading.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// A client socket whose writes leave at the end of the worker's turn (module docs).
pub struct Gathered {
    shared: Arc<Shared>,
}

struct Shared {
    socket: TcpStream,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Accepted by `poll_write`, not yet taken by the socket.
    pending: Vec<u8>,
    /// On a flusher's list.
    queued: bool,
    /// A task waits until the socket takes more (`wait_writable`).
    waiting: bool,
    /// The `Gathered` was dropped.
    orphaned: bool,
    /// The first write error, returned by every later write.
    failed: Option<(io::ErrorKind, String)>,
}

/// What writing the pending bytes came to.
enum Wrote {
    All,
    Blocked,
    Failed,
}

impl Gathered {
    pub fn new(socket: TcpStream) -> Self {
        Gathered {
            shared: Arc::new(Shared {
                socket,
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what is pending, as far as the socket takes it now. The lock is held throughout,
    /// so the flusher, a waiting task and the connection never interleave their bytes.
    fn write_now(&self, st: &mut State) -> Wrote {
        while !st.pending.is_empty() {
            match self.socket.try_write(&st.pending) {
                Ok(0) => {
                    st.fail(&io::ErrorKind::WriteZero.into());
                    return Wrote::Failed;
                }
                Ok(n) if n == st.pending.len() => {
                    // Given back, not kept: an idle connection holds no write buffer.
                    st.pending = Vec::new();
                }
                Ok(n) => {
                    st.pending.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Wrote::Blocked,
                Err(err) => {
                    st.fail(&err);
                    return Wrote::Failed;
                }
            }
        }
        Wrote::All
    }

    /// The flusher's turn for this connection.
    fn flush_queued(self: &Arc<Self>) {
        let mut st = self.state();
        st.queued = false;
        if let Wrote::Blocked = self.write_now(&mut st)
            && !st.waiting
        {
            st.waiting = true;
            drop(st);
            tokio::spawn(wait_writable(self.clone()));
        }
    }
}

impl State {
    /// Keeps the first error and drops what is pending.
    fn fail(&mut self, err: &io::Error) {
        self.pending = Vec::new();
        self.failed
            .get_or_insert_with(|| (err.kind(), err.to_string()));
    }

    fn error(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }
}

/// Writes a connection's pending bytes as the socket takes them, until none are left; gives up
/// `ORPHAN_GRACE` after the connection was dropped if the client stopped reading.
async fn wait_writable(shared: Arc<Shared>) {
    loop {
        let ready = tokio::time::timeout(ORPHAN_GRACE, shared.socket.writable()).await;
        let mut st = shared.state();
        match ready {
            Ok(Ok(())) => match shared.write_now(&mut st) {
                Wrote::Blocked => continue,
                Wrote::All | Wrote::Failed => {}
            },
            Ok(Err(err)) => st.fail(&err),
            Err(_) if st.orphaned => st.fail(&io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading after its connection ended",
            )),
            Err(_) => continue,
        }
        st.waiting = false;
        return;
    }
}

/// One per worker thread (and per runtime: a flusher whose runtime shut down is replaced).
struct Flusher {
    list: Mutex<Vec<Arc<Shared>>>,
    wake: Notify,
    /// Writes gathered on this thread so far: the flusher keeps gathering while they grow.
    writes: AtomicU64,
    alive: AtomicBool,
    /// Whether this thread's connections gather at all: only in a runtime with one worker. With
    /// several, tokio answers the flusher's wake by waking another worker to steal work, and
    /// that cost more than gathering saved: two workers unpinned, 14 runs each, the page took
    /// 1.11x h2o's CPU per request gathered against 1.02x written at once
    /// (docs/BENCHMARKS.md, 2026-12-05).
    gathers: bool,
}

thread_local! {
    static FLUSHER: RefCell<Option<Arc<Flusher>>> = const { RefCell::new(None) };
}

/// This thread's flusher, started on first use; `None` outside a tokio runtime.
fn flusher() -> Option<Arc<Flusher>> {
    FLUSHER.with_borrow_mut(|slot| {
        if let Some(f) = slot
            && f.alive.load(Ordering::Acquire)
        {
            return Some(f.clone());
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let gathers = handle.metrics().num_workers() == 1;
        let f = Arc::new(Flusher {
            list: Mutex::new(Vec::new()),
            wake: Notify::new(),
            writes: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            gathers,
        });
        if gathers {
            handle.spawn(run_flusher(f.clone()));
        }
        *slot = Some(f.clone());
        Some(f)
    })
}

async fn run_flusher(f: Arc<Flusher>) {
    /// Marks the flusher dead when its task is dropped (its runtime shut down), so the next
    /// write on this thread starts another, and writes what its list still holds.
    struct Alive(Arc<Flusher>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.alive.store(false, Ordering::Release);
            for shared in take_list(&self.0) {
                let mut st = shared.state();
                st.queued = false;
                let _ = shared.write_now(&mut st);
            }
        }
    }
    let alive = Alive(f);
    loop {
        alive.0.wake.notified().await;
        // Woken by the first connection that wrote this turn: run again only after the other
        // tasks woken with it, so their bytes leave together; and while the poll of the I/O
        // driver that comes before the flusher's next run brought more writes (responses
        // still arriving from the upstream), once more, up to `GATHER_POLLS`.
        let mut seen = alive.0.writes.load(Ordering::Relaxed);
        for _ in 0..GATHER_POLLS {
            tokio::task::yield_now().await;
            let now = alive.0.writes.load(Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        for shared in take_list(&alive.0) {
            shared.flush_queued();
        }
    }
}

fn take_list(f: &Flusher) -> Vec<Arc<Shared>> {
    std::mem::take(&mut *f.list.lock().unwrap_or_else(|p| p.into_inner()))
}

impl AsyncRead for Gathered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let socket = &self.shared.socket;
        loop {
            ready!(socket.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            let len = dst.len();
            let mut short = 0;
            // A read that did not fill `dst` emptied the socket (epoll reports the next bytes
            // as a new event), so its readiness is cleared here, as tokio's own
            // `TcpStream::poll_read` does: the next read then waits for the reactor instead of
            // making a `recv(2)` that only says EAGAIN. That was one wasted system call per
            // client read (strace, h2load `-c 1 -m 1`: every request's read was followed by
            // one). The outer `try_io` clears only the readiness it saw before the read (tokio
            // compares the reactor's tick), so bytes reported meanwhile are not lost.
            let read = socket.try_io(Interest::READABLE, || match socket.try_read(dst) {
                Ok(n) if 0 < n && n < len => {
                    short = n;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other,
            });
            match read {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock && short > 0 => {
                    buf.advance(short);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it, so the next poll registers.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl Gathered {
    /// Takes `bufs` into the pending bytes (module docs).
    fn poll_gather(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut st = shared.state();
        loop {
            if let Some(err) = st.error() {
                return Poll::Ready(Err(err));
            }
            if st.pending.len() < LIMIT {
                break;
            }
            // Full: write now, and wait while the socket takes nothing.
            match shared.write_now(&mut st) {
                Wrote::All | Wrote::Failed => continue,
                Wrote::Blocked if st.pending.len() < LIMIT => break,
                Wrote::Blocked => {
                    drop(st);
                    ready!(shared.socket.poll_write_ready(cx))?;
                    st = shared.state();
                }
            }
        }
        let n: usize = bufs.iter().map(|buf| buf.len()).sum();
        let flusher = flusher();
        let gathering = flusher.as_ref().is_some_and(|f| f.gathers);
        // Not gathering: straight from the slices when nothing waits before them, keeping only
        // what the socket does not take now.
        let mut skip = 0;
        if !gathering && st.pending.is_empty() && !st.waiting {
            match shared.socket.try_write_vectored(bufs) {
                Ok(written) => skip = written,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => {
                    // No error was kept before this one (checked above): `err` is the first.
                    st.fail(&err);
                    return Poll::Ready(Err(err));
                }
            }
        }
        // One allocation for the slices together (a turn's TLS records come as one call), not
        // one per doubling.
        st.pending.reserve(n - skip);
        for buf in bufs {
            let take = buf.len().saturating_sub(skip);
            st.pending.extend_from_slice(&buf[buf.len() - take..]);
            skip -= buf.len() - take;
        }
        if let Some(f) = &flusher
            && f.gathers
        {
            f.writes.fetch_add(1, Ordering::Relaxed);
        }
        if st.queued || st.waiting || st.pending.is_empty() {
            return Poll::Ready(Ok(n));
        }
        match flusher {
            Some(f) if f.gathers => {
                st.queued = true;
                drop(st);
                f.list
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(shared.clone());
                f.wake.notify_one();
            }
            // In a runtime, a task writes the rest when the socket takes it.
            Some(_) => {
                st.waiting = true;
                drop(st);
                tokio::spawn(wait_writable(shared.clone()));
            }
            // Outside a runtime, the next write or the shutdown writes it.
            None => {}
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_gather(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Ready at once: the bytes leave at the end of this turn (or fail there, and the next
    /// write or flush says so).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.state().error() {
            Some(err) => Poll::Ready(Err(err)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Writes everything pending, then shuts the write side (FIN).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        loop {
            let mut st = shared.state();
            match shared.write_now(&mut st) {
                Wrote::All => break,
                Wrote::Failed => {
                    return Poll::Ready(Err(st
                        .error()
                        .unwrap_or_else(|| io::ErrorKind::Other.into())));
                }
                Wrote::Blocked => {
                    drop(st);
                    ready!(shared.socket.poll_write_ready(cx))?;
                }
            }
        }
        if let Some(err) = shared.state().error() {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(socket2::SockRef::from(&shared.socket).shutdown(std::net::Shutdown::Write))
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        // What is pending is still written by the flusher or a waiting task, which hold the
        // socket until then; a waiting task gives up `ORPHAN_GRACE` after this.
        self.shared.state().orphaned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair: the server's end gathered, the client's plain.
    async fn pair() -> (Gathered, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Gathered::new(accepted.unwrap().0), client.unwrap())
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7) % 251) as u8)
            .collect()
    }

    /// Each read here is short (the socket holds less than the buffer takes), so each clears
    /// the socket's readiness: the bytes the client sends next must still wake the reader. Two
    /// workers, so the reactor may report them from the other thread in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_sent_after_a_short_read_wake_the_reader() {
        let (mut server, mut client) = pair().await;
        let mut buf = vec![0u8; 4096];
        for i in 0..200 {
            let piece = pattern(1 + i % 300, i);
            client.write_all(&piece).await.unwrap();
            let mut got = Vec::new();
            while got.len() < piece.len() {
                let read = server.read(&mut buf);
                let n = tokio::time::timeout(Duration::from_secs(10), read)
                    .await
                    .expect("the reader was woken")
                    .unwrap();
                assert!(n > 0, "no end of stream before the client closed");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, piece);
        }
        drop(client);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arrive_whole_and_in_order_through_small_and_large_writes() {
        let (mut server, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut sent = Vec::new();
        for i in 0..300 {
            // Small frames, and now and then one past LIMIT (written through at once).
            let len = if i % 50 == 7 {
                3 * LIMIT + 11
            } else {
                1 + i * 37 % 2000
            };
            let chunk = pattern(len, i);
            if i % 3 == 0 {
                let (a, b) = chunk.split_at(len / 2);
                let n = server
                    .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                    .await
                    .unwrap();
                assert_eq!(n, len, "all slices taken");
            } else {
                server.write_all(&chunk).await.unwrap();
            }
            sent.extend_from_slice(&chunk);
        }
        server.shutdown().await.unwrap();
        assert!(server.shared.state().pending.is_empty());
        let got = reader.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes differ");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_holds_the_writer_back() {
        let (mut server, _client) = pair().await;
        let chunk = vec![7u8; 16 * 1024];
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // The client reads nothing: within 256 MiB the socket is full and the write waits,
        // with no more than LIMIT and one write pending.
        let mut pending = false;
        for _ in 0..16 * 1024 {
            match Pin::new(&mut server).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => assert_eq!(n, chunk.len()),
                Poll::Ready(Err(err)) => panic!("write failed: {err}"),
                Poll::Pending => {
                    pending = true;
                    break;
                }
            }
            assert!(server.shared.state().pending.len() < LIMIT + chunk.len());
        }
        assert!(pending, "never held back");
    }

    #[tokio::test]
    async fn a_write_error_is_returned_by_the_writes_after_it() {
        let (mut server, client) = pair().await;
        // The client resets the connection (SO_LINGER 0): the next bytes the socket sends fail.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let mut failed = None;
        for _ in 0..1000 {
            if let Err(err) = server.write_all(b"hello").await {
                failed = Some(err);
                break;
            }
            // The flusher writes at the end of the turn.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        let err = failed.expect("no write failed");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{err:?}"
        );
        assert_eq!(server.flush().await.unwrap_err().kind(), err.kind());
        assert!(server.shutdown().await.is_err());
    }

    #[tokio::test]
    async fn bytes_pending_when_the_connection_is_dropped_still_arrive() {
        let (mut server, mut client) = pair().await;
        let sent = pattern(10_000, 3);
        server.write_all(&sent).await.unwrap();
        assert_eq!(
            server.shared.state().pending.len(),
            sent.len(),
            "written at once"
        );
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == sent, "got {} bytes", got.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_socket_does_not_take_of_a_vectored_write_follows_in_order() {
        let (mut server, mut client) = pair().await;
        // Small buffers on both ends, so the socket takes only part of the first slice.
        socket2::SockRef::from(&server.shared.socket)
            .set_send_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        let (a, b) = (pattern(100_000, 1), pattern(100_000, 2));
        let n = server
            .write_vectored(&[io::IoSlice::new(&a), io::IoSlice::new(&b)])
            .await
            .unwrap();
        assert_eq!(n, a.len() + b.len());
        let kept = server.shared.state().pending.len();
        assert!(kept > b.len(), "the socket took {} bytes", n - kept);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        server.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(
            got == [a, b].concat(),
            "got {} bytes, out of order",
            got.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_several_workers_bytes_are_written_at_once() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"now").await.unwrap();
        assert!(server.shared.state().pending.is_empty(), "not gathered");
        let mut buf = [0u8; 3];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"now");
    }

    /// A connection that writes again in every turn, as responses arriving one by one from the
    /// upstream do: the flusher gathers across turns while writes keep coming, and writes
    /// within `GATHER_POLLS` turns all the same.
    #[tokio::test]
    async fn writes_gather_across_turns_while_they_come_but_no_longer_than_gather_polls() {
        let (mut a, mut a_client) = pair().await;
        let mut written = 0;
        let mut turns = 0;
        a.write_all(b"x").await.unwrap();
        while turns < 4 * GATHER_POLLS {
            tokio::task::yield_now().await;
            turns += 1;
            let pending = a.shared.state().pending.len();
            if pending == 0 {
                break;
            }
            written += 1;
            a.write_all(b"x").await.unwrap();
        }
        // This task's turns and the flusher's alternate: a flusher that yielded only once
        // (before `GATHER_POLLS`) had written after 2; one that never stopped waiting, never.
        assert!(
            (3..=GATHER_POLLS + 1).contains(&turns),
            "written after {turns} turns of writing"
        );
        let mut buf = vec![0u8; written + 1];
        a_client.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn writes_of_one_turn_leave_together_after_it() {
        let (mut a, mut a_client) = pair().await;
        let (mut b, mut b_client) = pair().await;
        a.write_all(b"one").await.unwrap();
        b.write_all(b"two").await.unwrap();
        a.write_all(b"three").await.unwrap();
        // Nothing has left yet: this task has not yielded.
        assert_eq!(a.shared.state().pending, b"onethree");
        assert_eq!(b.shared.state().pending, b"two");
        let mut buf = [0u8; 8];
        a_client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"onethree");
        let mut buf = [0u8; 3];
        b_client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"two");
        // Given back once written: an idle connection holds no write buffer.
        assert_eq!(a.shared.state().pending.capacity(), 0);
    }
}
