//! Page-load benchmark (SPEC §9): how long a browser-like HTTP/2 client needs to get a page and
//! its five preloaded assets through linkpush over a slow link, for each way linkpush can help
//! (nothing, push from the final Link fields, push on an upstream 103, learned push, learned
//! 103), with a backend that answers at once and one that thinks, beside the physical floor.
//!
//! ```text
//! cargo bench --bench pageload -- [--rtt-ms 100] [--bandwidth-mbit 0] [--runs 5] [--think-ms 200]
//!                                 [--out docs/BENCHMARKS.md] [--no-write]
//! ```
//!
//! Everything runs in this process, on 127.0.0.1 only:
//!
//! ```text
//! client (h2, h2c) ──▶ latency relay (RTT/2 each way, optional rate cap) ──▶ linkpush ──▶ origin
//! ```
//!
//! - origin: a raw-TCP HTTP/1.1 server (hyper's server cannot write a 103): `GET /page` answers
//!   with an HTML page carrying five `Link: <…>; rel=preload` fields after a think time, and
//!   optionally sends a `103 Early Hints` with the same links first; the assets have fixed sizes.
//! - relay: this kernel has no netem, so a userspace TCP relay delays every chunk by RTT/2 in
//!   each direction (timestamp on read, release at read + RTT/2, order kept) and, with a
//!   bandwidth cap, serialises the bytes at that rate before the delay.
//! - client: an h2 client that behaves like a browser: a warmed connection (TCP, SETTINGS and a
//!   throwaway request done before the timer starts), Chrome's flow-control windows, pushes
//!   accepted when push is on, every hinted link fetched as soon as a 103 or the final response
//!   head names it. The timer stops when the HTML and all five assets have fully arrived.
//!
//! The table is printed and written into `docs/BENCHMARKS.md` between `<!-- pageload:begin -->`
//! and `<!-- pageload:end -->` (one sub-section per RTT/bandwidth combination, so the unlimited
//! and the capped runs live side by side). Nothing outside those markers is touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

/// The test client's response-head reader (one copy, in tests/support).
#[path = "../tests/support/client/head.rs"]
mod head;
use head::{Head, next_head};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::client::{PushPromise, PushPromises, SendRequest};
use http::{HeaderMap, Request, Response, StatusCode};
use linkpush::{Config, Server, TlsSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

/// The HTML body of `/page`.
const HTML_SIZE: usize = 10 * 1024;

struct Asset {
    path: &'static str,
    /// The Link field value the origin sends, as a framework would.
    link: &'static str,
    content_type: &'static str,
    size: usize,
    /// What a browser sends when it fetches the asset itself.
    fetch_mode: &'static str,
    fetch_dest: &'static str,
}

const ASSETS: [Asset; 5] = [
    Asset {
        path: "/static/app.css",
        link: "</static/app.css>; rel=preload; as=style",
        content_type: "text/css",
        size: 20 * 1024,
        fetch_mode: "no-cors",
        fetch_dest: "style",
    },
    Asset {
        path: "/static/app.js",
        link: "</static/app.js>; rel=preload; as=script",
        content_type: "text/javascript",
        size: 80 * 1024,
        fetch_mode: "no-cors",
        fetch_dest: "script",
    },
    Asset {
        path: "/static/inter.woff2",
        link: "</static/inter.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
        content_type: "font/woff2",
        size: 30 * 1024,
        fetch_mode: "cors",
        fetch_dest: "font",
    },
    Asset {
        path: "/static/hero.jpg",
        link: "</static/hero.jpg>; rel=preload; as=image; fetchpriority=high",
        content_type: "image/jpeg",
        size: 50 * 1024,
        fetch_mode: "no-cors",
        fetch_dest: "image",
    },
    Asset {
        path: "/static/vendor.js",
        link: "</static/vendor.js>; rel=preload; as=script",
        content_type: "text/javascript",
        size: 10 * 1024,
        fetch_mode: "no-cors",
        fetch_dest: "script",
    },
];

fn asset_bytes() -> usize {
    ASSETS.iter().map(|a| a.size).sum()
}

struct Content {
    html: Bytes,
    assets: Vec<Bytes>,
}

impl Content {
    fn new() -> Content {
        let mut html = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>pageload</title>\n\
             <link rel=\"stylesheet\" href=\"/static/app.css\">\n\
             <script src=\"/static/vendor.js\" defer></script>\n\
             <script src=\"/static/app.js\" defer></script></head>\n<body>\n\
             <img src=\"/static/hero.jpg\" alt=\"\" width=\"1200\" height=\"600\">\n",
        );
        let mut i = 0;
        while html.len() < HTML_SIZE {
            let _ = writeln!(
                html,
                "<p class=\"c{i}\">Paragraph {i} of the page, the kind of text a server renders.</p>"
            );
            i += 1;
        }
        html.truncate(HTML_SIZE - "</body></html>\n".len());
        html.push_str("</body></html>\n");
        let assets = ASSETS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut x = 0x9e37_79b9u32 ^ (i as u32 + 1);
                let mut v = Vec::with_capacity(a.size);
                while v.len() < a.size {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    v.push(b'a' + (x % 26) as u8);
                }
                Bytes::from(v)
            })
            .collect();
        Content {
            html: Bytes::from(html),
            assets,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time limits: every await is bounded; everything stops by itself.
// ---------------------------------------------------------------------------------------------

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Chrome's HTTP/2 flow-control windows (SETTINGS_INITIAL_WINDOW_SIZE 6 MiB, connection window
/// 15 MiB): with h2's 64 KiB defaults the 80 KiB script would wait a round trip for a
/// WINDOW_UPDATE, which is the client's doing, not the proxy's.
const STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;

/// Segment size of the rate-capped relay: bytes are released one segment at a time, like a link
/// serialising packets, so a response head is not held back behind a 64 KiB read.
const SEGMENT: usize = 1448;

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

struct Args {
    rtt: Duration,
    /// Bytes per second; `None` = unlimited.
    bandwidth: Option<f64>,
    bandwidth_mbit: f64,
    runs: usize,
    think: Duration,
    out: Option<PathBuf>,
    /// The arguments as given after `--` (without cargo's `--bench`), for the report.
    given: Vec<String>,
}

const USAGE: &str = "usage: cargo bench --bench pageload -- [--rtt-ms 100] [--bandwidth-mbit 0 (= unlimited)] \
[--runs 5] [--think-ms 200] [--out docs/BENCHMARKS.md] [--no-write]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rtt: Duration::from_millis(100),
        bandwidth: None,
        bandwidth_mbit: 0.0,
        runs: 5,
        think: Duration::from_millis(200),
        out: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md")),
        given: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let mut benching = false;
    while let Some(arg) = it.next() {
        // cargo bench passes `--bench` to harness = false targets.
        if arg == "--bench" {
            benching = true;
            continue;
        }
        args.given.push(arg.clone());
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = it
                .next()
                .ok_or_else(|| anyhow!("{what} needs a value\n{USAGE}"))?;
            args.given.push(v.clone());
            Ok(v)
        };
        match name.as_str() {
            "--rtt-ms" => {
                let ms: f64 = value("--rtt-ms")?.parse().context("--rtt-ms")?;
                ensure!((0.0..10_000.0).contains(&ms), "--rtt-ms out of range");
                args.rtt = Duration::from_secs_f64(ms / 1000.0);
            }
            "--bandwidth-mbit" => {
                let mbit: f64 = value("--bandwidth-mbit")?
                    .parse()
                    .context("--bandwidth-mbit")?;
                ensure!(mbit >= 0.0, "--bandwidth-mbit must be >= 0");
                args.bandwidth_mbit = mbit;
                args.bandwidth = (mbit > 0.0).then_some(mbit * 1e6 / 8.0);
            }
            "--runs" => {
                args.runs = value("--runs")?.parse().context("--runs")?;
                ensure!((1..=1000).contains(&args.runs), "--runs must be 1..=1000");
            }
            "--think-ms" => {
                let ms: u64 = value("--think-ms")?.parse().context("--think-ms")?;
                ensure!(ms <= 10_000, "--think-ms out of range");
                args.think = Duration::from_millis(ms);
            }
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--no-write" => args.out = None,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if !benching {
        // `cargo test --all-targets` runs bench binaries too, without `--bench`: then this is a
        // smoke check of the harness (every size is still verified), not a measurement, and
        // docs/BENCHMARKS.md is left alone.
        eprintln!(
            "pageload: not run by `cargo bench`: smoke check (RTT 0, 1 run, nothing written)"
        );
        args.rtt = Duration::ZERO;
        args.runs = 1;
        args.out = None;
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// Scenarios and their floors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    NoPush,
    PushFinal,
    PushOn103,
    LearnedPush,
    Learned103,
}

const KINDS: [Kind; 5] = [
    Kind::NoPush,
    Kind::PushFinal,
    Kind::PushOn103,
    Kind::LearnedPush,
    Kind::Learned103,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NoPush => "no push",
            Kind::PushFinal => "push from the final Link",
            Kind::PushOn103 => "push on an upstream 103",
            Kind::LearnedPush => "learned push",
            Kind::Learned103 => "learned 103",
        }
    }
    /// Whether the client accepts push (SETTINGS_ENABLE_PUSH).
    fn client_push(self) -> bool {
        !matches!(self, Kind::NoPush | Kind::Learned103)
    }
    fn origin_103(self) -> bool {
        self == Kind::PushOn103
    }
    fn proxy_push(self) -> bool {
        self != Kind::NoPush
    }
    fn proxy_early_hints(self) -> bool {
        self != Kind::NoPush
    }
    fn proxy_learn(self) -> bool {
        matches!(self, Kind::LearnedPush | Kind::Learned103)
    }

    /// When the bytes become available at the proxy end of the link, the request having left
    /// the client at 0 and reached linkpush at RTT/2 (the proxy, origin and loopback taken as
    /// instantaneous; the requests' own bytes neglected).
    fn batches(self, think: bool) -> Vec<Batch> {
        let b = |half_rtts, think, html, assets| Batch {
            half_rtts,
            think,
            html,
            assets,
        };
        match self {
            // The page after the think time; the client asks for the assets when the page's
            // head reaches it (RTT + T), the requests reach the proxy at 3/2 RTT + T.
            Kind::NoPush => vec![b(1, think, true, false), b(3, think, false, true)],
            // Promises and the page go out together once the backend answered.
            Kind::PushFinal => vec![b(1, think, true, true)],
            // Assets pushed at once (upstream 103 sent immediately, or learned links acted on
            // before the request is forwarded); the page after the think time.
            Kind::PushOn103 | Kind::LearnedPush => {
                vec![b(1, false, false, true), b(1, think, true, false)]
            }
            // The learned 103 leaves at RTT/2, reaches the client at RTT; its requests reach the
            // proxy at 3/2 RTT. The page after the think time.
            Kind::Learned103 => vec![b(1, think, true, false), b(3, false, false, true)],
        }
    }
}

