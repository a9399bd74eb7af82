//! Tests of the test support itself, so that proxy tests can trust it: the fake upstream is
//! exercised by curl and by a raw TcpStream; the h2 client and the nghttp trace parser are checked
//! against nghttpd (an independent server) and against a small reference server written with the
//! h2 crate's server side; the parser also against a captured trace, so it is checked without any
//! server.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use support::{client::*, raw::*, upstream::*};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_secs(5);
/// How long a negative check ("nothing arrives before the gate opens") waits.
const QUIET: Duration = Duration::from_millis(300);

fn page() -> Reply {
    Reply::html("<html>page</html>")
        .link("</app.css>; rel=preload; as=style")
        .link("</app.js>; rel=preload; as=script")
        .links_in_one_field(&[
            "</a.woff2>; rel=preload; as=font; crossorigin",
            "</b.png>; rel=preload; as=image",
        ])
}

// ===== The fake upstream, through curl =====

#[tokio::test]
async fn get_returns_the_route_with_every_link_field_in_order() {
    let up = Upstream::new().route("/", page()).start().await;

    let r = curl_fetch(CurlHttp::Http1, &format!("{}/", up.url()), &[]).await;

    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
    assert_eq!(r.body, b"<html>page</html>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("17"));
    assert_eq!(
        r.header_all("link"),
        [
            "</app.css>; rel=preload; as=style",
            "</app.js>; rel=preload; as=script",
            "</a.woff2>; rel=preload; as=font; crossorigin, </b.png>; rel=preload; as=image",
        ]
    );
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (
            reqs[0].method.as_str(),
            reqs[0].target.as_str(),
            reqs[0].version.as_str()
        ),
        ("GET", "/", "HTTP/1.1")
    );
    assert_eq!(
        reqs[0].headers[0].0, "Host",
        "names keep their case and order"
    );
    assert_eq!(reqs[0].header("host"), Some(up.addr().to_string()));
    assert_eq!(reqs[0].body_len, 0);
    assert_eq!(reqs[0].body_sha256, sha256_hex(b""));
}

#[tokio::test]
async fn head_gets_the_headers_of_get_and_no_body() {
    let up = Upstream::new()
        .route("/big", Reply::generated(5000))
        .start()
        .await;

    let r = curl_fetch(CurlHttp::Http1, &format!("{}/big", up.url()), &["--head"]).await;

    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(up.requests()[0].method, "HEAD");
}

#[tokio::test]
async fn post_body_is_echoed_with_its_sha256_after_100_continue() {
    let up = Upstream::new().route("/echo", Reply::echo()).start().await;
    // Over 1 MiB, so curl asks for 100-continue.
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let file = TempFile::with_contents("post", &data);

    let r = curl_fetch(
        CurlHttp::Http1,
        &format!("{}/echo", up.url()),
        &["--data-binary", &format!("@{}", file.path_str())],
    )
    .await;

    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(r.header("x-body-sha256"), Some(sha256_hex(&data).as_str()));
    assert!(
        r.body == data,
        "echoed body differs ({} bytes)",
        r.body.len()
    );
    assert_eq!(
        r.informational.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [100]
    );
    let req = &up.requests_for("/echo")[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("expect").as_deref(), Some("100-continue"));
    assert_eq!(req.body_len, data.len() as u64);
    assert_eq!(req.body_sha256, sha256_hex(&data));
}

#[tokio::test]
async fn chunked_request_body_is_decoded_and_echoed_chunked() {
    let up = Upstream::new()
        .route("/echo", Reply::echo().chunked())
        .start()
        .await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    let file = TempFile::with_contents("chunked", &data);

    let r = curl_fetch(
        CurlHttp::Http1,
        &format!("{}/echo", up.url()),
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", file.path_str()),
        ],
    )
    .await;

    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert!(
        r.body == data,
        "echoed body differs ({} bytes)",
        r.body.len()
    );
    let req = &up.requests()[0];
    assert_eq!(req.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(
        (req.body_len, req.body_sha256.as_str()),
        (data.len() as u64, sha256_hex(&data).as_str())
    );
}

#[tokio::test]
async fn generated_bodies_are_deterministic_plain_and_chunked() {
    let len = 3 * 1024 * 1024 + 17;
    let up = Upstream::new()
        .route("/big", Reply::generated(len))
        .route("/big-chunked", Reply::generated(len).chunked())
        .start()
        .await;

    for path in ["/big", "/big-chunked"] {
        let r = curl_fetch(CurlHttp::Http1, &format!("{}{path}", up.url()), &[]).await;
        assert_eq!((r.exit_code, r.status), (0, 200), "{path}: {}", r.stderr);
        assert_eq!(r.body.len() as u64, len, "{path}");
        assert_eq!(r.body[..1000], generated_body(1000), "{path}");
        assert_eq!(sha256_hex(&r.body), generated_sha256(len), "{path}");
    }
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let up = Upstream::new()
        .route("/a", Reply::ok("a"))
        .route("/b", Reply::ok("b"))
        .start()
        .await;

    // One curl invocation with two URLs reuses its connection.
    let out = curl(&[
        "-sS",
        "--http1.1",
        &format!("{}/a", up.url()),
        &format!("{}/b", up.url()),
    ])
    .await;

    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"ab");
    assert_eq!(up.connections_accepted(), 1);
    assert_eq!(
        up.requests()
            .iter()
            .map(|r| (r.conn, r.target.clone()))
            .collect::<Vec<_>>(),
        [(0, "/a".to_owned()), (0, "/b".to_owned())]
    );
}

#[tokio::test]
async fn early_hints_come_before_the_final_response() {
    let up = Upstream::new()
        .route(
            "/hinted",
            Reply::html("x")
                .early_hints(&[
                    "</a.css>; rel=preload; as=style",
                    "</b.js>; rel=preload; as=script",
                ])
                .early_hints(&["</c.css>; rel=preload"]),
        )
        .start()
        .await;
    let url = format!("{}/hinted", up.url());

    let verbose = curl(&["-sS", "-v", "--http1.1", &url]).await;
    let r = curl_fetch(CurlHttp::Http1, &url, &[]).await;

    let hint = verbose
        .stderr
        .find("< HTTP/1.1 103 Early Hints")
        .expect("curl -v shows the 103");
    let fin = verbose
        .stderr
        .find("< HTTP/1.1 200 OK")
        .expect("curl -v shows the 200");
    assert!(hint < fin);
    assert_eq!(
        (r.exit_code, r.status, r.body.as_slice()),
        (0, 200, &b"x"[..])
    );
    let hints: Vec<(u16, Vec<(String, String)>)> = vec![
        (
            103,
            vec![
                ("Link".into(), "</a.css>; rel=preload; as=style".into()),
                ("Link".into(), "</b.js>; rel=preload; as=script".into()),
            ],
        ),
        (103, vec![("Link".into(), "</c.css>; rel=preload".into())]),
    ];
    assert_eq!(r.informational, hints);
    assert!(
        r.header("link").is_none(),
        "the final response has no Link of its own"
    );
}

