//! linkpush's own upstream connection pool: idle HTTP/1.1 connections ([`super::conn::Conn`])
//! kept for reuse.
//!
//! Design. The idle handles live in one short list per worker thread (a shard), each behind its
//! own mutex. A thread checks connections in and out of its home shard, so in the common case the
//! lock it takes is one no other thread is touching: an uncontended lock is one atomic exchange
//! each way, with no cache line bounced between cores (hyper-util's legacy pool put every
//! checkout and checkin behind one shared mutex). A plain `thread_local!` list would be cheaper
//! still, but tokio moves tasks between workers, so a connection checked in on one thread would
//! be stranded there while another thread connects anew, and no timer task could reach it to
//! close it after the idle timeout. With shards, a thread whose home shard is empty takes from
//! another (`try_lock`, never waiting), and the reaper task reaches them all.
//!
//! Bounds: at most `upstream.max_idle_per_host` idle connections over all shards (one atomic
//! counter), each closed after [`IDLE_TIMEOUT`] unused. Lists are last-in first-out, so the
//! connection reused is the one most recently known alive and the oldest expire at the front.
//!
//! Stale connections: a backend may close an idle keep-alive connection at any time
//! (RFC 9112 §9.3, §9.6). A connection the reactor has seen closed is skipped at checkout
//! ([`Conn::is_open`]); one that closes in the instant between checkout and request ends before
//! any byte of a response, and the request is sent once more on a new connection when its
//! method is idempotent and it has no body (RFC 9110 §9.2.2; see [`super::conn`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;
use crate::error::ProxyError;
use crate::metrics::Metrics;

/// How long an unused upstream connection is kept (hyper-util's default, which linkpush used
/// before it had its own pool; no configuration key sets it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One shard: handles with the time each became idle, oldest first.
type IdleList<T> = VecDeque<(Instant, T)>;

/// The idle lists: generic over the handle so the bounds and expiry can be tested without
/// sockets.
pub struct Shards<T> {
    lists: Box<[Mutex<IdleList<T>>]>,
    /// Idle handles over all lists.
    count: AtomicUsize,
    max: usize,
    timeout: Duration,
}

thread_local! {
    /// This thread's home shard number (taken modulo the shard count).
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

fn home() -> usize {
    HOME.with(|h| match h.get() {
        Some(n) => n,
        None => {
            let n = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
            h.set(Some(n));
            n
        }
    })
}

/// A poisoned lock only means a panic elsewhere mid-update of a plain list: still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> Shards<T> {
    pub fn new(max: usize, timeout: Duration, shards: usize) -> Self {
        Shards {
            lists: (0..shards.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            count: AtomicUsize::new(0),
            max,
            timeout,
        }
    }

    /// Idle handles held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Keeps `item` idle from `now`, or hands it back when `max` are idle already.
    pub fn put(&self, item: T, now: Instant) -> Result<(), T> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        lock(&self.lists[home() % self.lists.len()]).push_back((now, item));
        Ok(())
    }

    /// The most recently idle handle for which `usable` holds, from this thread's shard first.
    /// Handles passed over (expired, or not `usable`) are dropped, outside the lock.
    pub fn take(&self, now: Instant, mut usable: impl FnMut(&T) -> bool) -> Option<T> {
        let n = self.lists.len();
        let first = home() % n;
        let mut dropped = Vec::new();
        let mut found = None;
        for i in 0..n {
            if self.count.load(Ordering::Acquire) == 0 {
                break;
            }
            let shard = &self.lists[(first + i) % n];
            // Another thread's shard is only borrowed when free: never wait on a neighbour.
            let mut list = if i == 0 {
                lock(shard)
            } else {
                match shard.try_lock() {
                    Ok(l) => l,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                }
            };
            while let Some((since, item)) = list.pop_back() {
                self.count.fetch_sub(1, Ordering::AcqRel);
                if now.saturating_duration_since(since) >= self.timeout {
                    // Everything older in this list has expired too.
                    dropped.push(item);
                    let rest = list.len();
                    dropped.extend(list.drain(..).map(|(_, t)| t));
                    self.count.fetch_sub(rest, Ordering::AcqRel);
                    break;
                }
                if usable(&item) {
                    found = Some(item);
                    break;
                }
                dropped.push(item);
            }
            drop(list);
            if found.is_some() {
                break;
            }
        }
        drop(dropped);
        found
    }

    /// Drops every handle idle for [`Shards::new`]'s `timeout` at `now`, and those `dead`
    /// says are closed. Returns how many were dropped.
    pub fn reap(&self, now: Instant, dead: impl Fn(&T) -> bool) -> usize {
        let mut dropped = Vec::new();
        for shard in &self.lists {
            let mut list = lock(shard);
            let before = list.len();
            let mut kept = VecDeque::with_capacity(before);
            for (since, item) in list.drain(..) {
                if now.saturating_duration_since(since) >= self.timeout || dead(&item) {
                    dropped.push(item);
                } else {
                    kept.push_back((since, item));
                }
            }
            *list = kept;
        }
        self.count.fetch_sub(dropped.len(), Ordering::AcqRel);
        dropped.len()
    }
}