#[derive(Clone, Copy)]
struct Batch {
    /// Available at the proxy at half_rtts × RTT/2 (+ T when `think`).
    half_rtts: u32,
    think: bool,
    html: bool,
    assets: bool,
}

/// The floor and its formula: the last byte leaves an ideal link of bandwidth B (work-conserving,
/// FIFO) and arrives RTT/2 later: floor = RTT/2 + max over batches k of
/// (available_k + bytes available at or after available_k / B).
struct Floor {
    value: Duration,
    formula: String,
}

fn floor(kind: Kind, rtt: Duration, think: Duration, bandwidth: Option<f64>) -> Floor {
    let h = HTML_SIZE as f64;
    let a = asset_bytes() as f64;
    let avail = |b: &Batch| {
        rtt.as_secs_f64() * f64::from(b.half_rtts) / 2.0
            + if b.think { think.as_secs_f64() } else { 0.0 }
    };
    let mut batches = kind.batches(!think.is_zero());
    batches.sort_by(|x, y| avail(x).total_cmp(&avail(y)));
    // Merge batches available at the same moment.
    let mut merged: Vec<Batch> = Vec::new();
    for b in batches {
        match merged.last_mut() {
            Some(last) if (avail(last) - avail(&b)).abs() < 1e-9 => {
                last.html |= b.html;
                last.assets |= b.assets;
            }
            _ => merged.push(b),
        }
    }
    struct Term {
        half_rtts: u32,
        think: bool,
        html: bool,
        assets: bool,
        value: f64,
    }
    let mut terms = Vec::new();
    for (k, b) in merged.iter().enumerate() {
        let rest = &merged[k..];
        let html = rest.iter().any(|r| r.html);
        let assets = rest.iter().any(|r| r.assets);
        let bytes = if html { h } else { 0.0 } + if assets { a } else { 0.0 };
        let transfer = bandwidth.map_or(0.0, |bw| bytes / bw);
        terms.push(Term {
            half_rtts: b.half_rtts + 1,
            think: b.think,
            html: html && bandwidth.is_some(),
            assets: assets && bandwidth.is_some(),
            value: avail(b) + rtt.as_secs_f64() / 2.0 + transfer,
        });
    }
    let value = terms.iter().map(|t| t.value).fold(0.0, f64::max);
    // Drop the terms another one dominates whatever RTT, T and B are.
    let dominated = |t: &Term, by: &Term| {
        by.half_rtts >= t.half_rtts
            && (by.think || !t.think)
            && (by.html || !t.html)
            && (by.assets || !t.assets)
    };
    let kept: Vec<&Term> = terms
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            !terms
                .iter()
                .enumerate()
                .any(|(j, by)| j != *i && dominated(t, by) && (j > *i || !dominated(by, t)))
        })
        .map(|(_, t)| t)
        .collect();
    let text: Vec<String> = kept
        .iter()
        .map(|t| {
            let mut s = match t.half_rtts {
                2 => "RTT".to_owned(),
                n if n % 2 == 0 => format!("{}·RTT", n / 2),
                n => format!("{n}/2·RTT"),
            };
            if t.think {
                s.push_str(" + T");
            }
            match (t.html, t.assets) {
                (true, true) => s.push_str(" + (H+A)/B"),
                (true, false) => s.push_str(" + H/B"),
                (false, true) => s.push_str(" + A/B"),
                (false, false) => {}
            }
            s
        })
        .collect();
    let formula = if text.len() == 1 {
        text[0].clone()
    } else {
        format!("max({})", text.join(", "))
    };
    Floor {
        value: Duration::from_secs_f64(value),
        formula,
    }
}