#[tokio::test]
async fn truncated_body_closes_the_connection_early() {
    let up = Upstream::new()
        .route("/trunc", Reply::ok(vec![b'a'; 1000]).truncate_at(100))
        .start()
        .await;

    let r = curl_fetch(CurlHttp::Http1, &format!("{}/trunc", up.url()), &[]).await;

    assert_eq!(
        r.exit_code, 18,
        "curl: transfer closed with outstanding read data remaining"
    );
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.body, vec![b'a'; 100]);
}

#[tokio::test]
async fn status_routes_and_the_fallback() {
    let up = Upstream::new()
        .route("/status", Reply::status(404))
        .route("/teapot", Reply::status(418).body("short and stout"))
        .fallback(Reply::status(410))
        .start()
        .await;

    let missing = curl_fetch(CurlHttp::Http1, &format!("{}/status", up.url()), &[]).await;
    let teapot = curl_fetch(CurlHttp::Http1, &format!("{}/teapot?x=1", up.url()), &[]).await;
    let gone = curl_fetch(CurlHttp::Http1, &format!("{}/elsewhere", up.url()), &[]).await;

    assert_eq!(
        (missing.status, missing.header("content-length")),
        (404, Some("0"))
    );
    assert_eq!(
        (teapot.status, teapot.body.as_slice()),
        (418, &b"short and stout"[..])
    );
    assert_eq!(gone.status, 410);
    assert_eq!(up.requests_for("/teapot").len(), 1);
    assert_eq!(up.requests_for("/teapot?x=1").len(), 1);
    assert_eq!(up.requests_for("/teapot?x=2").len(), 0);
}

#[tokio::test]
async fn closed_port_refuses_connections() {
    let addr = Upstream::closed_port();

    let err = TcpStream::connect(addr)
        .await
        .expect_err("nothing listens there");
    let r = curl_fetch(CurlHttp::Http1, &format!("http://{addr}/"), &[]).await;

    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(r.exit_code, 7, "curl: failed to connect");
}

// ===== The fake upstream, through a raw TcpStream =====

#[tokio::test]
async fn request_headers_are_recorded_as_received() {
    let up = Upstream::new().route("/", Reply::ok("ok")).start().await;
    let mut conn = RawConn::open(up.addr()).await;

    conn.send(b"GET /?q=1 HTTP/1.1\r\nHost: example.test\r\nX-Mixed-Case: A\r\nCookie: a=1\r\ncookie: b=2\r\nX-Empty:\r\n\r\n").await;
    let r = conn.read_response().await.expect("a response");

    assert_eq!((r.status(), r.body.as_slice()), (200, &b"ok"[..]));
    let req = &up.requests()[0];
    assert_eq!(req.target, "/?q=1");
    assert_eq!(req.path(), "/");
    let headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        headers,
        [
            ("Host", &b"example.test"[..]),
            ("X-Mixed-Case", b"A"),
            ("Cookie", b"a=1"),
            ("cookie", b"b=2"),
            ("X-Empty", b"")
        ]
    );
    assert_eq!(req.header_all("cookie"), ["a=1", "b=2"]);
}

#[tokio::test]
async fn keep_alive_until_connection_close() {
    let up = Upstream::new().route("/", Reply::ok("ok")).start().await;
    let mut conn = RawConn::open(up.addr()).await;

    // Two pipelined requests, then one asking to close.
    conn.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let first = conn.read_response().await.expect("a response");
    let head = conn.read_head().await.expect("a response head");
    conn.send(b"GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    let last = conn.read_response().await.expect("a response");

    assert_eq!(
        (first.status(), first.body.as_slice()),
        (404, &b""[..]),
        "no route for /1: fallback 404"
    );
    assert_eq!(
        (head.status(), head.header("content-length")),
        (404, Some("0"))
    );
    assert_eq!(last.header("connection"), Some("close"));
    assert!(conn.closed().await, "closed after Connection: close");
    assert_eq!(up.connections_accepted(), 1);
    assert_eq!(
        up.requests()
            .iter()
            .map(|r| r.target.as_str())
            .collect::<Vec<_>>(),
        ["/1", "/2", "/3"]
    );
    assert!(
        up.wait_until(SHORT, |up| up.connections_closed() == 1)
            .await
    );
}

#[tokio::test]
async fn head_and_bodiless_statuses_send_no_body_bytes() {
    let up = Upstream::new()
        .route("/page", Reply::ok("0123456789"))
        .route("/empty", Reply::status(204))
        .route("/same", Reply::status(304).body("ignored"))
        .start()
        .await;
    let mut conn = RawConn::open(up.addr()).await;

    conn.send(b"HEAD /page HTTP/1.1\r\nHost: h\r\n\r\nGET /empty HTTP/1.1\r\nHost: h\r\n\r\nGET /same HTTP/1.1\r\nHost: h\r\n\r\nGET /page HTTP/1.1\r\nHost: h\r\n\r\n").await;
    // Each head must follow the previous one directly, so any body byte would break the parse.
    let head = conn.read_head().await.expect("a response head");
    let no_content = conn.read_head().await.expect("a response head");
    let not_modified = conn.read_head().await.expect("a response head");
    let get = conn.read_response().await.expect("a response");

    assert_eq!(
        (head.status(), head.header("content-length")),
        (200, Some("10"))
    );
    assert_eq!(
        (no_content.status(), no_content.header("content-length")),
        (204, None)
    );
    assert_eq!(
        (not_modified.status(), not_modified.header("content-length")),
        (304, None)
    );
    assert_eq!(
        (get.status(), get.body.as_slice()),
        (200, &b"0123456789"[..])
    );
}

#[tokio::test]
async fn hold_sends_the_103_then_waits_for_the_gate() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route(
            "/hinted",
            Reply::html("x")
                .early_hints(&["</a.css>; rel=preload; as=style"])
                .hold(gate.clone()),
        )
        .start()
        .await;
    let mut conn = RawConn::open(up.addr()).await;

    conn.send(b"GET /hinted HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let hint = conn.read_head().await.expect("a response head");
    assert_eq!(
        hint.head,
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; as=style"
    );
    assert!(
        conn.quiet(QUIET).await,
        "the final response waits for the gate"
    );
    assert!(!gate.opened());

    gate.open();
    let fin = conn.read_response().await.expect("a response");

    assert_eq!((fin.status(), fin.body.as_slice()), (200, &b"x"[..]));
    assert!(gate.opened());
}

#[tokio::test]
async fn delay_body_sends_the_head_then_waits_for_the_gate() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("body").delay_body(gate.clone()))
        .start()
        .await;
    let mut conn = RawConn::open(up.addr()).await;

    conn.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let head = conn.read_head().await.expect("a response head");
    assert_eq!(
        (head.status(), head.header("content-length")),
        (200, Some("4"))
    );
    assert!(conn.quiet(QUIET).await, "the body waits for the gate");

    gate.open();
    assert!(conn.fill().await, "connection closed early");
    assert_eq!(conn.buf, b"body");
}

