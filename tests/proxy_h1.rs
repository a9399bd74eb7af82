//! The HTTP/1.1 front end end to end (SPEC §3, §8): curl and raw sockets, cleartext and TLS,
//! ALPN, keep-alive, connection-specific fields, bad and slow request heads, upstream failures,
//! and the cleartext port serving both HTTP/1.1 and h2c.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{client::*, proxy::*, raw::*, upstream::*};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n").into_bytes()
}

// ===== curl =====

/// GET (1 MiB generated), HEAD and POST (1 MiB to /echo) through curl over HTTP/1.1, bodies
/// compared by sha256 at both ends; returns the upstream for further checks.
async fn curl_get_head_post(tls: bool) -> RunningUpstream {
    let size = 1024 * 1024;
    let up = Upstream::new()
        .route("/gen", Reply::generated(size))
        .route("/echo", Reply::echo())
        .start()
        .await;
    let proxy = if tls {
        Proxy::start_tls(up.addr(), |_| {}).await
    } else {
        Proxy::start(up.addr(), |_| {}).await
    };
    let base = proxy.url(if tls { "https" } else { "http" });
    let data: Vec<u8> = (0..size as u32 + 5).map(|i| (i * 7 % 253) as u8).collect();
    let file = TempFile::with_contents("post", &data);

    let get = curl_fetch(CurlHttp::Http1, &format!("{base}/gen"), &[]).await;
    let head = curl_fetch(CurlHttp::Http1, &format!("{base}/gen"), &["--head"]).await;
    let post = curl_fetch(
        CurlHttp::Http1,
        &format!("{base}/echo"),
        &["--data-binary", &format!("@{}", file.path_str())],
    )
    .await;

    assert_eq!((get.exit_code, get.status), (0, 200), "{}", get.stderr);
    assert_eq!(get.version, "1.1");
    assert_eq!(sha256_hex(&get.body), generated_sha256(size));
    assert_eq!((head.exit_code, head.status), (0, 200), "{}", head.stderr);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(up.requests_for("/gen")[1].method, "HEAD");
    assert_eq!((post.exit_code, post.status), (0, 200), "{}", post.stderr);
    let sent = sha256_hex(&data);
    assert_eq!(up.requests_for("/echo")[0].body_sha256, sent);
    assert_eq!(post.header("x-body-sha256"), Some(sent.as_str()));
    assert_eq!(sha256_hex(&post.body), sent);
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_get_head_and_post_over_cleartext() {
    let up = curl_get_head_post(false).await;
    assert_eq!(
        up.requests_for("/gen")[0]
            .header("x-forwarded-proto")
            .as_deref(),
        Some("http")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_get_head_and_post_over_tls() {
    let up = curl_get_head_post(true).await;
    assert_eq!(
        up.requests_for("/gen")[0]
            .header("x-forwarded-proto")
            .as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let up = Upstream::new()
        .route("/a", Reply::ok("first"))
        .route("/b", Reply::ok("second"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(&get("/a")).await;
    let a = conn.read_response().await.expect("first response");
    conn.send(&get("/b")).await;
    let b = conn
        .read_response()
        .await
        .expect("second response on the same connection");

    assert_eq!((a.status(), a.body.as_slice()), (200, &b"first"[..]));
    assert_eq!((b.status(), b.body.as_slice()), (200, &b"second"[..]));
    assert_ne!(a.header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_is_answered_and_its_connection_closed() {
    let up = Upstream::new().route("/", Reply::ok("old")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(b"GET / HTTP/1.0\r\nHost: example.test\r\n\r\n")
        .await;
    let r = conn.read_response().await.expect("response");

    assert_eq!((r.status(), r.body.as_slice()), (200, &b"old"[..]));
    assert!(conn.closed().await, "HTTP/1.0 without keep-alive closes");
    assert_eq!(up.requests()[0].version, "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reuses_its_tls_connection() {
    let up = Upstream::new()
        .route("/a", Reply::ok("first"))
        .route("/b", Reply::ok("second"))
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let base = proxy.url("https");

    let out = curl(&[
        "-sS",
        "-k",
        "-v",
        "--http1.1",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &format!("{base}/a"),
        &format!("{base}/b"),
    ])
    .await;

    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("Re-using existing connection"),
        "{}",
        out.stderr
    );
    assert_eq!(up.requests().len(), 2);
}

// ===== TLS and ALPN =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_selects_h2_when_offered_and_http1_otherwise() {
    let up = Upstream::new().start().await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;

    let both = tls_alpn(proxy.addr, &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    let http1 = tls_alpn(proxy.addr, &[b"http/1.1"])
        .await
        .expect("handshake");
    let h2 = tls_alpn(proxy.addr, &[b"h2"]).await.expect("handshake");

    assert_eq!(both.as_deref(), Some(&b"h2"[..]));
    assert_eq!(http1.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h2.as_deref(), Some(&b"h2"[..]));
}

// ===== Header rules =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_request_fields_never_reach_the_upstream() {
    let up = Upstream::new().route("/h", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(
        b"GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: close, x-secret\r\n\
          X-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\n\
          HTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    let r = conn.read_response().await.expect("response");

    assert_eq!(r.status(), 200);
    let req = &up.requests_for("/h")[0];
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "http2-settings",
    ] {
        assert!(
            !req.has_header(name),
            "{name} reached the upstream: {req:?}"
        );
    }
    for value in req.header_all("connection") {
        assert!(
            !value.contains("x-secret") && !value.contains("close"),
            "the client's Connection reached the upstream: {req:?}"
        );
    }
    assert_eq!(req.header_all("x-kept"), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Issue 11: an upgrade is passed on (never a silent plain GET); a backend that answers it with an
/// ordinary response has that response forwarded without its connection-specific fields.
async fn upgrade_request_reaches_the_upstream_and_a_refusal_is_a_plain_response() {
    let up = Upstream::new().route("/h", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(
        b"GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: upgrade\r\n\
          Upgrade: websocket\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    let r = conn.read_response().await.expect("response");

    assert_eq!((r.status(), r.body.as_slice()), (200, &b"x"[..]));
    assert!(r.header("upgrade").is_none(), "{r:?}");
    let req = &up.requests_for("/h")[0];
    assert_eq!(req.header_all("upgrade"), ["websocket"], "{req:?}");
    assert_eq!(req.header_all("connection"), ["upgrade"], "{req:?}");
    assert_eq!(req.header_all("x-kept"), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_upgrade_to_h2c_is_answered_over_http1() {
    let up = Upstream::new().route("/", Reply::ok("plain")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;

    // curl --http2 on cleartext sends `Upgrade: h2c` and `HTTP2-Settings` (RFC 7540 §3.2),
    // which RFC 9113 §3.1 deprecates: the answer is plain HTTP/1.1.
    let r = curl_fetch(CurlHttp::H2, &format!("{}/", proxy.url("http")), &[]).await;

    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
    assert_eq!(r.body, b"plain");
    let req = &up.requests()[0];
    assert!(!req.has_header("upgrade"), "{req:?}");
    assert!(!req.has_header("http2-settings"), "{req:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_survives_over_http1() {
    let up = Upstream::new().route("/h", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(b"GET /h HTTP/1.1\r\nHost: example.test\r\nTE: trailers\r\n\r\n")
        .await;
    let r = conn.read_response().await.expect("response");

    assert_eq!(r.status(), 200);
    assert_eq!(up.requests_for("/h")[0].header_all("te"), ["trailers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_response_fields_never_reach_the_client() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::ok("page")
                .header("Connection", "x-custom")
                .header("X-Custom", "1")
                .header("Keep-Alive", "timeout=5")
                .header("Proxy-Connection", "keep-alive")
                .header("Upgrade", "foo")
                .header("X-Kept", "yes")
                .link("</a.css>; rel=preload; as=style")
                .link("</b.js>; rel=preload; as=script"),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;

    let r = curl_fetch(CurlHttp::Http1, &format!("{}/", proxy.url("http")), &[]).await;

    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(r.body, b"page");
    for name in ["x-custom", "keep-alive", "proxy-connection", "upgrade"] {
        assert_eq!(
            r.header(name),
            None,
            "{name} reached the client: {:?}",
            r.headers
        );
    }
    for value in r.header_all("connection") {
        assert!(!value.contains("x-custom"), "{:?}", r.headers);
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(
        r.header_all("link"),
        [
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_over_http1() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(
        b"GET /?x=1 HTTP/1.1\r\nHost: example.test:8080\r\nX-Forwarded-For: 10.1.1.1\r\n\
          Cookie: a=1; b=2\r\n\r\n",
    )
    .await;
    let r = conn.read_response().await.expect("response");

    assert_eq!(r.status(), 200);
    let req = &up.requests()[0];
    assert_eq!(req.target, "/?x=1");
    assert_eq!(req.header_all("host"), ["example.test:8080"]);
    assert_eq!(req.header_all("x-forwarded-host"), ["example.test:8080"]);
    assert_eq!(req.header_all("x-forwarded-for"), ["10.1.1.1, 127.0.0.1"]);
    assert_eq!(req.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(req.header_all("cookie"), ["a=1; b=2"]);
}

// ===== Bad and slow request heads =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_is_400() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(b"GET / HTTP/1.1\r\n\r\n").await;
    let r = conn.read_response().await.expect("response");

    assert_eq!(r.status(), 400, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_kib_header_is_refused_and_other_connections_are_fine() {
    let up = Upstream::new().route("/", Reply::ok("fine")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut big = RawConn::open(proxy.addr).await;
    let mut other = RawConn::open(proxy.addr).await;

    let mut head = b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 70 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    // The proxy may stop reading (and close) before it has everything.
    let _ = big.stream.write_all(&head).await;
    let refused = big.read_response().await;

    if let Some(r) = refused {
        assert_eq!(r.status(), 431, "{r:?}");
    }
    assert!(big.closed().await, "the connection is closed");
    other.send(&get("/")).await;
    let r = other.read_response().await.expect("response");
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"fine"[..]));
    assert_eq!(
        up.requests().len(),
        1,
        "only the good request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_a_request_line_is_closed() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(b"GET /index.ht").await;

    assert!(conn.closed().await);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let up = Upstream::new().start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut conn = RawConn::open(proxy.addr).await;

    assert!(conn.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_trickling_a_head_is_closed_before_the_head_is_done() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut conn = RawConn::open(proxy.addr).await;
    let mut head = b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200));
    head.extend_from_slice(b"\r\n\r\n");

    // One byte every 50 ms: every byte arrives well within the idle timeout, but the whole head
    // would take ~12 s, 24 times the header deadline.
    let mut sent = 0;
    let closed = bounded("the proxy to close a trickling connection", async {
        for byte in &head {
            if conn.stream.write_all(&[*byte]).await.is_err() {
                return true;
            }
            sent += 1;
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), conn.stream.read(&mut probe))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // A 408 or 400 before the close is fine.
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        false
    })
    .await;

    assert!(closed, "the whole head ({} bytes) got through", head.len());
    assert!(sent < head.len());
    assert!(up.requests().is_empty());
}

// ===== Upstream failures =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let unreachable = Proxy::start(Upstream::closed_port(), |_| {}).await;
    let up = Upstream::new()
        .route("/never", Reply::ok("x").never_respond())
        .start()
        .await;
    let slow = Proxy::start(up.addr(), |c| {
        c.upstream.response_timeout = Duration::from_millis(300);
    })
    .await;

    let bad_gateway = curl_fetch(
        CurlHttp::Http1,
        &format!("{}/", unreachable.url("http")),
        &[],
    )
    .await;
    let timeout = curl_fetch(CurlHttp::Http1, &format!("{}/never", slow.url("http")), &[]).await;

    for (r, status) in [(&bad_gateway, 502), (&timeout, 504)] {
        assert_eq!((r.exit_code, r.status), (0, status), "{}", r.stderr);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{:?}",
            r.headers
        );
        assert!(!r.body.is_empty() && r.body.len() < 200, "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_body_makes_curl_fail() {
    let up = Upstream::new()
        .route("/cut", Reply::generated(1000).truncate_at(100))
        .route(
            "/cut-chunked",
            Reply::generated(1000).chunked().truncate_at(100),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;

    for path in ["/cut", "/cut-chunked"] {
        let r = curl_fetch(
            CurlHttp::Http1,
            &format!("{}{path}", proxy.url("http")),
            &[],
        )
        .await;

        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.exit_code, 18,
            "{path}: never ended as if complete; curl says {}",
            r.stderr
        );
        assert!(r.body.len() <= 100, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_body_closes_the_client_connection() {
    let up = Upstream::new()
        .route("/cut", Reply::generated(1000).truncate_at(100))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(&get("/cut")).await;
    let r = conn.read_response().await.expect("response head");

    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body.len() <= 100, "got {} bytes", r.body.len());
    assert!(conn.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_upstream_thinks_drops_the_upstream_request() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("late").hold(gate.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(&get("/slow")).await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    drop(conn);

    assert!(
        up.wait_until(TIMEOUT, |up| up.responses_aborted() == 1)
            .await,
        "the upstream request is still in flight after the client left"
    );
}

// ===== One port, two protocols =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleartext_port_serves_http1_and_h2c() {
    let up = Upstream::new().route("/", Reply::ok("both")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let opts = H2Options {
        enable_push: false,
        ..H2Options::default()
    };

    let http1 = curl_fetch(CurlHttp::Http1, &format!("{}/", proxy.url("http")), &[]).await;
    let mut client = h2_connect(proxy.addr, &opts).await;
    let h2 = h2_get(&mut client, "/", &[]).await;
    let curl_h2 = curl_fetch(
        CurlHttp::H2PriorKnowledge,
        &format!("{}/", proxy.url("http")),
        &[],
    )
    .await;

    assert_eq!((http1.version.as_str(), http1.status), ("1.1", 200));
    assert_eq!(http1.body, b"both");
    assert_eq!(
        (h2.status, h2.body.as_ref()),
        (StatusCode::OK, &b"both"[..])
    );
    assert_eq!((curl_h2.version.as_str(), curl_h2.status), ("2", 200));
    assert_eq!(up.requests().len(), 3);
}