// ---------------------------------------------------------------------------------------------
// The origin: raw HTTP/1.1 over TCP, keep-alive
// ---------------------------------------------------------------------------------------------

struct Origin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

async fn start_origin(content: Arc<Content>, think: Duration, early_103: bool) -> Result<Origin> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Dropping the set (when this task is aborted) aborts every connection.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((sock, _)) => {
                        conns.spawn(origin_conn(sock, content.clone(), think, early_103));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if let Ok(Err(err)) = done {
                        eprintln!("origin connection: {err:#}");
                    }
                }
            }
        }
    });
    Ok(Origin { addr, task })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

async fn write_bounded(sock: &mut TcpStream, data: &[u8]) -> Result<()> {
    timeout(IO_TIMEOUT, sock.write_all(data))
        .await
        .context("origin write timed out")??;
    Ok(())
}

fn links_block() -> String {
    ASSETS
        .iter()
        .map(|a| format!("Link: {}\r\n", a.link))
        .collect()
}

async fn origin_conn(
    mut sock: TcpStream,
    content: Arc<Content>,
    think: Duration,
    early_103: bool,
) -> Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            ensure!(buf.len() < 64 * 1024, "request head too large");
            let n = match timeout(IDLE_TIMEOUT, sock.read_buf(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()), // idle keep-alive connection
            };
            if n == 0 {
                return Ok(());
            }
        };
        let head = buf.split_to(end);
        let head = std::str::from_utf8(&head).context("request head is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let target = request_line.next().unwrap_or("").to_owned();
        let mut body_len = 0usize;
        for line in lines {
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                body_len = value.trim().parse().context("content-length")?;
            }
        }
        ensure!(body_len <= 1024 * 1024, "request body too large");
        while buf.len() < body_len {
            let n = timeout(IO_TIMEOUT, sock.read_buf(&mut buf))
                .await
                .context("request body timed out")??;
            ensure!(n > 0, "connection closed inside a request body");
        }
        let _ = buf.split_to(body_len);
        let path = target.split('?').next().unwrap_or("");
        if method != "GET" {
            write_bounded(
                &mut sock,
                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
            )
            .await?;
            continue;
        }
        if path == "/warm" {
            write_bounded(&mut sock, b"HTTP/1.1 204 No Content\r\n\r\n").await?;
        } else if path == "/page" {
            if early_103 {
                let early = format!("HTTP/1.1 103 Early Hints\r\n{}\r\n", links_block());
                write_bounded(&mut sock, early.as_bytes()).await?;
            }
            if !think.is_zero() {
                // Not tokio::time::sleep: its 1 ms timer made a 200 ms think last 201–204 ms.
                tokio::task::spawn_blocking(move || std::thread::sleep(think)).await?;
            }
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                 content-length: {}\r\ncache-control: no-store\r\n{}\r\n",
                content.html.len(),
                links_block()
            )
            .into_bytes();
            out.extend_from_slice(&content.html);
            write_bounded(&mut sock, &out).await?;
        } else if let Some(i) = ASSETS.iter().position(|a| a.path == path) {
            let body = &content.assets[i];
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
                 cache-control: public, max-age=31536000\r\n\r\n",
                ASSETS[i].content_type,
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            write_bounded(&mut sock, &out).await?;
        } else {
            write_bounded(
                &mut sock,
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            )
            .await?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The latency relay
// ---------------------------------------------------------------------------------------------
//
// OS threads with blocking sockets rather than tokio tasks: tokio's timer has 1 ms granularity
// and rounds every deadline up, which measured +1.3 ms per one-way hop (+2.6 ms per RTT) here;
// `std::thread::sleep` (nanosleep) releases a chunk within ~0.1 ms of its time, and the relay's
// threads do not wait behind the proxy's and the client's tasks on the runtime's workers.

#[derive(Clone, Copy)]
struct LinkModel {
    one_way: Duration,
    /// Bytes per second, per direction; `None` = unlimited.
    bandwidth: Option<f64>,
}

/// How often blocked relay threads look at the stop flag.
const RELAY_POLL: Duration = Duration::from_millis(100);

struct Relay {
    addr: SocketAddr,
    /// Bytes delivered towards the client (proxy → client), over all connections.
    down_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    /// Every relay thread sees the flag within `RELAY_POLL` and ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start_relay(target: SocketAddr, link: LinkModel) -> Result<Relay> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let down_bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (counter, stopping) = (down_bytes.clone(), stop.clone());
    std::thread::Builder::new()
        .name("relay-accept".into())
        .spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (counter, stopping) = (counter.clone(), stopping.clone());
                        let spawned = std::thread::Builder::new().name("relay-conn".into()).spawn(
                            move || {
                                if let Err(e) = relay_conn(sock, target, link, counter, stopping) {
                                    eprintln!("relay connection: {e:#}");
                                }
                            },
                        );
                        if let Err(e) = spawned {
                            eprintln!("relay: cannot spawn a thread: {e}");
                        }
                    }
                    // Polled: connections are opened before any timer starts.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
    Ok(Relay {
        addr,
        down_bytes,
        stop,
    })
}