#[tokio::test]
async fn a_held_response_is_counted_aborted_when_the_peer_leaves() {
    let up = Upstream::new()
        .route("/held", Reply::ok("x").hold(Gate::new()))
        .route("/never", Reply::ok("x").never_respond())
        .start()
        .await;

    for path in ["/held", "/never"] {
        let mut conn = RawConn::open(up.addr()).await;
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await;
        assert!(up.wait_for_requests(path, 1, SHORT).await);
        assert!(conn.quiet(QUIET).await, "{path}: no response");
        drop(conn);
    }

    assert!(
        up.wait_until(SHORT, |up| up.responses_aborted() == 2
            && up.connections_closed() == 2)
            .await
    );
}

#[tokio::test]
async fn reply_headers_are_sent_verbatim_including_hop_by_hop_ones() {
    let reply = Reply::ok("x")
        .header("Connection", "x-custom")
        .header("X-Custom", "1")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("Upgrade", "h2c")
        .header("Set-Cookie", "a=1")
        .header("Set-Cookie", "b=2");
    let up = Upstream::new().route("/", reply).start().await;
    let mut conn = RawConn::open(up.addr()).await;

    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let first = conn.read_response().await.expect("a response");
    let second = conn.read_response().await.expect("a response");

    assert_eq!(
        first.head,
        "HTTP/1.1 200 OK\r\nConnection: x-custom\r\nX-Custom: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 1"
    );
    assert_eq!(second.status(), 200, "still kept alive");
}

