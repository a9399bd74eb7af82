//! The access log as the built binary writes it with `log.format = "json"` (issue 10, issue 9):
//! one flat JSON object per request with the same fields on both protocols, the bytes really
//! sent, the same error kind for the same failure, a request id kept or generated and seen by
//! the upstream, and no line lost on a clean shutdown.
//!
//! The binary is started on `127.0.0.1:0`; its address comes from its own `listening` line.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::{client::*, upstream::*};

const BIN: &str = env!("CARGO_BIN_EXE_linkpush");

/// The binary, running with JSON logs on stderr (a file). Killed when dropped.
struct Running {
    child: tokio::process::Child,
    addr: SocketAddr,
    _config: TempFile,
    stderr: TempFile,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Running {
    async fn start(upstream: SocketAddr) -> Running {
        let config = TempFile::with_contents(
            "logs.toml",
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{upstream}\"\n\
                 [log]\nlevel = \"info\"\nformat = \"json\"\naccess_log = true\n"
            )
            .as_bytes(),
        );
        let stderr = TempFile::new("stderr.jsonl");
        let file = std::fs::File::create(&stderr.path).expect("create stderr file");
        let mut cmd = tokio::process::Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LINKPUSH_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .env_remove("RUST_LOG")
            .args(["--config", config.path_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn linkpush");
        let mut running = Running {
            child,
            addr: "0.0.0.0:0".parse().expect("placeholder"),
            _config: config,
            stderr,
        };
        running.addr = bounded("the `listening` line", async {
            loop {
                if let Ok(Some(status)) = running.child.try_wait() {
                    panic!("linkpush exited with {status}:\n{}", running.raw());
                }
                let addr = running
                    .lines()
                    .iter()
                    .find(|l| l["message"] == "listening")
                    .and_then(|l| l["addr"].as_str()?.parse().ok());
                if let Some(addr) = addr {
                    return addr;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        running
    }

    fn raw(&self) -> String {
        std::fs::read_to_string(&self.stderr.path).unwrap_or_default()
    }

    /// Every complete stderr line, parsed; a line that is not JSON fails the test.
    fn lines(&self) -> Vec<Value> {
        let raw = self.raw();
        let complete = match raw.rfind('\n') {
            Some(end) => &raw[..=end],
            None => "",
        };
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn access_lines(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["target"] == "linkpush::access")
            .collect()
    }

    /// Waits (bounded) for `n` access lines; the writer thread writes them a moment after the
    /// response.
    async fn wait_access_lines(&self, n: usize) -> Vec<Value> {
        bounded(format!("{n} access lines"), async {
            loop {
                let lines = self.access_lines();
                if lines.len() >= n {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("pid");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// The one access line for `path` with `protocol`.
fn line_for<'a>(lines: &'a [Value], protocol: &str, path: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["protocol"] == protocol && l["path"] == path)
        .collect();
    assert_eq!(found.len(), 1, "{protocol} {path} in {lines:#?}");
    found[0]
}

/// A millisecond figure: a number with at most one decimal.
#[track_caller]
fn assert_rounded_ms(line: &Value, field: &str) {
    let v = &line[field];
    let n = v
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {line}"));
    assert!(n >= 0.0, "{line}");
    let text = v.to_string();
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 1, "{field} = {text} in {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_is_flat_json_with_every_field_on_both_protocols() {
    let up = Upstream::new()
        .route(
            "/page?q=1",
            Reply::html("<p>hello</p>").link("</app.css>; rel=preload; as=style"),
        )
        .route("/app.css", Reply::ok("body{}"))
        .route("/plain", Reply::ok("hello"))
        .start()
        .await;
    let proxy = Running::start(up.addr()).await;

    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let h2 = h2_get(
        &mut client,
        "/page?q=1",
        &[
            ("user-agent", "test-agent/1.0"),
            ("x-request-id", "req-abc-123"),
        ],
    )
    .await;
    let h1 = curl_fetch(
        CurlHttp::Http1,
        &proxy.url("/plain"),
        &[
            "-A",
            "curl-agent/2",
            "-H",
            "X-Request-Id: bad id with spaces",
        ],
    )
    .await;
    // A navigation from a client that takes no push gets the learned link in a 103 instead.
    let mut no_push_client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let hinted = h2_get(
        &mut no_push_client,
        "/page?q=1",
        &[("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.pushed_paths(), ["/app.css"]);
    assert_eq!(h1.status, 200);
    assert_eq!(hinted.informational.len(), 1);
    let lines = proxy.wait_access_lines(3).await;

    let page: Vec<&Value> = lines.iter().filter(|l| l["path"] == "/page?q=1").collect();
    assert_eq!(page.len(), 2, "{lines:#?}");
    let (h2_line, hinted_line) = (page[0], page[1]);
    assert_eq!(hinted_line["hinted"], "/app.css", "{hinted_line}");
    assert_eq!(hinted_line["hint_sources"], "learned", "{hinted_line}");
    assert_eq!(hinted_line["pushed"], "", "{hinted_line}");
    assert_eq!(h2_line["hinted"], "", "{h2_line}");
    let h1_line = line_for(&lines, "http1", "/plain");
    for line in [h2_line, h1_line] {
        assert!(line.get("fields").is_none(), "nested fields: {line}");
        for field in [
            "timestamp",
            "level",
            "client",
            "host",
            "method",
            "status",
            "bytes",
            "duration_ms",
            "upstream_ms",
            "user_agent",
            "request_id",
            "pushed",
            "hinted",
            "hint_sources",
        ] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        assert!(
            line["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{line}"
        );
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert!(line.get("error").is_none(), "{line}");
        assert_rounded_ms(line, "duration_ms");
        assert_rounded_ms(line, "upstream_ms");
    }
    // The h2 test client sends `:authority: localhost`; curl sends the URL's host and port.
    assert_eq!(h2_line["host"], "localhost");
    assert_eq!(h1_line["host"], proxy.addr.to_string());
    assert_eq!(h2_line["bytes"], "<p>hello</p>".len());
    assert_eq!(h2_line["user_agent"], "test-agent/1.0");
    assert_eq!(h2_line["pushed"], "/app.css");
    assert_eq!(h1_line["bytes"], 5);
    assert_eq!(h1_line["user_agent"], "curl-agent/2");

    // Kept when sane, replaced when not; the upstream sees the id that is logged.
    assert_eq!(h2_line["request_id"], "req-abc-123");
    let generated = h1_line["request_id"].as_str().expect("request id");
    assert_eq!(generated.len(), 16, "{h1_line}");
    assert!(
        generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{h1_line}"
    );
    let seen = |path: &str| -> Vec<String> {
        up.requests_for(path)
            .iter()
            .flat_map(|r| r.header_all("x-request-id"))
            .collect()
    };
    assert_eq!(seen("/page?q=1")[0], "req-abc-123");
    assert_eq!(
        seen("/page?q=1")[1],
        hinted_line["request_id"].as_str().expect("id")
    );
    assert_eq!(seen("/plain"), [generated]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_logs_the_same_kind_and_the_bytes_sent_on_both_protocols() {
    let proxy = Running::start(Upstream::closed_port()).await;

    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let h2 = h2_get(&mut client, "/down", &[]).await;
    let h1 = curl_fetch(CurlHttp::Http1, &proxy.url("/down"), &[]).await;
    assert_eq!(h2.status, StatusCode::BAD_GATEWAY);
    assert_eq!(h1.status, 502);
    let lines = proxy.wait_access_lines(2).await;

    for (protocol, body) in [("h2", h2.body.len()), ("http1", h1.body.len())] {
        let line = line_for(&lines, protocol, "/down");
        assert_eq!(line["status"], 502, "{line}");
        assert_eq!(line["error"], "upstream_connect", "{line}");
        assert_eq!(line["bytes"], body, "{line}");
        assert_eq!(line["bytes"], "502 Bad Gateway\n".len(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_logs_the_bytes_that_were_sent() {
    const SENT: u64 = 300_000;
    let up = Upstream::new()
        .route("/big", Reply::generated(1_000_000).truncate_at(SENT))
        .start()
        .await;
    let proxy = Running::start(up.addr()).await;

    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let h2 = h2_get(&mut client, "/big", &[]).await;
    let h1 = curl_fetch(CurlHttp::Http1, &proxy.url("/big"), &[]).await;
    let lines = proxy.wait_access_lines(2).await;

    assert_eq!(h2.status, StatusCode::OK);
    assert!(h2.error.is_some(), "the h2 stream must be reset, not ended");
    // `bytes` is what the send loop handed to h2 (all of it, within the client's window); the
    // reset may discard a tail h2 still had queued, so the client can have seen less.
    assert!(h2.body.len() as u64 <= SENT, "{}", h2.body.len());
    assert!(!h2.body.is_empty());
    assert_ne!(h1.exit_code, 0, "curl must see a short body");
    for protocol in ["h2", "http1"] {
        let line = line_for(&lines, protocol, "/big");
        assert_eq!(line["bytes"], SENT, "{line}");
        assert_eq!(line["error"], "upstream_body", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_before_a_clean_exit() {
    const N: usize = 300;
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let mut proxy = Running::start(up.addr()).await;

    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    for _ in 0..N {
        assert_eq!(h2_get(&mut client, "/", &[]).await.status, StatusCode::OK);
    }
    drop(client);
    proxy.sigterm();
    let status = bounded("linkpush to exit", proxy.child.wait())
        .await
        .expect("wait");

    assert!(status.success(), "{status}");
    assert_eq!(proxy.access_lines().len(), N);
    assert!(
        proxy.lines().iter().any(|l| l["message"] == "stopped"),
        "{}",
        proxy.raw()
    );
}