fn relay_conn(
    client: std::net::TcpStream,
    target: SocketAddr,
    link: LinkModel,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    client.set_nonblocking(false)?;
    client.set_nodelay(true)?;
    let server = std::net::TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .context("relay: connecting to linkpush")?;
    server.set_nodelay(true)?;
    spawn_pipe(
        client.try_clone()?,
        server.try_clone()?,
        link,
        None,
        stop.clone(),
    )?;
    spawn_pipe(server, client, link, Some(down), stop)?;
    Ok(())
}

fn sleep_until_std(deadline: std::time::Instant) {
    let now = std::time::Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// One direction: the reader thread timestamps every chunk as it arrives and queues it; the
/// writer thread releases it at its timestamp + RTT/2 (after serialising it at the capped rate,
/// in 1448-byte segments, if there is a cap), in order. Nothing is released early.
fn spawn_pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    link: LinkModel,
    counter: Option<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    use std::io::{ErrorKind, Read, Write};
    from.set_read_timeout(Some(RELAY_POLL))?;
    to.set_write_timeout(Some(IO_TIMEOUT))?;
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Option<Vec<u8>>)>();
    let reader_stop = stop.clone();
    std::thread::Builder::new()
        .name("relay-read".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            while !reader_stop.load(Ordering::Relaxed) {
                let mut buf = vec![0u8; 64 * 1024];
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        last = std::time::Instant::now();
                        buf.truncate(n);
                        if tx.send((last, Some(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if last.elapsed() > IDLE_TIMEOUT {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send((std::time::Instant::now(), None));
        })?;
    std::thread::Builder::new()
        .name("relay-write".into())
        .spawn(move || {
            // When the (rate-capped) link has serialised everything it was given so far.
            let mut link_free = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let (read_at, chunk) = match rx.recv_timeout(RELAY_POLL) {
                    Ok(item) => item,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                let Some(chunk) = chunk else {
                    sleep_until_std(read_at.max(link_free) + link.one_way);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                };
                let segments: Vec<&[u8]> = match link.bandwidth {
                    None => vec![&chunk[..]],
                    Some(_) => chunk.chunks(SEGMENT).collect(),
                };
                for seg in segments {
                    let release = match link.bandwidth {
                        None => read_at + link.one_way,
                        Some(bw) => {
                            let start = read_at.max(link_free);
                            link_free = start + Duration::from_secs_f64(seg.len() as f64 / bw);
                            link_free + link.one_way
                        }
                    };
                    sleep_until_std(release);
                    if to.write_all(seg).is_err() {
                        return;
                    }
                    if let Some(c) = &counter {
                        c.fetch_add(seg.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        })?;
    Ok(())
}

/// Round trips of 64 bytes through a relay to an echo server: how much the relay adds to the
/// nominal RTT (+ serialisation), its own latency and jitter.
async fn calibrate(link: LinkModel) -> Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        if let Ok(Ok((mut sock, _))) = timeout(IO_TIMEOUT, listener.accept()).await {
            let _ = sock.set_nodelay(true);
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) = timeout(IO_TIMEOUT, sock.read(&mut buf)).await {
                if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    let relay = start_relay(echo_addr, link)?;
    let result = async {
        let mut sock = timeout(IO_TIMEOUT, TcpStream::connect(relay.addr)).await??;
        sock.set_nodelay(true)?;
        let serialise = link.bandwidth.map_or(Duration::ZERO, |bw| {
            Duration::from_secs_f64(2.0 * 64.0 / bw)
        });
        let nominal = link.one_way * 2 + serialise;
        let mut excess = Vec::new();
        let mut buf = [0u8; 64];
        // One untimed ping: the relay accepts and connects onwards on the first bytes' clock.
        timeout(IO_TIMEOUT, sock.write_all(&[7u8; 64])).await??;
        timeout(IO_TIMEOUT, sock.read_exact(&mut buf)).await??;
        for _ in 0..20 {
            let t0 = Instant::now();
            timeout(IO_TIMEOUT, sock.write_all(&[7u8; 64])).await??;
            timeout(IO_TIMEOUT, sock.read_exact(&mut buf)).await??;
            excess.push(t0.elapsed().saturating_sub(nominal));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        anyhow::Ok(excess)
    }
    .await;
    drop(relay);
    echo.abort();
    result
}

// ---------------------------------------------------------------------------------------------
// The browser-like client
// ---------------------------------------------------------------------------------------------

struct Client {
    send: SendRequest<Bytes>,
    driver: JoinHandle<()>,
    authority: String,
    push: bool,
}

impl Client {
    /// TCP, the HTTP/2 preface and SETTINGS, and one throwaway request, so the connection is
    /// fully set up (both SETTINGS acknowledged, windows open) before anything is timed.
    async fn connect(addr: SocketAddr, push: bool) -> Result<Client> {
        let tcp = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("client connect timed out")??;
        tcp.set_nodelay(true)?;
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(push)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_streams(100)
            .header_table_size(65536);
        let (send, conn) = timeout(IO_TIMEOUT, builder.handshake::<_, Bytes>(tcp))
            .await
            .context("h2 handshake timed out")??;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let client = Client {
            send,
            driver,
            authority: addr.to_string(),
            push,
        };
        let warm = async {
            let mut send = client.send.clone().ready().await?;
            let (resp, _) =
                send.send_request(client.request("/warm", "empty", "no-cors")?, true)?;
            let resp = resp.await?;
            ensure!(
                resp.status() == StatusCode::NO_CONTENT,
                "/warm answered {}",
                resp.status()
            );
            read_body(resp.into_body()).await?;
            anyhow::Ok(())
        };
        timeout(IO_TIMEOUT, warm)
            .await
            .context("warm-up request timed out")??;
        Ok(client)
    }

    fn request(&self, path: &str, dest: &str, mode: &str) -> Result<Request<()>> {
        let accept = if dest == "document" {
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        } else {
            "*/*"
        };
        Ok(Request::get(format!("http://{}{}", self.authority, path))
            .header("accept", accept)
            .header("accept-encoding", "gzip, deflate, br")
            .header("accept-language", "en-GB,en;q=0.9")
            .header("user-agent", "linkpush-pageload/1 (browser-like h2 client)")
            .header("sec-fetch-dest", dest)
            .header("sec-fetch-mode", mode)
            .body(())?)
    }

    async fn close(self) {
        let Client { send, driver, .. } = self;
        drop(send);
        let abort = driver.abort_handle();
        if timeout(CLOSE_TIMEOUT, driver).await.is_err() {
            abort.abort();
        }
    }
}

async fn read_body(mut body: RecvStream) -> Result<usize> {
    let mut n = 0;
    while let Some(chunk) = timeout(IO_TIMEOUT, body.data())
        .await
        .context("body stalled")?
    {
        let chunk = chunk?;
        n += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(n)
}

/// How the client got an asset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Pushed,
    /// Requested when a 103 named it.
    Hint103,
    /// Requested when the final response head named it.
    FinalHead,
}

#[derive(Clone, Copy)]
enum Target {
    Html,
    Asset(usize),
}

struct Done {
    target: Target,
    bytes: usize,
    at: Duration,
}

#[derive(Clone, Debug, Default)]
struct LoadResult {
    total: Duration,
    html_done: Duration,
    /// When the last asset arrived.
    assets_done: Duration,
    pushed: usize,
    /// 103 responses received.
    early_hints: usize,
    fetched_on_103: usize,
    fetched_on_final: usize,
    /// Pushes for something already requested or not on the page (refused).
    extra_pushes: usize,
    /// Bytes the relay delivered to the client during the load (all frames and headers).
    down_bytes: u64,
    /// What happened when, for `PAGELOAD_VERBOSE=1`.
    events: Vec<(Duration, String)>,
}

struct LoadState<'a> {
    client: &'a Client,
    start: Instant,
    via: [Option<Via>; ASSETS.len()],
    tx: mpsc::UnboundedSender<Result<Done>>,
    tasks: JoinSet<()>,
    result: LoadResult,
}

impl LoadState<'_> {
    fn spawn_reader<F>(&mut self, target: Target, response: F)
    where
        F: Future<Output = Result<Response<RecvStream>, h2::Error>> + Send + 'static,
    {
        let tx = self.tx.clone();
        let start = self.start;
        self.tasks.spawn(async move {
            let done = async {
                let resp = timeout(PAGE_LOAD_TIMEOUT, response)
                    .await
                    .context("response head timed out")??;
                ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
                let bytes = read_body(resp.into_body()).await?;
                anyhow::Ok(Done {
                    target,
                    bytes,
                    at: start.elapsed(),
                })
            };
            let _ = tx.send(done.await);
        });
    }

    fn on_promise(&mut self, promise: PushPromise) {
        let (request, response) = promise.into_parts();
        let path = request.uri().path();
        self.result
            .events
            .push((self.start.elapsed(), format!("PUSH_PROMISE {path}")));
        match ASSETS.iter().position(|a| a.path == path) {
            Some(i) if self.via[i].is_none() => {
                self.via[i] = Some(Via::Pushed);
                self.result.pushed += 1;
                self.spawn_reader(Target::Asset(i), response);
            }
            // Dropping the response future resets the pushed stream (RST_STREAM CANCEL).
            _ => self.result.extra_pushes += 1,
        }
    }

    /// Requests every preload the head names that is neither pushed nor requested yet.
    async fn on_links(&mut self, headers: &HeaderMap, via: Via) -> Result<()> {
        for path in preload_paths(headers) {
            let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
                continue;
            };
            if self.via[i].is_some() {
                continue;
            }
            self.via[i] = Some(via);
            self.result
                .events
                .push((self.start.elapsed(), format!("GET {path} ({via:?})")));
            match via {
                Via::Hint103 => self.result.fetched_on_103 += 1,
                _ => self.result.fetched_on_final += 1,
            }
            let req =
                self.client
                    .request(ASSETS[i].path, ASSETS[i].fetch_dest, ASSETS[i].fetch_mode)?;
            let mut send = timeout(IO_TIMEOUT, self.client.send.clone().ready())
                .await
                .context("no stream slot")??;
            let (response, _) = send.send_request(req, true)?;
            self.spawn_reader(Target::Asset(i), response);
        }
        Ok(())
    }
}

/// The targets of the `rel=preload` links in the Link fields, as paths. Enough of RFC 8288 for
/// what the origin and linkpush write (no commas inside values).
fn preload_paths(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let preload = params.split(';').any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=preload" || p == "rel=\"preload\""
            });
            if !preload {
                continue;
            }
            let path = match target.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
                None => target,
            };
            out.push(path.to_owned());
        }
    }
    out
}

