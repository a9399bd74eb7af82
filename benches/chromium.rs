//! Page-load times in a real browser (issue 12): headless Chromium loads the demo's slow page
//! (`/think`: 200 ms of backend think time, five preloads of 185 KiB in all) through linkpush
//! over HTTP/2 with TLS at a given RTT, with learned hints (linkpush sends the learned 103 at
//! once) and without (`learn.enabled = false`: the demo sends no 103 of its own, so the browser
//! finds the assets in the HTML).
//!
//! ```text
//! cargo bench --bench chromium -- [--rtt-ms 100] [--runs 7]
//! ```
//!
//! Everything runs on 127.0.0.1: Chromium → latency relay (RTT/2 each way; this kernel has no
//! netem) → linkpush → the demo backend. One browser (own profile) per mode, loads alternated
//! between the modes so that both see the same machine noise; one untimed load per mode first
//! (it teaches linkpush the route and opens the connection), then the HTTP cache is emptied
//! before every load (a cached asset would be taken from the cache, not from the 103). Figures
//! are Navigation Timing's `domContentLoadedEventEnd` and `loadEventEnd`, medians over the
//! runs. Under `cargo test` (no `--bench`) it does nothing: it needs Chromium and ~1 minute.

#[path = "../tests/support/cdp.rs"]
mod cdp;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cdp::{Chromium, LoadTimings, certificate, chromium_binary};
use linkpush::{Server, TlsSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(60);

struct Args {
    rtt: Duration,
    runs: usize,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        rtt: Duration::from_millis(100),
        runs: 7,
    };
    let mut benching = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // cargo bench passes `--bench` to harness = false targets.
            "--bench" => benching = true,
            "--rtt-ms" => {
                let ms: u64 = it.next().context("--rtt-ms needs a value")?.parse()?;
                args.rtt = Duration::from_millis(ms);
            }
            "--runs" => {
                args.runs = it.next().context("--runs needs a value")?.parse()?;
                if args.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo bench --bench chromium -- [--rtt-ms 100] [--runs 7]"
            ),
        }
    }
    Ok(benching.then_some(args))
}

/// A userspace delay line: every chunk read in one direction is written RTT/2 later, in order.
async fn start_relay(target: SocketAddr, one_way: Duration) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(delay(cr, sw, one_way));
                tokio::spawn(delay(sr, cw, one_way));
            });
        }
    });
    Ok(addr)
}

async fn delay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    one_way: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                let _ = to.shutdown().await;
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if tx
            .send((tokio::time::Instant::now() + one_way, buf[..n].to_vec()))
            .is_err()
            || n == 0
        {
            break;
        }
    }
    let _ = writer.await;
}

struct Mode {
    label: &'static str,
    learn: bool,
    browser: Chromium,
    session: String,
    url: String,
    loads: Vec<LoadTimings>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        println!("chromium bench: not run by `cargo bench`: nothing to do");
        return Ok(());
    };
    let binary = chromium_binary().ok_or_else(|| anyhow!("chromium not found on the PATH"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let backend = rt.block_on(linkpush::demo::start_backend())?;
    let (key, spki) = certificate();
    let mut modes = Vec::new();
    let mut servers = Vec::new();
    for (label, learn) in [("learned 103", true), ("no hints", false)] {
        let mut config = linkpush::demo::config("127.0.0.1:0".parse()?, backend, None)?;
        config.learn.enabled = learn;
        config.log.access_log = false;
        let server = rt.block_on(Server::start_with(
            config,
            TlsSource::Certificate(key.clone()),
        ))?;
        let relay = rt.block_on(start_relay(server.local_addrs()[0], args.rtt / 2))?;
        servers.push(server);
        let mut browser = Chromium::launch(
            &binary,
            &[format!("--ignore-certificate-errors-spki-list={spki}")],
        )
        .map_err(|e| anyhow!(e))?;
        let session = browser.new_page(STEP).map_err(|e| anyhow!(e))?;
        let url = format!("https://127.0.0.1:{}/think", relay.port());
        // Untimed: teaches the route, opens the connection.
        LoadTimings::measure(&mut browser, &session, &url, STEP).map_err(|e| anyhow!(e))?;
        modes.push(Mode {
            label,
            learn,
            browser,
            session,
            url,
            loads: Vec::new(),
        });
    }
    for _ in 0..args.runs {
        for mode in &mut modes {
            mode.browser
                .call(
                    Some(&mode.session),
                    "Network.clearBrowserCache",
                    serde_json::json!({}),
                    STEP,
                )
                .map_err(|e| anyhow!(e))?;
            let load = LoadTimings::measure(&mut mode.browser, &mode.session, &mode.url, STEP)
                .map_err(|e| anyhow!(e))?;
            mode.loads.push(load);
        }
    }
    println!(
        "\nChromium page load of the demo's /think (200 ms think, 5 preloads) at {} ms RTT, median of {} loads:\n",
        args.rtt.as_millis(),
        args.runs
    );
    println!(
        "| mode | DOMContentLoaded (ms) | loadEventEnd (ms) | final headers (ms) | loads with all 5 from the 103 |"
    );
    println!("|---|---|---|---|---|");
    for mode in &modes {
        let from_103 = mode
            .loads
            .iter()
            .filter(|l| {
                l.resources
                    .iter()
                    .filter(|r| r.initiator_type == "early-hints")
                    .count()
                    == 5
            })
            .count();
        if mode.learn && from_103 == 0 {
            bail!("no load used the learned 103");
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {}/{} |",
            mode.label,
            median(mode.loads.iter().map(|l| l.dom_content_loaded).collect()),
            median(mode.loads.iter().map(|l| l.load_event_end).collect()),
            median(mode.loads.iter().map(|l| l.final_response_start).collect()),
            from_103,
            mode.loads.len()
        );
    }
    drop(modes);
    for server in servers {
        rt.block_on(server.shutdown());
    }
    Ok(())
}