/// Connection settings and the idle handles of one upstream. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    idle: Shards<Box<Conn>>,
    /// `host` without IPv6 brackets, and port, for `TcpStream::connect`.
    host: String,
    port: u16,
    connect_timeout: Duration,
    metrics: Metrics,
    reaper: AtomicBool,
}

/// The clock of the idle connections' stamps and of their expiry, checkout, checkin and the
/// reaper alike: the turn's (`crate::clock`), so a request's checkout and checkin read no clock
/// of their own; the reaper, outside any turn, reads it afresh.
fn idle_clock() -> Instant {
    Instant::from_std(crate::clock::now())
}

impl Pool {
    pub fn new(
        authority: &http::uri::Authority,
        connect_timeout: Duration,
        max_idle: usize,
        metrics: Metrics,
    ) -> Self {
        Self::with_timeout(authority, connect_timeout, max_idle, metrics, IDLE_TIMEOUT)
    }

    fn with_timeout(
        authority: &http::uri::Authority,
        connect_timeout: Duration,
        max_idle: usize,
        metrics: Metrics,
        idle_timeout: Duration,
    ) -> Self {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get().min(64));
        Pool {
            shared: Arc::new(Shared {
                idle: Shards::new(max_idle, idle_timeout, shards),
                host: host.to_owned(),
                port: authority.port_u16().unwrap_or(80),
                connect_timeout,
                metrics,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// An idle connection ready for a request, if any.
    pub fn checkout(&self) -> Option<Box<Conn>> {
        self.shared.idle.take(idle_clock(), |c| c.is_open())
    }

    /// Keeps a connection whose response was read to the end, and which may serve another
    /// request ([`super::conn::ConnBody::take_reusable`]), for the next request; one beyond
    /// `max_idle_per_host` is closed.
    pub fn checkin(&self, conn: Box<Conn>) {
        if self.shared.idle.put(conn, idle_clock()).is_ok() {
            self.start_reaper();
        }
    }

    /// Idle connections held.
    pub fn idle(&self) -> usize {
        self.shared.idle.len()
    }

    /// Closes idle connections unused for the idle timeout at `now` (the reaper's tick).
    pub fn reap(&self, now: Instant) -> usize {
        self.shared.idle.reap(now, |c| !c.is_open())
    }

    /// One task per pool closes expired idle connections, so a quiet thread's shard does not
    /// hold them open past the timeout; it ends when the pool is dropped (a reload).
    fn start_reaper(&self) {
        if self.shared.reaper.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.shared.reaper.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let tick = (self.shared.idle.timeout / 4).max(Duration::from_millis(100));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(shared) = weak.upgrade() else { return };
                shared.idle.reap(idle_clock(), |c| !c.is_open());
            }
        });
    }