#[tokio::test]
async fn raw_and_close_delimited_replies() {
    let up = Upstream::new()
        .route("/raw", Reply::raw("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"))
        .route("/eof", Reply::ok("until close").close_delimited())
        .start()
        .await;

    let mut raw = RawConn::open(up.addr()).await;
    raw.send(b"GET /raw HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let malformed = raw.read_head().await.expect("a response head");
    let mut eof = RawConn::open(up.addr()).await;
    eof.send(b"GET /eof HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let head = eof.read_head().await.expect("a response head");
    while !eof.buf.ends_with(b"until close") {
        assert!(eof.fill().await, "connection closed early");
    }

    assert_eq!(malformed.head, "HTTP/1.1 200 OK\r\nBad Header");
    assert!(raw.closed().await);
    assert_eq!(
        (
            head.header("content-length"),
            head.header("transfer-encoding"),
            head.header("connection")
        ),
        (None, None, Some("close"))
    );
    eof.buf.clear();
    assert!(eof.closed().await);
}

#[tokio::test]
async fn malformed_and_oversized_request_heads_are_rejected() {
    let up = Upstream::new().route("/", Reply::ok("ok")).start().await;

    let mut bad = RawConn::open(up.addr()).await;
    bad.send(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n").await;
    let bad_response = bad.read_head().await.expect("a response head");
    let mut big = RawConn::open(up.addr()).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    big.send(huge.as_bytes()).await;
    let big_response = big.read_head().await.expect("a response head");

    assert_eq!(bad_response.status(), 400);
    assert_eq!(big_response.status(), 431);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn accept_then_close_accepts_and_closes() {
    let up = Upstream::accept_then_close().start().await;
    let mut conn = RawConn::open(up.addr()).await;

    // The write may or may not fail, depending on whether the close already arrived.
    let _ = conn
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;

    assert!(conn.closed().await);
    assert_eq!(up.connections_accepted(), 1);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn set_route_changes_the_reply_and_waits_are_bounded() {
    let up = Upstream::new().route("/", Reply::ok("one")).start().await;
    let url = format!("{}/", up.url());

    let first = curl_fetch(CurlHttp::Http1, &url, &[]).await;
    up.set_route("/", Reply::ok("two").link("</x.css>; rel=preload"));
    let second = curl_fetch(CurlHttp::Http1, &url, &[]).await;

    assert_eq!(
        (first.body.as_slice(), second.body.as_slice()),
        (&b"one"[..], &b"two"[..])
    );
    assert_eq!(second.header("link"), Some("</x.css>; rel=preload"));
    assert!(up.wait_for_requests("/", 2, SHORT).await);
    assert!(
        !up.wait_for_requests("/", 3, Duration::from_millis(50))
            .await
    );
}

#[tokio::test]
async fn dropping_the_upstream_stops_it() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/held", Reply::ok("x").hold(gate))
        .start()
        .await;
    let addr = up.addr();
    let mut conn = RawConn::open(addr).await;
    conn.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(up.wait_for_requests("/held", 1, SHORT).await);

    drop(up);

    assert!(conn.closed().await, "the held connection is closed");
    let refused = bounded("connect", TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn gate_releases_current_and_future_waiters() {
    let gate = Gate::new();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn({
                let gate = gate.clone();
                async move { gate.wait().await }
            })
        })
        .collect();

    gate.open();

    for waiter in waiters {
        bounded("a waiter", waiter).await.expect("waiter");
    }
    bounded("a late waiter", gate.wait()).await;
    assert!(gate.opened());
}

// ===== h2 client and nghttp against nghttpd (an independent HTTP/2 server) =====

/// `nghttpd` serving `/index.html` with pushes of `/a.css` and `/a.js`.
struct Nghttpd {
    addr: SocketAddr,
    _child: tokio::process::Child,
    _files: Vec<TempFile>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Nghttpd {
    async fn start(tls: bool) -> Nghttpd {
        let dir = TempDir(TempFile::new("htdocs").path.clone());
        std::fs::create_dir_all(&dir.0).expect("htdocs");
        std::fs::write(dir.0.join("index.html"), "<html>hi</html>").expect("index");
        std::fs::write(dir.0.join("a.css"), "body{}").expect("a.css");
        std::fs::write(dir.0.join("a.js"), "x();").expect("a.js");
        let mut files = Vec::new();
        if tls {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("self-signed certificate");
            files.push(TempFile::with_contents(
                "key.pem",
                cert.signing_key.serialize_pem().as_bytes(),
            ));
            files.push(TempFile::with_contents(
                "cert.pem",
                cert.cert.pem().as_bytes(),
            ));
        }
        // nghttpd cannot report a port it chose: take a free one, retrying if it is taken meanwhile.
        for _ in 0..3 {
            let addr = Upstream::free_port();
            let port = addr.port().to_string();
            let mut args = vec![
                "-a",
                "127.0.0.1",
                "-d",
                dir.0.to_str().expect("UTF-8"),
                "-p",
                "/index.html=/a.css,/a.js",
            ];
            if !tls {
                args.push("--no-tls");
            }
            args.push(&port);
            args.extend(files.iter().map(TempFile::path_str));
            let mut child = match tokio::process::Command::new("nghttpd")
                .args(&args)
                .kill_on_drop(true)
                .stdout(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) => panic!("nghttpd: {e} (apt-get install -y nghttp2-server)"),
            };
            // Bounded polling: nghttpd says nothing when it is ready.
            for _ in 0..250 {
                if TcpStream::connect(addr).await.is_ok() {
                    return Nghttpd {
                        addr,
                        _child: child,
                        _files: files,
                        _dir: dir,
                    };
                }
                if child.try_wait().expect("nghttpd status").is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("nghttpd did not start");
    }
}

#[tokio::test]
async fn h2_client_collects_pushes_from_nghttpd_in_wire_order() {
    let server = Nghttpd::start(false).await;
    let mut client = h2_connect(server.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/index.html", &[("accept", "text/html")]).await;

    assert_eq!(ex.status, 200);
    assert_eq!(ex.body, "<html>hi</html>");
    assert_eq!(
        ex.events,
        [
            Event::PushPromise("/a.css".into()),
            Event::PushPromise("/a.js".into()),
            Event::Response(StatusCode::OK)
        ]
    );
    assert_eq!(ex.pushed_paths(), ["/a.css", "/a.js"]);
    let css = ex.push("/a.css");
    assert!(css.completed(), "{css:?}");
    assert_eq!(
        (css.status, css.body.as_ref(), css.header("content-type")),
        (Some(StatusCode::OK), &b"body{}"[..], Some("text/css"))
    );
    assert_eq!(
        css.request_headers.get(":authority"),
        None,
        "pseudo-headers are in the URI"
    );
    assert_eq!(css.uri.authority().map(|a| a.as_str()), Some("localhost"));
    assert_eq!(ex.push("/a.js").body, "x();");
    assert_eq!(
        client.server_setting(0x3),
        Some(100),
        "nghttpd's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
}

#[tokio::test]
async fn h2_client_refuses_pushes_and_keeps_the_response() {
    let server = Nghttpd::start(false).await;
    let mut client = h2_connect(server.addr, &H2Options::default()).await;

    let req = Request::get("/index.html").body(()).expect("request");
    let ex = h2_request_refusing(&mut client, req, Bytes::new(), |_| true).await;

    assert_eq!(
        (ex.status, ex.body.as_ref()),
        (StatusCode::OK, &b"<html>hi</html>"[..])
    );
    assert_eq!(ex.pushed_paths(), ["/a.css", "/a.js"]);
    assert!(ex.pushes.iter().all(|p| p.refused && p.status.is_none()));
    // The connection is still usable after the resets.
    assert_eq!(h2_get(&mut client, "/a.css", &[]).await.body, "body{}");
}

#[tokio::test]
async fn h2_client_with_push_disabled_gets_no_promises() {
    let server = Nghttpd::start(false).await;
    let mut client = h2_connect(
        server.addr,
        &H2Options {
            enable_push: false,
            ..H2Options::default()
        },
    )
    .await;

    let ex = h2_get(&mut client, "/index.html", &[]).await;

    assert_eq!(ex.status, 200);
    assert!(ex.pushes.is_empty());
    assert_eq!(ex.events, [Event::Response(StatusCode::OK)]);
}

#[tokio::test]
async fn h2_client_and_alpn_over_tls() {
    let server = Nghttpd::start(true).await;

    let alpn = tls_alpn(server.addr, &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    let mut client = h2_connect(
        server.addr,
        &H2Options {
            tls: true,
            ..H2Options::default()
        },
    )
    .await;
    let ex = h2_get(&mut client, "/index.html", &[]).await;

    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(ex.status, 200);
    assert_eq!(ex.push("/a.css").uri.scheme_str(), Some("https"));
    assert_eq!(
        ex.events,
        [
            Event::PushPromise("/a.css".into()),
            Event::PushPromise("/a.js".into()),
            Event::Response(StatusCode::OK)
        ],
        "the wire tap reads frames under TLS too"
    );
}

#[tokio::test]
async fn nghttp_trace_of_nghttpd_parses_into_frames() {
    let server = Nghttpd::start(false).await;

    let out = nghttp(&["-nv", &format!("http://{}/index.html", server.addr)]).await;

    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.promised_paths(), ["/a.css", "/a.js"]);
    let on_13: Vec<&str> = out.frames_on(13).iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(on_13, ["PUSH_PROMISE", "PUSH_PROMISE", "HEADERS", "DATA"]);
    assert_eq!(out.frames_on(13)[2].header(":status"), Some("200"));
    assert_eq!(
        out.frames
            .iter()
            .filter(|f| f.kind == "PUSH_PROMISE")
            .map(|f| f.promised_stream_id)
            .collect::<Vec<_>>(),
        [Some(2), Some(4)]
    );
    assert_eq!(out.frames_on(2)[0].header("content-type"), Some("text/css"));
}

#[tokio::test]
async fn curl_over_h2_prior_knowledge() {
    let server = Nghttpd::start(false).await;

    let r = curl_fetch(
        CurlHttp::H2PriorKnowledge,
        &format!("http://{}/a.css", server.addr),
        &[],
    )
    .await;

    assert_eq!(
        (r.exit_code, r.version.as_str(), r.status),
        (0, "2", 200),
        "{}",
        r.stderr
    );
    assert_eq!(
        (r.header("content-type"), r.body.as_slice()),
        (Some("text/css"), &b"body{}"[..])
    );
}

// ===== h2 client and nghttp against a reference server (h2 crate, server side) =====

/// For `/`: a 103, a push of `/a.css` (completed), a push of `/b.js` (reset with CANCEL), the
/// response with a body and trailers, then GOAWAY. For `/late-push`: a promise after the response
/// HEADERS. For `/big`: 1 MiB pushed and 3 MiB of response. For `/held`: a push of `/a.css` whose
/// body never ends, reporting how the client reset it.
async fn reference_server() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<h2::Reason>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (resets, resets_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let resets = resets.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut pings = conn.ping_pong();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let push = |path: &str| {
                        Request::get(format!(
                            "http://{}{path}",
                            req.uri().authority().map_or("localhost", |a| a.as_str())
                        ))
                        .body(())
                        .expect("push request")
                    };
                    let hint = Response::builder()
                        .status(103)
                        .header("link", "</a.css>; rel=preload; as=style")
                        .body(())
                        .expect("103");
                    match req.uri().path() {
                        "/" => {
                            respond.send_informational(hint).expect("103");
                            let mut css = respond.push_request(push("/a.css")).expect("push a.css");
                            let mut js = respond.push_request(push("/b.js")).expect("push b.js");
                            let mut body = respond
                                .send_response(
                                    Response::builder()
                                        .status(200)
                                        .header("link", "</a.css>; rel=preload")
                                        .body(())
                                        .expect("200"),
                                    false,
                                )
                                .expect("response");
                            js.send_reset(h2::Reason::CANCEL);
                            let mut css_body = css
                                .send_response(
                                    Response::builder()
                                        .status(200)
                                        .header("content-type", "text/css")
                                        .body(())
                                        .expect("css"),
                                    false,
                                )
                                .expect("css response");
                            css_body
                                .send_data(Bytes::from_static(b"body{}"), true)
                                .expect("css body");
                            body.send_data(Bytes::from_static(b"<html>"), false)
                                .expect("body");
                            let mut trailers = HeaderMap::new();
                            trailers.insert("x-trailer", "done".parse().expect("value"));
                            body.send_trailers(trailers).expect("trailers");
                            conn.graceful_shutdown();
                        }
                        "/late-push" => {
                            // Wrong on purpose (RFC 9113 §8.4.1): the promise follows the HEADERS
                            // that could reference it. Our h2 writes a promise ahead of frames
                            // still queued on its stream (vendor/h2 PATCHES.md 1), so the HEADERS
                            // must be on the wire first: a PING queued after them is answered
                            // only once both were written.
                            let body = respond
                                .send_response(
                                    Response::builder().status(200).body(()).expect("200"),
                                    false,
                                )
                                .expect("response");
                            let css_req = push("/a.css");
                            let pings = pings.take();
                            tokio::spawn(async move {
                                let mut body = body;
                                if let Some(mut pings) = pings {
                                    let _ = pings.ping(h2::Ping::opaque()).await;
                                }
                                let mut css = respond.push_request(css_req).expect("push a.css");
                                let _ = css.send_response(
                                    Response::builder().status(200).body(()).expect("css"),
                                    true,
                                );
                                body.send_data(Bytes::from_static(b"late"), true)
                                    .expect("body");
                            });
                        }
                        "/big" => {
                            // Bodies past the initial windows: the client must give capacity back.
                            let mut asset = respond
                                .push_request(push("/big.bin"))
                                .expect("push big.bin");
                            let mut asset_body = asset
                                .send_response(
                                    Response::builder().status(200).body(()).expect("asset"),
                                    false,
                                )
                                .expect("asset response");
                            asset_body
                                .send_data(Bytes::from(generated_body(1 << 20)), true)
                                .expect("asset body");
                            let mut body = respond
                                .send_response(
                                    Response::builder().status(200).body(()).expect("200"),
                                    false,
                                )
                                .expect("response");
                            body.send_data(Bytes::from(generated_body(3 << 20)), true)
                                .expect("body");
                        }
                        "/held" => {
                            let mut css = respond.push_request(push("/a.css")).expect("push a.css");
                            let mut css_body = css
                                .send_response(
                                    Response::builder().status(200).body(()).expect("css"),
                                    false,
                                )
                                .expect("css response");
                            css_body
                                .send_data(Bytes::from_static(b"never ends"), false)
                                .expect("css body");
                            let resets = resets.clone();
                            tokio::spawn(async move {
                                if let Ok(reason) =
                                    std::future::poll_fn(|cx| css_body.poll_reset(cx)).await
                                {
                                    let _ = resets.send(reason);
                                }
                            });
                            let mut body = respond
                                .send_response(
                                    Response::builder().status(200).body(()).expect("200"),
                                    false,
                                )
                                .expect("response");
                            body.send_data(Bytes::from_static(b"page"), true)
                                .expect("body");
                        }
                        _ => {
                            let _ = respond.send_response(
                                Response::builder().status(404).body(()).expect("404"),
                                true,
                            );
                        }
                    }
                }
            });
        }
    });
    (addr, resets_rx, task)
}

#[tokio::test]
async fn h2_client_sees_103_pushes_resets_trailers_and_goaway_in_order() {
    let (addr, _resets, server) = reference_server().await;
    let mut client = h2_connect(addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(
        ex.events,
        // Our h2 writes promises ahead of frames still queued on their stream (vendor/h2
        // PATCHES.md 1), so the promises made after the 103 was queued overtake it.
        [
            Event::PushPromise("/a.css".into()),
            Event::PushPromise("/b.js".into()),
            Event::Informational(StatusCode::EARLY_HINTS),
            Event::Response(StatusCode::OK),
            Event::Trailers,
        ]
    );
    assert_eq!(
        ex.informational[0]
            .1
            .get("link")
            .map(|v| v.to_str().expect("ascii")),
        Some("</a.css>; rel=preload; as=style")
    );
    assert_eq!(
        (ex.status, ex.header("link"), ex.body.as_ref()),
        (
            StatusCode::OK,
            Some("</a.css>; rel=preload"),
            &b"<html>"[..]
        )
    );
    assert_eq!(
        ex.trailers
            .as_ref()
            .and_then(|t| t.get("x-trailer"))
            .map(|v| v.to_str().expect("ascii")),
        Some("done")
    );
    assert!(ex.error.is_none());
    assert!(ex.push("/a.css").completed());
    assert_eq!(ex.push("/a.css").body, "body{}");
    let js = ex.push("/b.js");
    assert_eq!((js.status, js.reset()), (None, Some(h2::Reason::CANCEL)));
    let frames = client.frames();
    assert!(frames.iter().any(|f| f.kind == "RST_STREAM"
        && f.stream_id == js.stream_id
        && f.error_code == Some(0x8)));
    assert!(
        client.closed().await.is_ok(),
        "GOAWAY(NO_ERROR) ends the connection cleanly"
    );
    server.abort();
}

#[tokio::test]
async fn h2_client_events_show_a_promise_sent_after_the_response_headers() {
    let (addr, _resets, server) = reference_server().await;
    let mut client = h2_connect(addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/late-push", &[]).await;

    assert_eq!(
        ex.events,
        [
            Event::Response(StatusCode::OK),
            Event::PushPromise("/a.css".into())
        ]
    );
    server.abort();
}

#[tokio::test]
async fn h2_client_reads_bodies_past_the_flow_control_windows() {
    let (addr, _resets, server) = reference_server().await;
    let mut client = h2_connect(addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/big", &[]).await;

    assert_eq!((ex.status, ex.body.len()), (StatusCode::OK, 3 << 20));
    assert_eq!(sha256_hex(&ex.body), generated_sha256(3 << 20));
    assert!(ex.push("/big.bin").completed());
    assert_eq!(
        sha256_hex(&ex.push("/big.bin").body),
        generated_sha256(1 << 20)
    );
    server.abort();
}

#[tokio::test]
async fn refusing_a_push_resets_it_with_cancel() {
    let (addr, mut resets, server) = reference_server().await;
    let mut client = h2_connect(addr, &H2Options::default()).await;

    let req = Request::get("/held").body(()).expect("request");
    let ex = h2_request_refusing(&mut client, req, Bytes::new(), |pushed| {
        pushed.uri().path() == "/a.css"
    })
    .await;

    assert_eq!(
        (ex.status, ex.body.as_ref()),
        (StatusCode::OK, &b"page"[..])
    );
    assert!(ex.push("/a.css").refused);
    assert_eq!(
        bounded("the server to see the reset", resets.recv()).await,
        Some(h2::Reason::CANCEL)
    );
    server.abort();
}

#[tokio::test]
async fn nghttp_trace_of_the_reference_server_parses_into_frames() {
    let (addr, _resets, server) = reference_server().await;

    let out = nghttp(&["-nv", &format!("http://{addr}/")]).await;

    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        kinds_on(&out.frames, 13),
        [
            "PUSH_PROMISE",
            "PUSH_PROMISE",
            "HEADERS",
            "HEADERS",
            "DATA",
            "HEADERS"
        ]
    );
    assert_eq!(out.frames_on(13)[2].header(":status"), Some("103"));
    assert!(
        out.frames
            .iter()
            .any(|f| f.kind == "RST_STREAM" && f.stream_id == 4 && f.error_code == Some(0x8))
    );
    assert!(
        out.frames
            .iter()
            .any(|f| f.kind == "GOAWAY" && f.error_code == Some(0))
    );
    server.abort();
}

fn kinds_on(frames: &[Frame], stream_id: u32) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| f.stream_id == stream_id)
        .map(|f| f.kind.as_str())
        .collect()
}

// ===== The nghttp trace parser, on captured traces =====

fn field(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

fn kinds_and_streams(frames: &[Frame]) -> Vec<(&str, u32)> {
    frames
        .iter()
        .map(|f| (f.kind.as_str(), f.stream_id))
        .collect()
}

#[test]
fn nghttp_parser_reads_a_trace_with_103_pushes_reset_trailers_and_goaway() {
    let frames = parse_nghttp_frames(REFERENCE_TRACE);

    assert_eq!(
        kinds_and_streams(&frames),
        [
            ("SETTINGS", 0),
            ("SETTINGS", 0),
            ("GOAWAY", 0),
            ("PING", 0),
            ("HEADERS", 13),
            ("PUSH_PROMISE", 13),
            ("HEADERS", 2),
            ("PUSH_PROMISE", 13),
            ("DATA", 2),
            ("RST_STREAM", 4),
            ("HEADERS", 13),
            ("DATA", 13),
            ("HEADERS", 13),
        ],
        "received frames only, in order"
    );
    assert_eq!(frames[1].flags, 0x1, "SETTINGS ACK");
    assert_eq!(
        (frames[2].last_stream_id, frames[2].error_code),
        (Some(2147483647), Some(0))
    );
    assert_eq!(
        frames[4].headers,
        [
            field(":status", "103"),
            field("link", "</a.css>; rel=preload; as=style")
        ]
    );
    assert_eq!(
        frames[5],
        Frame {
            kind: "PUSH_PROMISE".into(),
            length: 25,
            flags: 0x4,
            stream_id: 13,
            promised_stream_id: Some(2),
            headers: vec![
                field(":method", "GET"),
                field(":scheme", "http"),
                field(":authority", "127.0.0.1:46401"),
                field(":path", "/a.css")
            ],
            ..Frame::default()
        }
    );
    assert_eq!(
        frames[6].headers,
        [field(":status", "200"), field("content-type", "text/css")]
    );
    assert_eq!(
        (frames[7].promised_stream_id, frames[7].header(":path")),
        (Some(4), Some("/b.js"))
    );
    assert!(frames[8].end_stream());
    assert_eq!(frames[9].error_code, Some(0x8), "CANCEL");
    assert_eq!((frames[11].length, frames[11].end_stream()), (6, false));
    assert_eq!(
        (frames[12].headers.as_slice(), frames[12].end_stream()),
        (&[field("x-trailer", "done")][..], true)
    );
    assert!(frames.iter().all(|f| f.invalid.is_none()));
}

#[test]
fn nghttp_parser_reads_a_trace_of_nghttpd_pushing() {
    let frames = parse_nghttp_frames(NGHTTPD_TRACE);

    assert_eq!(
        kinds_and_streams(&frames),
        [
            ("SETTINGS", 0),
            ("SETTINGS", 0),
            ("PUSH_PROMISE", 13),
            ("PUSH_PROMISE", 13),
            ("HEADERS", 13),
            ("HEADERS", 2),
            ("HEADERS", 4),
            ("DATA", 13),
            ("DATA", 2),
            ("DATA", 4),
        ]
    );
    assert_eq!(frames[0].settings, [(0x3, 100)]);
    assert_eq!(
        frames
            .iter()
            .filter_map(|f| f.promised_stream_id)
            .collect::<Vec<_>>(),
        [2, 4]
    );
    assert_eq!(frames[3].header(":path"), Some("/a.js"));
    assert_eq!(frames[4].header(":status"), Some("200"));
    assert_eq!(frames[4].header("content-type"), Some("text/html"));
    assert_eq!(frames[4].headers.len(), 7);
    assert_eq!(frames[6].header("content-type"), Some("text/javascript"));
}

#[test]
fn nghttp_parser_handles_colour_sensitive_fields_and_invalid_frames() {
    // Lines in the formats of nghttp2's src/app_helper.cc that the captured traces lack.
    let trace = "\x1b[33m[  0.010]\x1b[0m recv (stream_id=1, sensitive) authorization: secret\n\
                 [  0.010] recv (stream_id=1) :status: 200\n\
                 [  0.010] recv (stream_id=1) x-colon: a: b\n\
                 [  0.010] recv \x1b[1;36mHEADERS\x1b[0m frame <length=20, flags=0x04, stream_id=1>\n\
                 \x20         ; END_HEADERS\n\
                 [  0.011] recv (stream_id=1, length=5, srecv=5, crecv=5) DATA\n\
                 [  0.012] [INVALID; status=PROTOCOL_ERROR] recv DATA frame <length=5, flags=0x00, stream_id=3>\n\
                 [  0.013] recv WINDOW_UPDATE frame <length=4, flags=0x00, stream_id=0>\n\
                 \x20         (window_size_increment=1000)\n\
                 [  0.014] recv RST_STREAM frame <length=4, flags=0x00, stream_id=1>\n\
                 \x20         (error_code=INTERNAL_ERROR(0x02))\n";

    let frames = parse_nghttp_frames(trace);

    assert_eq!(
        kinds_and_streams(&frames),
        [
            ("HEADERS", 1),
            ("DATA", 3),
            ("WINDOW_UPDATE", 0),
            ("RST_STREAM", 1)
        ]
    );
    assert_eq!(
        frames[0].headers,
        [
            field("authorization", "secret"),
            field(":status", "200"),
            field("x-colon", "a: b")
        ]
    );
    assert_eq!(frames[1].invalid.as_deref(), Some("PROTOCOL_ERROR"));
    assert_eq!(frames[3].error_code, Some(0x2));
}

/// `nghttp -nv http://127.0.0.1:46401/` (nghttp2 1.52.0, Debian 12) against `reference_server`.
const REFERENCE_TRACE: &str = r#"[  0.000] Connected
[  0.000] send SETTINGS frame <length=12, flags=0x00, stream_id=0>
          (niv=2)
          [SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]
          [SETTINGS_INITIAL_WINDOW_SIZE(0x04):65535]
[  0.000] send PRIORITY frame <length=5, flags=0x00, stream_id=3>
          (dep_stream_id=0, weight=201, exclusive=0)
[  0.000] send PRIORITY frame <length=5, flags=0x00, stream_id=5>
          (dep_stream_id=0, weight=101, exclusive=0)
[  0.000] send PRIORITY frame <length=5, flags=0x00, stream_id=7>
          (dep_stream_id=0, weight=1, exclusive=0)
[  0.000] send PRIORITY frame <length=5, flags=0x00, stream_id=9>
          (dep_stream_id=7, weight=1, exclusive=0)
[  0.000] send PRIORITY frame <length=5, flags=0x00, stream_id=11>
          (dep_stream_id=3, weight=1, exclusive=0)
[  0.000] send HEADERS frame <length=39, flags=0x25, stream_id=13>
          ; END_STREAM | END_HEADERS | PRIORITY
          (padlen=0, dep_stream_id=11, weight=16, exclusive=0)
          ; Open new stream
          :method: GET
          :path: /
          :scheme: http
          :authority: 127.0.0.1:46401
          accept: */*
          accept-encoding: gzip, deflate
          user-agent: nghttp2/1.52.0
[  0.001] recv SETTINGS frame <length=0, flags=0x00, stream_id=0>
          (niv=0)
[  0.001] send SETTINGS frame <length=0, flags=0x01, stream_id=0>
          ; ACK
          (niv=0)
[  0.001] recv SETTINGS frame <length=0, flags=0x01, stream_id=0>
          ; ACK
          (niv=0)
[  0.044] recv GOAWAY frame <length=8, flags=0x00, stream_id=0>
          (last_stream_id=2147483647, error_code=NO_ERROR(0x00), opaque_data(0)=[])
[  0.044] recv PING frame <length=8, flags=0x00, stream_id=0>
          (opaque_data=0b7ba2f08b9bfe54)
[  0.044] recv (stream_id=13) :status: 103
[  0.044] recv (stream_id=13) link: </a.css>; rel=preload; as=style
[  0.044] recv HEADERS frame <length=31, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0)
          ; First response header
[  0.044] recv (stream_id=13) :method: GET
[  0.044] recv (stream_id=13) :scheme: http
[  0.044] recv (stream_id=13) :authority: 127.0.0.1:46401
[  0.044] recv (stream_id=13) :path: /a.css
[  0.044] recv PUSH_PROMISE frame <length=25, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0, promised_stream_id=2)
[  0.044] recv (stream_id=2) :status: 200
[  0.044] recv (stream_id=2) content-type: text/css
[  0.044] recv HEADERS frame <length=9, flags=0x04, stream_id=2>
          ; END_HEADERS
          (padlen=0)
          ; First push response header
[  0.044] recv (stream_id=13) :method: GET
[  0.044] recv (stream_id=13) :scheme: http
[  0.044] recv (stream_id=13) :authority: 127.0.0.1:46401
[  0.044] recv (stream_id=13) :path: /b.js
[  0.044] recv PUSH_PROMISE frame <length=13, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0, promised_stream_id=4)
[  0.044] recv DATA frame <length=6, flags=0x01, stream_id=2>
          ; END_STREAM
[  0.044] recv RST_STREAM frame <length=4, flags=0x00, stream_id=4>
          (error_code=CANCEL(0x08))
[  0.044] recv (stream_id=13) :status: 200
[  0.044] recv (stream_id=13) link: </a.css>; rel=preload
[  0.044] recv HEADERS frame <length=20, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0)
[  0.044] recv DATA frame <length=6, flags=0x00, stream_id=13>
[  0.044] recv (stream_id=13) x-trailer: done
[  0.044] recv HEADERS frame <length=13, flags=0x05, stream_id=13>
          ; END_STREAM | END_HEADERS
          (padlen=0)
[  0.044] send GOAWAY frame <length=8, flags=0x00, stream_id=0>
          (last_stream_id=4, error_code=NO_ERROR(0x00), opaque_data(0)=[])
"#;

/// `nghttp -nv http://127.0.0.1:18443/index.html` (nghttp2 1.52.0) against
/// `nghttpd --no-tls -p '/index.html=/a.css,/a.js'`.
const NGHTTPD_TRACE: &str = r#"[  0.005] Connected
[  0.005] recv SETTINGS frame <length=6, flags=0x00, stream_id=0>
          (niv=1)
          [SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]
[  0.005] send SETTINGS frame <length=12, flags=0x00, stream_id=0>
          (niv=2)
          [SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]
          [SETTINGS_INITIAL_WINDOW_SIZE(0x04):65535]
[  0.005] send SETTINGS frame <length=0, flags=0x01, stream_id=0>
          ; ACK
          (niv=0)
[  0.005] send PRIORITY frame <length=5, flags=0x00, stream_id=3>
          (dep_stream_id=0, weight=201, exclusive=0)
[  0.005] send PRIORITY frame <length=5, flags=0x00, stream_id=5>
          (dep_stream_id=0, weight=101, exclusive=0)
[  0.005] send PRIORITY frame <length=5, flags=0x00, stream_id=7>
          (dep_stream_id=0, weight=1, exclusive=0)
[  0.005] send PRIORITY frame <length=5, flags=0x00, stream_id=9>
          (dep_stream_id=7, weight=1, exclusive=0)
[  0.005] send PRIORITY frame <length=5, flags=0x00, stream_id=11>
          (dep_stream_id=3, weight=1, exclusive=0)
[  0.006] send HEADERS frame <length=39, flags=0x25, stream_id=13>
          ; END_STREAM | END_HEADERS | PRIORITY
          (padlen=0, dep_stream_id=11, weight=16, exclusive=0)
          ; Open new stream
          :method: GET
          :path: /index.html
          :scheme: http
          :authority: 127.0.0.1:18443
          accept: */*
          accept-encoding: gzip, deflate
          user-agent: nghttp2/1.52.0
[  0.017] recv SETTINGS frame <length=0, flags=0x01, stream_id=0>
          ; ACK
          (niv=0)
[  0.017] recv (stream_id=13) :method: GET
[  0.017] recv (stream_id=13) :path: /a.css
[  0.017] recv (stream_id=13) :scheme: http
[  0.017] recv (stream_id=13) :authority: 127.0.0.1:18443
[  0.017] recv PUSH_PROMISE frame <length=25, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0, promised_stream_id=2)
[  0.017] recv (stream_id=13) :method: GET
[  0.017] recv (stream_id=13) :path: /a.js
[  0.017] recv (stream_id=13) :scheme: http
[  0.017] recv (stream_id=13) :authority: 127.0.0.1:18443
[  0.017] recv PUSH_PROMISE frame <length=13, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0, promised_stream_id=4)
[  0.017] recv (stream_id=13) :status: 200
[  0.017] recv (stream_id=13) server: nghttpd nghttp2/1.52.0
[  0.017] recv (stream_id=13) cache-control: max-age=3600
[  0.017] recv (stream_id=13) date: Sun, 22 Nov 2026 02:38:23 GMT
[  0.017] recv (stream_id=13) content-length: 15
[  0.017] recv (stream_id=13) last-modified: Sun, 22 Nov 2026 02:31:08 GMT
[  0.017] recv (stream_id=13) content-type: text/html
[  0.017] recv HEADERS frame <length=92, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0)
          ; First response header
