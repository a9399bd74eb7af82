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
//! Bounds: `upstream.max_idle_per_host` idle connections over all shards (one atomic counter)
//! are kept for [`IDLE_TIMEOUT`]; the idle connections beyond it, for [`SURPLUS_IDLE`]. A
//! connection coming back when the bound is reached is kept rather than closed: under a load
//! whose demand swings above the bound from one moment to the next (320 requests in flight,
//! answered in bursts, against a bound of 128), closing it meant a new connection for one
//! request in four (12,246–15,490 connects for 50,000 requests; nginx's `keepalive 128` does
//! the same), where h2o, which bounds its idle connections by time only, made almost none.
//! Once the load has not needed them for [`SURPLUS_IDLE`], the extra connections are closed,
//! the oldest first, so the bound holds again at rest. `max_connections` bounds them all:
//! every connection was busy once, and a request takes an idle connection before it opens one.
//! Lists are last-in first-out, so the connection reused is the one most recently known alive
//! and the oldest expire at the front.
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

/// How long an idle connection beyond `upstream.max_idle_per_host` is kept: longer than the gaps
/// of a sustained load (milliseconds), as short as h2o's keep-alive for idle upstream connections
/// (`proxy.timeout.keepalive`, 2 s), its only bound on them.
pub const SURPLUS_IDLE: Duration = Duration::from_secs(2);

/// One shard: handles with the time each became idle, oldest first.
type IdleList<T> = VecDeque<(Instant, T)>;