async fn next_promise(
    promises: &mut Option<PushPromises>,
) -> Option<Result<PushPromise, h2::Error>> {
    match promises.as_mut() {
        Some(p) => p.push_promise().await,
        None => std::future::pending().await,
    }
}

/// Polls a future once, without waiting.
fn poll_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Takes every PUSH_PROMISE h2 has already received. A browser processes frames in order, so a
/// promise that arrived before a 103 or the final HEADERS is known when those are acted on;
/// `select!` alone could hand us the HEADERS first.
fn drain_promises(promises: &mut Option<PushPromises>, st: &mut LoadState<'_>) -> Result<()> {
    while let Some(p) = promises.as_mut() {
        match poll_now(p.push_promise()) {
            Some(Some(Ok(promise))) => st.on_promise(promise),
            Some(Some(Err(e))) => return Err(e.into()),
            Some(None) => *promises = None,
            None => break,
        }
    }
    Ok(())
}

/// One page load on a warmed connection: GET /page, act on pushes, 103s and the final head like
/// a browser, until the HTML and all five assets have arrived.
async fn load_page(
    client: &Client,
    content: &Content,
    down_bytes: &AtomicU64,
) -> Result<LoadResult> {
    let req = client.request("/page", "document", "navigate")?;
    let mut send = timeout(IO_TIMEOUT, client.send.clone().ready())
        .await
        .context("no stream slot")??;
    let bytes_before = down_bytes.load(Ordering::Relaxed);
    let start = Instant::now();
    let (mut response, _) = send.send_request(req, true)?;
    let mut promises = client.push.then(|| response.push_promises());
    let mut head = Some(response);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut st = LoadState {
        client,
        start,
        via: [None; ASSETS.len()],
        tx,
        tasks: JoinSet::new(),
        result: LoadResult::default(),
    };
    let mut html_done = None;
    let mut assets_done: [Option<Duration>; ASSETS.len()] = [None; ASSETS.len()];
    while html_done.is_none() || assets_done.iter().any(Option::is_none) {
        tokio::select! {
            promise = next_promise(&mut promises) => match promise {
                Some(Ok(promise)) => st.on_promise(promise),
                Some(Err(e)) => return Err(e).context("push promise"),
                None => promises = None,
            },
            h = next_head(&mut head) => {
                drain_promises(&mut promises, &mut st)?;
                match h {
                    Head::Informational(info) => {
                        st.result.events.push((start.elapsed(), format!("{} ({} links)", info.status(), info.headers().get_all(http::header::LINK).iter().count())));
                        if info.status() == StatusCode::EARLY_HINTS {
                            st.result.early_hints += 1;
                            st.on_links(info.headers(), Via::Hint103).await?;
                        }
                    }
                    Head::Final(resp) => {
                        head = None;
                        let resp = resp.context("page response")?;
                        st.result.events.push((start.elapsed(), format!("final HEADERS {}", resp.status())));
                        ensure!(resp.status() == StatusCode::OK, "/page answered {}", resp.status());
                        // The preload scanner acts on the head before the body is read.
                        st.on_links(resp.headers(), Via::FinalHead).await?;
                        let ready = std::future::ready(Ok(resp));
                        st.spawn_reader(Target::Html, ready);
                    }
                }
            }
            Some(done) = rx.recv() => {
                let done = done?;
                let what = match done.target {
                    Target::Html => "/page",
                    Target::Asset(i) => ASSETS[i].path,
                };
                st.result.events.push((done.at, format!("done {what} ({} B)", done.bytes)));
                match done.target {
                    Target::Html => {
                        ensure!(
                            done.bytes == content.html.len(),
                            "HTML: {} bytes, expected {}", done.bytes, content.html.len()
                        );
                        html_done = Some(done.at);
                    }
                    Target::Asset(i) => {
                        ensure!(
                            done.bytes == ASSETS[i].size,
                            "{}: {} bytes, expected {}", ASSETS[i].path, done.bytes, ASSETS[i].size
                        );
                        assets_done[i] = Some(done.at);
                    }
                }
            }
        }
    }
    // The load ends when the last byte was read (by the task reading that stream), not when this
    // loop noticed: on a busy 2-core machine the difference was up to 5 ms of scheduling noise.
    st.result.html_done = html_done.unwrap_or_default();
    st.result.assets_done = assets_done
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or_default();
    st.result.total = st.result.html_done.max(st.result.assets_done);
    st.result.down_bytes = down_bytes.load(Ordering::Relaxed) - bytes_before;
    Ok(st.result)
}