[  0.017] recv (stream_id=2) :status: 200
[  0.017] recv (stream_id=2) server: nghttpd nghttp2/1.52.0
[  0.017] recv (stream_id=2) cache-control: max-age=3600
[  0.017] recv (stream_id=2) date: Sun, 22 Nov 2026 02:38:23 GMT
[  0.017] recv (stream_id=2) content-length: 6
[  0.017] recv (stream_id=2) last-modified: Sun, 22 Nov 2026 02:31:08 GMT
[  0.017] recv (stream_id=2) content-type: text/css
[  0.017] recv HEADERS frame <length=17, flags=0x04, stream_id=2>
          ; END_HEADERS
          (padlen=0)
          ; First push response header
[  0.017] recv (stream_id=4) :status: 200
[  0.017] recv (stream_id=4) server: nghttpd nghttp2/1.52.0
[  0.017] recv (stream_id=4) cache-control: max-age=3600
[  0.017] recv (stream_id=4) date: Sun, 22 Nov 2026 02:38:23 GMT
[  0.017] recv (stream_id=4) content-length: 4
[  0.017] recv (stream_id=4) last-modified: Sun, 22 Nov 2026 02:31:08 GMT
[  0.017] recv (stream_id=4) content-type: text/javascript
[  0.017] recv HEADERS frame <length=22, flags=0x04, stream_id=4>
          ; END_HEADERS
          (padlen=0)
          ; First push response header
[  0.017] recv DATA frame <length=15, flags=0x01, stream_id=13>
          ; END_STREAM
[  0.017] recv DATA frame <length=6, flags=0x01, stream_id=2>
          ; END_STREAM
[  0.017] recv DATA frame <length=4, flags=0x01, stream_id=4>
          ; END_STREAM
[  0.017] send GOAWAY frame <length=8, flags=0x00, stream_id=0>
          (last_stream_id=4, error_code=NO_ERROR(0x00), opaque_data(0)=[])
"#;
