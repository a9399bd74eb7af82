//! A scripted fake HTTP/1.1 upstream, written over raw TCP so that it can misbehave on purpose
//! (truncated bodies, responses that never come, 103s before the final response, hop-by-hop
//! headers a proxy must strip).
//!
//! ```ignore
//! let up = Upstream::new()
//!     .route("/", Reply::html("<p>hi</p>").link("</app.css>; rel=preload; as=style"))
//!     .route("/app.css", Reply::ok("body{}").header("content-type", "text/css"))
//!     .start()
//!     .await;
//! // ... point the proxy at up.url(), make requests ...
//! assert_eq!(up.requests_for("/app.css").len(), 1);
//! ```
//!
//! Requests are parsed by hand (request line and headers up to 64 KiB; bodies by Content-Length or
//! chunked) and recorded as received: header names keep their case and order. Connections are
//! kept alive (RFC 9112 §9.3) unless the request says `Connection: close`. Every task ends when the
//! [`RunningUpstream`] is dropped.
//!
//! Layout: this module is the builder and the running handle; `reply` is what a route answers;
//! `serve` accepts connections and writes each [`Reply`]; `http1` reads requests off a
//! connection; `generated` is the deterministic body pattern.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod generated;
mod http1;
mod reply;
mod serve;

// The API of the module. Each test binary uses only part of it, like `dead_code` in support/mod.rs.
#[allow(unused_imports)]
pub use self::generated::{generated_body, generated_byte, generated_sha256, sha256_hex};
#[allow(unused_imports)]
pub use self::reply::Reply;

/// Generated and echoed bodies are written in pieces of this size.
const WRITE_CHUNK: usize = 64 * 1024;

/// A clonable one-shot latch: `open()` releases every current and future `wait()`.
#[derive(Clone, Debug)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    pub fn opened(&self) -> bool {
        *self.tx.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail with a closed channel.
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Serve,
    AcceptThenClose,
}

/// Builder of a fake upstream. `start()` binds `127.0.0.1:0` and returns the running handle.
pub struct Upstream {
    routes: Vec<(String, Reply)>,
    fallback: Reply,
    mode: Mode,
}

impl Upstream {
    /// No routes yet; unknown paths get 404.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Upstream {
            routes: Vec::new(),
            fallback: Reply::status(404),
            mode: Mode::Serve,
        }
    }

    /// An upstream that accepts each connection and closes it at once without reading.
    pub fn accept_then_close() -> Self {
        Upstream {
            mode: Mode::AcceptThenClose,
            ..Upstream::new()
        }
    }

    /// Answer requests whose path is `path` (or whose whole target is `path`, when `path` has a
    /// query) with `reply`. A later route for the same path replaces the earlier one.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.retain(|(p, _)| p != path);
        self.routes.push((path.to_owned(), reply));
        self
    }

    /// Answer requests that match no route with `reply`.
    pub fn fallback(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    /// A `127.0.0.1` port free right now, for a server that cannot report the port it chose
    /// (another `bind 127.0.0.1:0` may take it meanwhile: the caller retries).
    pub fn free_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local_addr")
    }

    /// A `127.0.0.1` address where nothing listens: connecting to it is refused.
    ///
    /// The port stays bound, without listening, for the rest of the test binary's life: a port
    /// bound and released at once was handed to the next `bind 127.0.0.1:0` (a scripted
    /// upstream started right after), and the "closed" port answered 404.
    pub fn closed_port() -> SocketAddr {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local_addr");
        // Never closed: nothing else may take the port while the tests run.
        std::mem::forget(socket);
        addr
    }

    pub async fn start(self) -> RunningUpstream {
        self.start_on("127.0.0.1:0").await
    }

    /// Like [`Upstream::start`], bound to `bind`: `0.0.0.0:0` lets a container on a bridge
    /// network reach it through the host's address (tests/container.rs).
    pub async fn start_on(self, bind: &str) -> RunningUpstream {
        let listener = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            routes: Mutex::new(Routes {
                routes: self.routes,
                fallback: self.fallback,
            }),
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            changed: watch::Sender::new(0),
        });
        let task = tokio::spawn(serve::accept_loop(listener, state.clone(), self.mode));
        RunningUpstream { addr, state, task }
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Index of the connection it came on, in accept order from 0.
    pub conn: usize,
    pub method: String,
    /// Request target exactly as received (path and query, for origin-form).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// In received order, names with their original case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the (de-chunked) body.
    pub body_sha256: String,
}

impl Recorded {
    /// The target without its query.
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }

    /// The first value of header `name` (case-insensitive), as lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// The running fake upstream. Dropping it stops the listener and every connection.
pub struct RunningUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks; dropping it aborts them all.
        self.task.abort();
    }
}

impl RunningUpstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace (or add) a route while running, e.g. to change a page's links between requests.
    pub fn set_route(&self, path: &str, reply: Reply) {
        let mut routes = self.state.routes.lock().unwrap();
        routes.routes.retain(|(p, _)| p != path);
        routes.routes.push((path.to_owned(), reply));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests whose path is `path` (whose whole target is `path`, when `path` has a query).
    pub fn requests_for(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| target_matches(&r.target, path))
            .collect()
    }

    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections that have ended, whoever closed them.
    pub fn connections_closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Responses that could not be finished because the peer went away (a write failed, or the
    /// peer closed while a `hold`, `delay_body` or `never_respond` was waiting).
    pub fn responses_aborted(&self) -> usize {
        self.state.aborted.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` requests for `path` were received; false on timeout.
    pub async fn wait_for_requests(&self, path: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |up| up.requests_for(path).len() >= n)
            .await
    }

    /// Wait until `cond` holds; it is re-checked on every request, connection and abort. False
    /// on timeout.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.state.changed.subscribe();
        loop {
            // Mark the current version seen before checking, so no change can slip in between.
            rx.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return cond(self),
            }
        }
    }
}

struct Routes {
    routes: Vec<(String, Reply)>,
    fallback: Reply,
}

struct State {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<Recorded>>,
    accepted: AtomicUsize,
    closed: AtomicUsize,
    aborted: AtomicUsize,
    /// Bumped on every change that `wait_until` may be waiting for.
    changed: watch::Sender<u64>,
}

impl State {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn reply_for(&self, target: &str) -> Reply {
        let routes = self.routes.lock().unwrap();
        let exact = routes
            .routes
            .iter()
            .find(|(p, _)| p.contains('?') && p == target);
        let by_path = || {
            routes
                .routes
                .iter()
                .find(|(p, _)| !p.contains('?') && p == path_of(target))
        };
        match exact.or_else(by_path) {
            Some((_, reply)) => reply.clone(),
            None => routes.fallback.clone(),
        }
    }
}

fn path_of(target: &str) -> &str {
    // Absolute-form (`http://host/path`) is matched by its path, like origin-form.
    let target = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    target.split('?').next().unwrap_or(target)
}

fn target_matches(target: &str, wanted: &str) -> bool {
    if wanted.contains('?') {
        target == wanted
    } else {
        path_of(target) == wanted
    }
}