/// The idle lists: generic over the handle so the bounds and expiry can be tested without
/// sockets.
pub struct Shards<T> {
    lists: Box<[Mutex<IdleList<T>>]>,
    /// Idle handles over all lists.
    count: AtomicUsize,
    /// Idle handles kept for `timeout`; those beyond, for `surplus_timeout`. 0: none kept.
    max: usize,
    /// Idle handles held at most, surplus included.
    hard: usize,
    timeout: Duration,
    surplus_timeout: Duration,
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
    pub fn new(
        max: usize,
        hard: usize,
        timeout: Duration,
        surplus_timeout: Duration,
        shards: usize,
    ) -> Self {
        Shards {
            lists: (0..shards.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            count: AtomicUsize::new(0),
            max,
            hard: hard.max(max),
            timeout,
            surplus_timeout,
        }
    }

    /// Idle handles held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Keeps `item` idle from `now`, and hands back a handle for the caller to drop (outside
    /// the lock): `item` itself when `max` is 0 or `hard` are idle already; else, when more than
    /// `max` are idle, this list's oldest if it has been idle for `surplus_timeout`. One
    /// surplus handle at most is closed per call, so the bound is approached as the load
    /// returns them, not all at once; the reaper closes the rest.
    pub fn put(&self, item: T, now: Instant) -> Option<T> {
        if self.max == 0 {
            return Some(item);
        }
        let held = self.count.fetch_add(1, Ordering::AcqRel);
        if held >= self.hard {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Some(item);
        }
        let mut list = lock(&self.lists[home() % self.lists.len()]);
        list.push_back((now, item));
        if held < self.max {
            return None;
        }
        let (since, _) = list.front()?;
        if now.saturating_duration_since(*since) < self.surplus_timeout {
            return None;
        }
        let (_, oldest) = list.pop_front()?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        Some(oldest)
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

    /// Drops every handle idle for [`Shards::new`]'s `timeout` at `now`, those `dead` says are
    /// closed, and, while more than `max` are idle, those idle for `surplus_timeout`, oldest
    /// first in each list. Returns how many were dropped.
    pub fn reap(&self, now: Instant, dead: impl Fn(&T) -> bool) -> usize {
        let mut dropped = Vec::new();
        for shard in &self.lists {
            let mut list = lock(shard);
            let before = list.len();
            let mut kept = VecDeque::with_capacity(before);
            for (since, item) in list.drain(..) {
                let idle = now.saturating_duration_since(since);
                let surplus = || {
                    idle >= self.surplus_timeout && self.count.load(Ordering::Acquire) > self.max
                };
                if idle >= self.timeout || dead(&item) || surplus() {
                    // Counted off at once, so that `surplus` sees what is left.
                    self.count.fetch_sub(1, Ordering::AcqRel);
                    dropped.push(item);
                } else {
                    kept.push_back((since, item));
                }
            }
            *list = kept;
        }
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
    /// `max_idle` is `upstream.max_idle_per_host`; `max_connections` bounds the surplus too.
    pub fn new(
        authority: &http::uri::Authority,
        connect_timeout: Duration,
        max_idle: usize,
        max_connections: usize,
        metrics: Metrics,
    ) -> Self {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get().min(64));
        Pool {
            shared: Arc::new(Shared {
                idle: Shards::new(
                    max_idle,
                    max_connections,
                    IDLE_TIMEOUT,
                    SURPLUS_IDLE,
                    shards,
                ),
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
    /// request ([`super::conn::ConnBody::take_reusable`]), for the next request (see the
    /// module's bounds for what is closed instead).
    pub fn checkin(&self, conn: Box<Conn>) {
        let closed = self.shared.idle.put(conn, idle_clock());
        if self.shared.idle.len() > 0 {
            self.start_reaper();
        }
        drop(closed);
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
        let idle = &self.shared.idle;
        // The surplus is closed within 1.5 × its timeout of its last use.
        let tick = (idle.timeout / 4)
            .min(idle.surplus_timeout / 2)
            .max(Duration::from_millis(100));
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

    /// Shards bounded at `max` and at `hard` in all, over `lists` lists, with a 90 s timeout
    /// and 2 s for a surplus.
    fn shards(max: usize, hard: usize, lists: usize) -> Shards<u32> {
        Shards::new(
            max,
            hard,
            Duration::from_secs(90),
            Duration::from_secs(2),
            lists,
        )
    }

    /// Shards bounded at `max` (hard bound 8), one list.
    fn bounded(max: usize) -> Shards<u32> {
        shards(max, 8, 1)
    }

    /// Shards (bound 8) holding `items`, each idle from its offset in seconds after the
    /// returned base time.
    fn holding(items: &[(u32, u64)], lists: usize) -> (Shards<u32>, Instant) {
        let s = shards(8, 8, lists);
        let t = Instant::now();
        for &(item, secs) in items {
            assert_eq!(s.put(item, at(t, secs)), None);
        }
        (s, t)
    }

    #[test]
    fn a_surplus_is_kept_while_the_load_uses_it_and_handed_out_last_in_first_out() {
        let shards = bounded(2);
        let t = Instant::now();
        for item in 1..=3 {
            assert_eq!(shards.put(item, t), None, "{item} kept");
        }
        assert_eq!(
            shards.len(),
            3,
            "one beyond the bound, idle for less than 2 s"
        );
        assert_eq!(shards.take(at(t, 1), |_| true), Some(3));
        assert_eq!(shards.put(3, at(t, 1)), None);
        assert_eq!(
            shards.reap(at(t, 1), |_| false),
            0,
            "nothing idle for 2 s yet"
        );
        assert_eq!(shards.len(), 3);
        assert_eq!(shards.take(at(t, 1), |_| true), Some(3));
        assert_eq!(shards.take(at(t, 1), |_| true), Some(2));
        assert_eq!(shards.take(at(t, 1), |_| true), Some(1));
        assert_eq!(shards.take(at(t, 1), |_| true), None);
        assert_eq!(shards.len(), 0);
    }

    #[test]
    fn a_surplus_unused_for_its_timeout_is_closed_oldest_first_down_to_the_bound() {
        let shards = bounded(2);
        let t = Instant::now();
        for item in 1..=3 {
            assert_eq!(shards.put(item, at(t, 0)), None);
        }
        // Above the bound, a handle put back closes the oldest once it is 2 s idle.
        assert_eq!(shards.put(4, at(t, 2)), Some(1));
        assert_eq!(shards.len(), 3);
        // The reaper closes the rest of the surplus, oldest first, and no more.
        assert_eq!(shards.reap(at(t, 2), |_| false), 1);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards.reap(at(t, 60), |_| false), 0, "at the bound: kept");
        assert_eq!(shards.take(at(t, 60), |_| true), Some(4));
        assert_eq!(shards.take(at(t, 60), |_| true), Some(3));
        assert_eq!(shards.len(), 0);
    }

    #[test]
    fn the_hard_bound_is_never_passed() {
        let shards = shards(1, 2, 3);
        let t = Instant::now();
        assert_eq!(shards.put(1, t), None);
        assert_eq!(shards.put(2, t), None);
        assert_eq!(
            shards.put(3, t),
            Some(3),
            "a third idle handle exceeds the hard bound"
        );
        assert_eq!(shards.len(), 2);
        assert_eq!(shards.take(t, |_| true), Some(2));
        assert_eq!(shards.put(4, t), None, "a freed place is usable again");
        assert_eq!(shards.len(), 2);
    }

    #[test]
    fn zero_bound_keeps_nothing() {
        let shards = bounded(0);
        assert_eq!(shards.put(1, Instant::now()), Some(1));
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
        let shards = Arc::new(shards(8, 8, 4));
        let t = Instant::now();
        let other = Arc::clone(&shards);
        let kept = std::thread::spawn(move || other.put(7, t)).join().unwrap();
        assert_eq!(kept, None);
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
        /// Connection `n` has a request and waits for `go` to answer it (only with `go`).
        Waiting(usize),
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
                let _ = tx.send(Seen::Waiting(n));
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
                Seen::Answered(..) | Seen::Waiting(_) => {}
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

    /// `n` requests at once on `upstream`, answered together once all of them are at the
    /// backend, so that `n` connections are busy at once. Returns how many connections the
    /// backend accepted meanwhile.
    async fn burst(
        upstream: &Upstream,
        n: usize,
        go: &tokio::sync::Semaphore,
        seen: &mut mpsc::UnboundedReceiver<Seen>,
    ) -> usize {
        let requests: Vec<_> = (0..n)
            .map(|_| {
                let upstream = upstream.clone();
                tokio::spawn(async move { get(&upstream).await.map_err(|e| e.to_string()) })
            })
            .collect();
        let (mut accepted, mut waiting) = (0, 0);
        while waiting < n {
            match seen.recv().await {
                Some(Seen::Accepted(_)) => accepted += 1,
                Some(Seen::Waiting(_)) => waiting += 1,
                Some(Seen::Answered(..) | Seen::Eof(_)) => {}
                None => panic!("backend gone"),
            }
        }
        go.add_permits(n);
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), "ok");
        }
        accepted
    }

    /// Waits for the backend to see `n` connections closed by linkpush.
    async fn closed(seen: &mut mpsc::UnboundedReceiver<Seen>, mut n: usize) {
        while n > 0 {
            match seen.recv().await {
                Some(Seen::Eof(_)) => n -= 1,
                Some(_) => {}
                None => panic!("backend gone"),
            }
        }
    }

    #[tokio::test]
    async fn a_burst_above_the_bound_keeps_its_connections_for_the_next_then_they_expire() {
        let go = Arc::new(tokio::sync::Semaphore::new(0));
        let (addr, mut seen) = backend(false, false, Some(go.clone())).await;
        let upstream = upstream(addr, 1);
        assert_eq!(burst(&upstream, 3, &go, &mut seen).await, 3);
        // `max_idle_per_host = 1`: the two beyond it are kept all the same, and the next burst
        // opens no connection (closing them made one request in four reconnect under h2load).
        assert_eq!(upstream.pool.idle(), 3);
        assert_eq!(burst(&upstream, 3, &go, &mut seen).await, 0);
        assert_eq!(upstream.pool.idle(), 3);
        // Unused for SURPLUS_IDLE, the two beyond the bound are closed by the reaper's tick; the
        // one within it lasts until IDLE_TIMEOUT.
        assert_eq!(upstream.pool.reap(Instant::now()), 0);
        assert_eq!(upstream.pool.reap(Instant::now() + SURPLUS_IDLE), 2);
        assert_eq!(upstream.pool.idle(), 1);
        closed(&mut seen, 2).await;
        assert_eq!(upstream.pool.reap(Instant::now() + SURPLUS_IDLE), 0);
        assert_eq!(upstream.pool.reap(Instant::now() + IDLE_TIMEOUT), 1);
        assert_eq!(upstream.pool.idle(), 0);
        closed(&mut seen, 1).await;
    }

    #[tokio::test]
    async fn a_zero_bound_keeps_no_connection() {
        let (addr, mut seen) = backend(false, false, None).await;
        let upstream = upstream(addr, 0);
        for i in 1..=2 {
            assert_eq!(get(&upstream).await.unwrap(), "ok");
            assert_eq!(upstream.pool.idle(), 0);
            assert_eq!(seen.recv().await, Some(Seen::Accepted(i)));
            assert_eq!(seen.recv().await, Some(Seen::Answered(i, false)));
            assert_eq!(seen.recv().await, Some(Seen::Eof(i)));
        }
    }
}