// ---------------------------------------------------------------------------------------------
// Running the scenarios
// ---------------------------------------------------------------------------------------------

fn proxy_config(kind: Kind, upstream: SocketAddr) -> Result<Config> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"2s\"\n\
         [upstream]\nurl = \"http://{upstream}\"\n\
         [push]\nenabled = {}\n\
         [early_hints]\nenabled = {}\n\
         [learn]\nenabled = {}\n\
         [log]\nlevel = \"error\"\naccess_log = false\n",
        kind.proxy_push(),
        kind.proxy_early_hints(),
        kind.proxy_learn(),
    );
    Config::from_toml_str(&text, Path::new("<bench>"), &|_| None).map_err(|e| anyhow!("{e}"))
}

struct Row {
    kind: Kind,
    think: Duration,
    floor: Floor,
    runs: Result<Vec<LoadResult>>,
}

async fn run_scenario(
    kind: Kind,
    think: Duration,
    args: &Args,
    content: &Arc<Content>,
) -> Result<Vec<LoadResult>> {
    let origin = start_origin(content.clone(), think, kind.origin_103()).await?;
    let config = proxy_config(kind, origin.addr)?;
    let server = match timeout(
        IO_TIMEOUT,
        Server::start_with(config, TlsSource::FromConfig),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            origin.task.abort();
            bail!("linkpush did not start: {e}");
        }
        Err(_) => {
            origin.task.abort();
            bail!("linkpush did not start within {IO_TIMEOUT:?}");
        }
    };
    let link = LinkModel {
        one_way: args.rtt / 2,
        bandwidth: args.bandwidth,
    };
    let relay = match start_relay(server.local_addrs()[0], link) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("relay: {e:#}");
            None
        }
    };
    let result = async {
        let relay = relay
            .as_ref()
            .ok_or_else(|| anyhow!("relay did not start"))?;
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            // Untimed visit on its own connection: teaches linkpush the route when learning is
            // on, and fills the upstream keep-alive pool in every scenario alike.
            let client = Client::connect(relay.addr, kind.client_push()).await?;
            let first = timeout(
                PAGE_LOAD_TIMEOUT,
                load_page(&client, content, &relay.down_bytes),
            )
            .await;
            client.close().await;
            first
                .context("untimed visit timed out")?
                .context("untimed visit")?;
            // The timed visit, on a new warmed connection (pushes are remembered per connection).
            let client = Client::connect(relay.addr, kind.client_push()).await?;
            let timed = timeout(
                PAGE_LOAD_TIMEOUT,
                load_page(&client, content, &relay.down_bytes),
            )
            .await;
            client.close().await;
            let timed = timed.context("page load timed out")??;
            if std::env::var_os("PAGELOAD_VERBOSE").is_some() {
                eprintln!(
                    "-- {} T={} ms: {}",
                    kind.label(),
                    think.as_millis(),
                    ms(timed.total)
                );
                for (at, what) in &timed.events {
                    eprintln!("   {:>7} ms  {what}", ms(*at));
                }
            }
            runs.push(timed);
        }
        anyhow::Ok(runs)
    }
    .await;
    match timeout(Duration::from_secs(5), server.shutdown()).await {
        Ok(true) => {}
        Ok(false) => eprintln!("pageload: linkpush did not drain within shutdown_timeout"),
        Err(_) => eprintln!("pageload: linkpush shutdown did not return within 5 s"),
    }
    drop(relay);
    origin.task.abort();
    result
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n == 0 {
        Duration::ZERO
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// "5" when every run agrees, else "4–5".
fn spread(runs: &[LoadResult], f: impl Fn(&LoadResult) -> usize) -> String {
    let min = runs.iter().map(&f).min().unwrap_or(0);
    let max = runs.iter().map(&f).max().unwrap_or(0);
    if min == max {
        min.to_string()
    } else {
        format!("{min}–{max}")
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| scenario | T | floor formula | floor ms | median ms | min ms | median − floor ms | median / floor | HTML done ms | assets done ms | pushed · 103s · GET on 103 · GET on head |\n",
    );
    t.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for row in rows {
        let floor_ms = row.floor.value;
        let _ = write!(
            t,
            "| {} | {} | {} | {} ",
            row.kind.label(),
            row.think.as_millis(),
            row.floor.formula,
            ms(floor_ms)
        );
        match &row.runs {
            Ok(runs) => {
                let med = median(runs.iter().map(|r| r.total).collect());
                let min = runs.iter().map(|r| r.total).min().unwrap_or_default();
                let over = med.as_secs_f64() - floor_ms.as_secs_f64();
                let _ = writeln!(
                    t,
                    "| {} | {} | {:+.1} | {:.3} | {} | {} | {} · {} · {} · {} |",
                    ms(med),
                    ms(min),
                    over * 1000.0,
                    med.as_secs_f64() / floor_ms.as_secs_f64().max(1e-9),
                    ms(median(runs.iter().map(|r| r.html_done).collect())),
                    ms(median(runs.iter().map(|r| r.assets_done).collect())),
                    spread(runs, |r| r.pushed),
                    spread(runs, |r| r.early_hints),
                    spread(runs, |r| r.fetched_on_103),
                    spread(runs, |r| r.fetched_on_final),
                );
            }
            Err(e) => {
                let msg = format!("{e:#}").replace('|', "/").replace('\n', " ");
                let _ = writeln!(t, "| **failed**: {msg} | | | | | | |");
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// The report in docs/BENCHMARKS.md
// ---------------------------------------------------------------------------------------------

const BEGIN: &str = "<!-- pageload:begin -->";
const END: &str = "<!-- pageload:end -->";
const RUN_BEGIN: &str = "<!-- pageload:run ";
const RUN_END: &str = "<!-- pageload:run-end -->";

fn intro(h: usize, a: usize) -> String {
    format!(
        r#"## Page load over a slow link (`benches/pageload.rs`)

How long a browser-like HTTP/2 client needs to get one page and its five preloaded assets through
linkpush over a 100 ms RTT link (SPEC §9), for each way linkpush can help, with a backend that
answers at once (T = 0) and one that thinks T = 200 ms, beside the physical floor. A benchmark,
not a test: it prints numbers, it does not pass or fail on them.

```sh
cargo bench --bench pageload -- [--rtt-ms 100] [--bandwidth-mbit 0] [--runs 5] [--think-ms 200] [--no-write]
```

**Set-up** (one process, 127.0.0.1 only): client → latency relay → linkpush (h2c, prior
knowledge, `log.level = "error"`, `access_log = false`) → origin.

- **Origin**: a raw-TCP HTTP/1.1 server (hyper's server cannot write a 1xx). `GET /page` answers
  after T with a {h}-byte HTML page (H) and five Link fields: `/static/app.css` (20 KiB,
  `as=style`), `/static/app.js` (80 KiB, `as=script`), `/static/inter.woff2` (30 KiB, `as=font;
  type="font/woff2"; crossorigin`), `/static/hero.jpg` (50 KiB, `as=image; fetchpriority=high`),
  `/static/vendor.js` (10 KiB, `as=script`): A = {a} bytes of assets. In "push on an upstream
  103" it first writes a `103 Early Hints` with the same five Link fields, at once, then thinks.
- **Relay**: the kernel has no netem, so a userspace TCP relay stands for the network: every
  chunk read from one side is released to the other RTT/2 later (order kept, TCP_NODELAY
  everywhere). With `--bandwidth-mbit B`, each direction is also an ideal link of rate B: bytes
  are serialised in 1448-byte segments at B (a token bucket with no burst) and each segment is
  released RTT/2 after it left. Its buffer is unbounded (no loss). It runs on its own OS threads
  with blocking sockets and `nanosleep` (tokio's 1 ms timer measured +1.3 ms per one-way hop);
  the calibration line under each table is what it adds to a 64-byte ping over the nominal RTT.
- **Client**: the `h2` crate, like a browser: Chrome's windows (6 MiB per stream, 15 MiB per
  connection) and `MAX_CONCURRENT_STREAMS` 100; a connection that is already set up (TCP, both
  SETTINGS, and one throwaway `GET /warm` → 204) before the timer starts, so the timer covers only
  the page load. Timer on, `GET /page` (`sec-fetch-mode: navigate`). With push on, it accepts every
  PUSH_PROMISE for the page's assets. Any asset not pushed is requested as soon as it is known:
  every hinted link when a 103 arrives, the rest when the final response's HEADERS arrive (a
  browser's preload scanner acts on the head before the body). PUSH_PROMISEs received before a
  103 or the HEADERS count as known (frames are handled in order). Timer off when the HTML and all
  five assets have fully arrived (the time the last byte was read); every size is checked.
- **Scenarios** (linkpush configuration; client):
  1. *no push*: push, early hints and learning off; push-disabled client. Assets are fetched
     after the final head.
  2. *push from the final Link*: push on, learning off; push client; origin sends no 103.
  3. *push on an upstream 103*: push on, learning off; push client; the origin's 103 comes first.
  4. *learned push*: push and learning on; push client; no 103 from the origin.
  5. *learned 103*: learning and early hints on; push-disabled client; no 103 from the origin.

  Each run is an untimed visit on its own connection (it teaches linkpush the route in 4 and 5,
  and warms linkpush's upstream pool in all), then the timed visit on a new warmed connection
  (pushes are remembered per connection, so a reused one would get none). The table gives the
  median and minimum over the runs.
- **Floor**: the request leaves at 0 and reaches linkpush at RTT/2; linkpush, the origin and
  loopback are taken as instantaneous, request bytes are neglected. Bytes become available at
  the proxy end in batches (page head and body after T; pushed assets at once in 3 and 4; assets
  requested after the head at 3/2·RTT + T in 1; assets requested on the learned 103 at 3/2·RTT in
  5) and cross an ideal FIFO link: floor = RTT/2 + max over batches k of (available_k + bytes
  available at or after available_k / B), which with unlimited bandwidth is RTT/2 + the last
  batch's time. H/B and A/B count the body bytes only; the `down KB` figure is what actually
  crossed the link (HEADERS, DATA framing, PUSH_PROMISEs, 103s). The "floor formula" column keeps
  every term that can bind for some RTT, T and B. The
  `pushed · 103s · GET on 103 · GET on head` column says what the client got in the timed
  visit: assets pushed, 103s received, assets requested because of a 103, and because of the
  final head (a range when the runs differ).
- **Reading the table**: `median − floor` is what the set-up and linkpush add to physics. The
  relay's share is its calibration figure (below each table) per round trip on the critical path
  (1 for the push rows, 2 for no push and for learned 103 at T = 0); the rest is the work of the
  client, linkpush and the origin, all in one process on a machine other jobs share (run with
  `--rtt-ms 0 --no-write` to see that work alone). `HTML done` and `assets done` show where the
  time goes: with learned hints (and on an upstream 103) the assets are in while the backend is
  still thinking (T = 200). Under a bandwidth cap, pushes that start before the page is ready
  share the link with the HTML, so the HTML itself can arrive later than without push even when
  the page as a whole is done sooner (the h2 crate serves streams round-robin, without
  priorities).
- **Not modelled**: TCP slow start and loss (each TCP leg is loopback; on a real 100 ms path a
  fresh connection's initial window of 10 segments would add round trips to move ~{kb} KB), TLS,
  and the browser's own parsing and scheduling.
"#,
        h = h,
        a = a,
        kb = (h + a) / 1000,
    )
}

fn civil_date(unix: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60
    )
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} CPUs (`nproc`), {model}, Linux {kernel}")
}

fn run_key(args: &Args) -> String {
    format!(
        "rtt={}ms bandwidth={}",
        args.rtt.as_millis(),
        if args.bandwidth.is_some() {
            format!("{}mbit", args.bandwidth_mbit)
        } else {
            "unlimited".to_owned()
        }
    )
}

fn run_section(args: &Args, rows: &[Row], calibration: &str) -> String {
    let command = if args.given.is_empty() {
        "cargo bench --bench pageload".to_owned()
    } else {
        format!("cargo bench --bench pageload -- {}", args.given.join(" "))
    };
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| civil_date(d.as_secs()))
        .unwrap_or_default();
    let bw = match args.bandwidth {
        Some(_) => format!("{} Mbit/s each way", args.bandwidth_mbit),
        None => "unlimited".to_owned(),
    };
    let mut s = String::new();
    let _ = writeln!(s, "### RTT {} ms, bandwidth {bw}\n", args.rtt.as_millis());
    let _ = writeln!(
        s,
        "`{command}`, {date}, {} runs; {}.\n",
        args.runs,
        machine()
    );
    s.push_str(&table(rows));
    let _ = writeln!(
        s,
        "\nH = {} B, A = {} B{}. Relay calibration (64-byte pings, 20): {calibration}.",
        HTML_SIZE,
        asset_bytes(),
        match args.bandwidth {
            Some(bw) => format!(", B = {:.0} B/s", bw),
            None => String::new(),
        }
    );
    let down: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let runs = r.runs.as_ref().ok()?;
            let kb = runs.iter().map(|x| x.down_bytes).max()? as f64 / 1000.0;
            Some(format!(
                "{} T={}: {kb:.1}",
                r.kind.label(),
                r.think.as_millis()
            ))
        })
        .collect();
    let _ = writeln!(
        s,
        "Down KB per timed load (max over runs): {}.",
        down.join("; ")
    );
    s
}

/// Rewrites only the pageload region (and in it only this RTT/bandwidth's sub-section).
fn update_doc(path: &Path, key: &str, section: &str, h: usize, a: usize) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (before, region, after) = match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => (
            existing[..b].to_owned(),
            existing[b + BEGIN.len()..e].to_owned(),
            existing[e + END.len()..].to_owned(),
        ),
        (None, None) => {
            let mut before = existing.clone();
            if !before.ends_with('\n') {
                before.push('\n');
            }
            before.push('\n');
            (before, String::new(), "\n".to_owned())
        }
        _ => bail!(
            "{}: the {BEGIN} / {END} markers are broken; not touching the file",
            path.display()
        ),
    };
    // Keep the other RTT/bandwidth sub-sections.
    let mut runs: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = region.as_str();
    while let Some(start) = rest.find(RUN_BEGIN) {
        let after_marker = &rest[start + RUN_BEGIN.len()..];
        let Some(close) = after_marker.find("-->") else {
            break;
        };
        let k = after_marker[..close].trim().to_owned();
        let body_start = close + 3;
        let Some(end) = after_marker[body_start..].find(RUN_END) else {
            break;
        };
        runs.insert(
            k,
            after_marker[body_start..body_start + end]
                .trim_matches('\n')
                .to_owned(),
        );
        rest = &after_marker[body_start + end + RUN_END.len()..];
    }
    runs.insert(key.to_owned(), section.trim_matches('\n').to_owned());
    // Unlimited bandwidth first, then by key.
    let mut ordered: Vec<(&String, &String)> = runs.iter().collect();
    ordered.sort_by_key(|(k, _)| (!k.contains("unlimited"), (*k).clone()));
    let mut out = before;
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(&intro(h, a));
    for (k, body) in ordered {
        let _ = write!(out, "\n{RUN_BEGIN}{k} -->\n{body}\n{RUN_END}\n");
    }
    out.push_str(END);
    out.push_str(&after);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pageload: {e:#}");
            std::process::exit(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pageload: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match bench(&args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pageload: {e:#}");
                1
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn bench(args: &Args) -> Result<()> {
    let content = Arc::new(Content::new());
    ensure!(content.html.len() == HTML_SIZE);
    let link = LinkModel {
        one_way: args.rtt / 2,
        bandwidth: args.bandwidth,
    };
    let excess = calibrate(link).await.context("relay calibration")?;
    let calibration = format!(
        "median +{} ms, max +{} ms over the nominal RTT",
        ms(median(excess.clone())),
        ms(excess.iter().copied().max().unwrap_or_default())
    );
    eprintln!(
        "pageload: RTT {} ms, bandwidth {}, {} runs; relay {calibration}",
        args.rtt.as_millis(),
        args.bandwidth.map_or("unlimited".to_owned(), |_| format!(
            "{} Mbit/s",
            args.bandwidth_mbit
        )),
        args.runs
    );
    let mut rows = Vec::new();
    for kind in KINDS {
        for think in [Duration::ZERO, args.think] {
            if think.is_zero()
                && rows
                    .iter()
                    .any(|r: &Row| r.kind == kind && r.think == think)
            {
                continue;
            }
            let runs = run_scenario(kind, think, args, &content).await;
            match &runs {
                Ok(r) => eprintln!(
                    "pageload: {:<26} T={:>3} ms: {} ms",
                    kind.label(),
                    think.as_millis(),
                    r.iter().map(|x| ms(x.total)).collect::<Vec<_>>().join(" ")
                ),
                Err(e) => eprintln!(
                    "pageload: {:<26} T={:>3} ms: FAILED: {e:#}",
                    kind.label(),
                    think.as_millis()
                ),
            }
            rows.push(Row {
                kind,
                think,
                floor: floor(kind, args.rtt, think, args.bandwidth),
                runs,
            });
        }
    }
    let section = run_section(args, &rows, &calibration);
    println!("{section}");
    if let Some(out) = &args.out {
        update_doc(out, &run_key(args), &section, HTML_SIZE, asset_bytes())?;
        eprintln!("pageload: wrote {}", out.display());
    }
    if rows.iter().any(|r| r.runs.is_err()) {
        bail!("some scenarios failed (see the table)");
    }
    Ok(())
}