    /// A new connection: TCP with `TCP_NODELAY`, bounded by `connect_timeout`.
    pub async fn connect(&self) -> Result<Box<Conn>, ProxyError> {
        let s = &*self.shared;
        let stream = match tokio::time::timeout(
            s.connect_timeout,
            tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ProxyError::UpstreamConnect(e)),
            Err(_) => {
                return Err(ProxyError::UpstreamConnect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        // A relayed 103 was measured ~40 ms late without TCP_NODELAY (Nagle + delayed ACK).
        stream
            .set_nodelay(true)
            .map_err(ProxyError::UpstreamConnect)?;
        Ok(Conn::new(stream, s.metrics.upstream_connection_open()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    /// Shards (90 s timeout) holding `items`, each idle from its offset in seconds after the
    /// returned base time.
    fn holding(items: &[(u32, u64)], shards: usize) -> (Shards<u32>, Instant) {
        let s = Shards::new(8, Duration::from_secs(90), shards);
        let t = Instant::now();
        for &(item, secs) in items {
            assert!(s.put(item, at(t, secs)).is_ok());
        }
        (s, t)
    }

    #[test]
    fn bounded_overall_and_last_in_first_out() {
        let shards = Shards::new(2, Duration::from_secs(90), 3);
        let t = Instant::now();
        assert!(shards.put(1, t).is_ok());
        assert!(shards.put(2, t).is_ok());
        assert_eq!(
            shards.put(3, t),
            Err(3),
            "a third idle handle exceeds the bound"
        );
        assert_eq!(shards.len(), 2);
        assert_eq!(shards.take(t, |_| true), Some(2));
        assert!(shards.put(4, t).is_ok(), "a freed place is usable again");
        assert_eq!(shards.take(t, |_| true), Some(4));
        assert_eq!(shards.take(t, |_| true), Some(1));
        assert_eq!(shards.take(t, |_| true), None);
        assert_eq!(shards.len(), 0);
    }

    #[test]
    fn zero_bound_keeps_nothing() {
        let shards = Shards::new(0, Duration::from_secs(90), 1);
        assert_eq!(shards.put(1, Instant::now()), Err(1));
        assert_eq!(shards.len(), 0);
    }

    #[test]
    fn expired_handles_are_never_handed_out() {
        let (shards, t) = holding(&[(1, 0), (2, 10)], 1);
        // At t+95 s the newest (idle 85 s) is still good, the oldest (95 s) is not.
        assert_eq!(shards.take(at(t, 95), |_| true), Some(2));
        assert_eq!(shards.take(at(t, 95), |_| true), None);
        assert_eq!(shards.len(), 0, "the expired handle was dropped, not kept");
    }

    #[test]
    fn unusable_handles_are_skipped_and_dropped() {
        let (shards, t) = holding(&[(1, 0), (2, 0)], 1);
        assert_eq!(shards.take(t, |&n| n == 1), Some(1));
        assert_eq!(shards.len(), 0);
    }

    #[test]
    fn reap_drops_expired_and_dead_only() {
        let (shards, t) = holding(&[(1, 0), (2, 50), (3, 60)], 2);
        assert_eq!(shards.reap(at(t, 89), |_| false), 0);
        assert_eq!(shards.reap(at(t, 90), |&n| n == 3), 2);
        assert_eq!(shards.len(), 1);
        assert_eq!(shards.take(at(t, 90), |_| true), Some(2));
    }

    #[test]
    fn a_thread_takes_from_another_threads_shard() {
        let shards = Arc::new(Shards::new(8, Duration::from_secs(90), 4));
        let t = Instant::now();
        let other = Arc::clone(&shards);
        std::thread::spawn(move || other.put(7, t).unwrap())
            .join()
            .unwrap();
        assert_eq!(shards.take(t, |_| true), Some(7));
    }
}

/// The pool over real sockets, through [`super::Upstream::send`], against a scripted backend.
#[cfg(test)]
mod socket_tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::super::{RequestBody, Upstream};
    use super::*;

    /// What the backend tells the test, in order.
    #[derive(Debug, PartialEq)]
    enum Seen {
        /// Connection number `n` (from 1) accepted.
        Accepted(usize),
        /// Connection `n` answered a request; `closed` when the backend then closed it.
        Answered(usize, bool),
        /// Connection `n` was closed by linkpush (EOF between requests).
        Eof(usize),
    }

    /// A backend answering each request `200 ok`; with `close_after_each`, it closes the
    /// connection after its response, having said `Connection: close` when `say_close`, or
    /// silently (a keep-alive timeout) when not. Waits for `go` before answering, if given.
    async fn backend(
        close_after_each: bool,
        say_close: bool,
        go: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 1.. {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let _ = tx.send(Seen::Accepted(n));
                tokio::spawn(serve(
                    conn,
                    n,
                    close_after_each,
                    say_close,
                    go.clone(),
                    tx.clone(),
                ));
            }
        });
        (addr, rx)
    }

    async fn serve(
        mut conn: TcpStream,
        n: usize,
        close_after_each: bool,
        say_close: bool,
        go: Option<Arc<tokio::sync::Semaphore>>,
        tx: mpsc::UnboundedSender<Seen>,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Seen::Eof(n));
                        return;
                    }
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            buf.clear();
            if let Some(go) = &go {
                go.acquire().await.unwrap().forget();
            }
            let close = if say_close {
                "connection: close\r\n"
            } else {
                ""
            };
            let res = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{close}\r\nok");
            conn.write_all(res.as_bytes()).await.unwrap();
            if close_after_each {
                drop(conn);
                let _ = tx.send(Seen::Answered(n, true));
                return;
            }
            let _ = tx.send(Seen::Answered(n, false));
        }
    }

    fn upstream(addr: std::net::SocketAddr, max_idle: usize) -> Upstream {
        let mut config = crate::config::Config::default().upstream;
        config.authority = addr.to_string().parse().unwrap();
        config.max_idle_per_host = max_idle;
        Upstream::new(&config, Metrics::new())
    }

    async fn get(upstream: &Upstream) -> Result<Bytes, ProxyError> {
        let body: RequestBody = Empty::new().map_err(|e| match e {}).boxed_unsync();
        let req = http::Request::builder()
            .uri(upstream.uri_for_path("/x")?)
            .header(http::header::HOST, "backend")
            .body(body)
            .unwrap();
        let res = upstream.send(req, None, None).await?;
        assert_eq!(res.status(), 200);
        Ok(res.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, mut seen) = backend(false, false, None).await;
        let upstream = upstream(addr, 8);
        for _ in 0..5 {
            assert_eq!(get(&upstream).await.unwrap(), "ok");
        }
        drop(upstream);
        let mut accepted = 0;
        while let Some(event) = seen.recv().await {
            match event {
                Seen::Accepted(_) => accepted += 1,
                Seen::Eof(_) => break,
                Seen::Answered(..) => {}
            }
        }
        assert_eq!(accepted, 1, "five requests, one connection");
    }

    #[tokio::test]
    async fn a_backend_closing_idle_connections_fails_no_request() {
        for say_close in [false, true] {
            let (addr, mut seen) = backend(true, say_close, None).await;
            let upstream = upstream(addr, 8);
            for i in 1..=3 {
                assert_eq!(get(&upstream).await.unwrap(), "ok", "request {i}");
                // The backend has closed the connection before the next request goes out.
                assert_eq!(seen.recv().await, Some(Seen::Accepted(i)));
                assert_eq!(seen.recv().await, Some(Seen::Answered(i, true)));
            }
        }
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_and_expire() {
        let go = Arc::new(tokio::sync::Semaphore::new(0));
        let (addr, mut seen) = backend(false, false, Some(go.clone())).await;
        let upstream = upstream(addr, 1);
        // Two requests at once: two connections.
        let (a, b) = (upstream.clone(), upstream.clone());
        let first = tokio::spawn(async move { get(&a).await.map_err(|e| e.to_string()) });
        let second = tokio::spawn(async move { get(&b).await.map_err(|e| e.to_string()) });
        assert!(matches!(seen.recv().await, Some(Seen::Accepted(_))));
        assert!(matches!(seen.recv().await, Some(Seen::Accepted(_))));
        go.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), "ok");
        assert_eq!(second.await.unwrap().unwrap(), "ok");
        // `max_idle_per_host = 1`: one kept, the other closed.
        let mut eof = None;
        while eof.is_none() {
            match seen.recv().await {
                Some(Seen::Eof(n)) => eof = Some(n),
                Some(_) => {}
                None => panic!("backend gone"),
            }
        }
        assert_eq!(upstream.pool.idle(), 1);
        // Not yet expired, then expired: the reaper's tick closes it.
        assert_eq!(upstream.pool.reap(Instant::now()), 0);
        assert_eq!(upstream.pool.reap(Instant::now() + IDLE_TIMEOUT), 1);
        assert_eq!(upstream.pool.idle(), 0);
        loop {
            match seen.recv().await {
                Some(Seen::Eof(n)) => {
                    assert_ne!(Some(n), eof, "the other connection closed");
                    break;
                }
                Some(_) => {}
                None => panic!("backend gone"),
            }
        }
    }
}
