//! HTTP/2 proxying end to end (SPEC §3): bodies both ways, concurrency on one connection,
//! connection-specific fields, forwarding fields, upstream failures, hostile connections,
//! settings, idle timeout, independent clients (curl, nghttp) and graceful shutdown.
//!
//! Push is not the subject here: clients run with push disabled wherever a push could appear.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use http::{Method, Request, StatusCode};
use support::{client::*, proxy::*, raw_h2::*, upstream::*};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Body sizes that cross the interesting boundaries: empty, one byte, just past the default
/// HTTP/2 window (64 KiB), and bodies many windows long.
const SIZES: [u64; 5] = [0, 1, 64 * 1024 + 1, 1024 * 1024, 5 * 1024 * 1024];

fn no_push_tls() -> H2Options {
    H2Options {
        tls: true,
        ..H2Options::no_push()
    }
}

/// Deterministic noise (xorshift64*), so a failure can be reproduced.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn post(path: &str, body_len: usize) -> Request<()> {
    Request::post(path)
        .header("content-type", "application/octet-stream")
        .header("content-length", body_len.to_string())
        .body(())
        .expect("request")
}

/// Starts a GET on the connection without waiting for it, for tests that watch the connection
/// while a stream is open.
async fn start_get(client: &mut H2Client, path: &str) -> ResponseFuture {
    let uri = format!("http://localhost{path}");
    let sender = client.sender();
    *sender = bounded("a stream slot", sender.clone().ready())
        .await
        .expect("connection ready");
    let (response, _) = sender
        .send_request(Request::get(uri).body(()).expect("request"), true)
        .expect("send_request");
    response
}

/// Reads a response to its end: status and the whole body.
async fn finish(response: ResponseFuture) -> (StatusCode, Bytes) {
    let response = bounded("response headers", response)
        .await
        .expect("response headers");
    let status = response.status();
    (status, read_body(response.into_body()).await)
}

/// Reads a response body to its end, giving its window back as it goes.
async fn read_body(mut body: h2::RecvStream) -> Bytes {
    let mut out = BytesMut::new();
    while let Some(chunk) = bounded("response body", body.data()).await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

/// GET on a clone of the connection's handle, so that many can run at once.
async fn get_on(send: SendRequest<Bytes>, path: String) -> (String, StatusCode, Bytes) {
    let mut send = bounded("a stream slot", send.ready())
        .await
        .expect("connection ready");
    let (response, _) = send
        .send_request(
            Request::get(format!("http://localhost{path}"))
                .body(())
                .expect("request"),
            true,
        )
        .expect("send_request");
    let (status, body) = finish(response).await;
    (path, status, body)
}

/// Polls `cond` every few milliseconds until it holds, for events that have no notification
/// (a frame arriving on the client's wire tap). Bounded by [`TIMEOUT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn has_goaway(frames: &[Frame]) -> bool {
    frames.iter().any(|f| f.kind == "GOAWAY")
}

// ===== Bodies =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_of_every_size_reach_the_upstream_and_come_back_intact() {
    let up = Upstream::new().route("/echo", Reply::echo()).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    for (i, size) in SIZES.iter().enumerate() {
        let data = noise(*size as usize, i as u64 + 1);
        let sent_sha = sha256_hex(&data);

        let ex = h2_request(&mut client, post("/echo", data.len()), Bytes::from(data)).await;

        assert_eq!(ex.status, StatusCode::OK, "{size} bytes: {ex:?}");
        assert!(ex.error.is_none(), "{size} bytes: {ex:?}");
        let recorded = &up.requests_for("/echo")[i];
        assert_eq!(recorded.method, "POST");
        assert_eq!(recorded.body_len, *size, "upstream got the whole body");
        assert_eq!(recorded.body_sha256, sent_sha, "{size} bytes upstream");
        assert_eq!(ex.header("x-body-sha256"), Some(sent_sha.as_str()));
        assert_eq!(sha256_hex(&ex.body), sent_sha, "{size} bytes back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_without_content_length_is_streamed_intact() {
    let up = Upstream::new().route("/echo", Reply::echo()).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let data = noise(1024 * 1024 + 3, 7);
    let req = Request::post("/echo").body(()).expect("request");

    let ex = h2_request(&mut client, req, Bytes::from(data.clone())).await;

    assert_eq!(ex.status, StatusCode::OK, "{ex:?}");
    let recorded = &up.requests_for("/echo")[0];
    assert_eq!(recorded.body_len, data.len() as u64);
    assert_eq!(recorded.body_sha256, sha256_hex(&data));
    assert_eq!(sha256_hex(&ex.body), sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_bodies_of_every_size_arrive_intact() {
    let mut up = Upstream::new();
    for size in SIZES {
        up = up.route(&format!("/gen/{size}"), Reply::generated(size));
    }
    let up = up.start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    for size in SIZES {
        let ex = h2_get(&mut client, &format!("/gen/{size}"), &[]).await;

        assert_eq!(ex.status, StatusCode::OK, "{size}: {ex:?}");
        assert!(ex.error.is_none(), "{size}: {ex:?}");
        assert_eq!(ex.body.len() as u64, size);
        assert_eq!(sha256_hex(&ex.body), generated_sha256(size), "{size} bytes");
        assert_eq!(ex.header("content-length"), Some(size.to_string().as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upstream_body_arrives_intact() {
    let size = 3 * 1024 * 1024 + 17;
    let up = Upstream::new()
        .route("/chunked", Reply::generated(size).chunked())
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let ex = h2_get(&mut client, "/chunked", &[]).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert!(ex.error.is_none(), "{ex:?}");
    assert_eq!(sha256_hex(&ex.body), generated_sha256(size));
    assert_eq!(ex.header("transfer-encoding"), None);
}

/// The upstream client's framing (RFC 9112 §6.3) end to end: a body that ends when the backend
/// closes, and a chunked one with extensions and trailers, which reach the HTTP/2 client as
/// trailers; then the pool still serves a plain request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_and_chunked_bodies_with_trailers_arrive_whole() {
    let up = Upstream::new()
        .route(
            "/eof",
            Reply::ok("until the backend closes").close_delimited(),
        )
        .route(
            "/trailers",
            Reply::raw(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                 5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
            ),
        )
        .route("/ok", Reply::ok("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let eof = h2_get(&mut client, "/eof", &[]).await;
    let trailers = h2_get(&mut client, "/trailers", &[]).await;
    let ok = h2_get(&mut client, "/ok", &[]).await;

    assert_eq!(eof.status, StatusCode::OK);
    assert!(eof.error.is_none(), "{eof:?}");
    assert_eq!(&eof.body[..], b"until the backend closes");
    assert_eq!(trailers.status, StatusCode::OK);
    assert!(trailers.error.is_none(), "{trailers:?}");
    assert_eq!(&trailers.body[..], b"hello world");
    assert_eq!(
        trailers
            .trailers
            .as_ref()
            .and_then(|t| t.get("x-sum"))
            .map(|v| v.as_bytes()),
        Some(&b"11"[..]),
        "{trailers:?}"
    );
    assert_eq!((ok.status, &ok.body[..]), (StatusCode::OK, &b"fine"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_returns_the_headers_and_no_body() {
    let up = Upstream::new()
        .route("/big", Reply::generated(5000))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let req = Request::head("/big").body(()).expect("request");
    let ex = h2_request(&mut client, req, Bytes::new()).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.header("content-length"), Some("5000"));
    assert!(ex.body.is_empty(), "{ex:?}");
    assert!(ex.error.is_none(), "{ex:?}");
    let frames = client.frames();
    let on_stream: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.stream_id == ex.stream_id)
        .collect();
    assert!(
        on_stream.iter().all(|f| f.kind != "DATA" || f.length == 0),
        "no body bytes: {on_stream:?}"
    );
    assert_eq!(up.requests_for("/big")[0].method, "HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_intact_over_tls() {
    let size = 1024 * 1024;
    let up = Upstream::new()
        .route("/gen", Reply::generated(size))
        .route("/echo", Reply::echo())
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &no_push_tls()).await;
    let data = noise(size as usize + 1, 3);

    let get = h2_get(&mut client, "/gen", &[]).await;
    let echo = h2_request(
        &mut client,
        post("/echo", data.len()),
        Bytes::from(data.clone()),
    )
    .await;

    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(sha256_hex(&get.body), generated_sha256(size));
    assert_eq!(echo.status, StatusCode::OK);
    assert_eq!(up.requests_for("/echo")[0].body_sha256, sha256_hex(&data));
    assert_eq!(sha256_hex(&echo.body), sha256_hex(&data));
}

// ===== Concurrency =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_on_one_connection() {
    let gate = Gate::new();
    let size = |i: u64| 1000 + i * 997;
    let mut up = Upstream::new();
    for i in 0..100 {
        up = up.route(
            &format!("/c/{i}"),
            Reply::generated(size(i)).hold(gate.clone()),
        );
    }
    let up = up.start().await;
    // All 100 held at the upstream at once: more than the default share of one connection
    // (`upstream.max_connections_per_client`, tests/fairness.rs).
    let proxy = Proxy::start(up.addr(), |c| c.upstream.max_connections_per_client = 100).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        tasks.spawn(get_on(client.sender().clone(), format!("/c/{i}")));
    }
    // Every request is at the upstream at once before any is answered: they really are
    // concurrent on the one client connection.
    assert!(
        up.wait_until(TIMEOUT, |up| up.requests().len() == 100)
            .await,
        "only {} of 100 requests reached the upstream",
        up.requests().len()
    );
    gate.open();
    let mut done = 0;
    while let Some(joined) = bounded("100 responses", tasks.join_next()).await {
        let (path, status, body) = joined.expect("request task");
        let i: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(sha256_hex(&body), generated_sha256(size(i)), "{path}");
        done += 1;
    }
    assert_eq!(done, 100);
    assert_eq!(
        client
            .frames()
            .iter()
            .filter(|f| f.kind == "GOAWAY" || f.kind == "RST_STREAM")
            .count(),
        0
    );
}

// ===== Header rules =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_response_fields_never_reach_the_client() {
    let links = [
        "</a.css>; rel=preload; as=style",
        "<https://cdn.example/x.js>; rel=preload; as=script",
        "</b.js>; rel=preload; as=script; nopush, </c.png>; rel=preload; as=image",
    ];
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
                .link(links[0])
                .link(links[1])
                .link(links[2])
                .chunked(),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.body, "page");
    for name in [
        "connection",
        "x-custom",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
    ] {
        assert_eq!(ex.header(name), None, "{name} reached the client");
    }
    assert_eq!(ex.header("x-kept"), Some("yes"));
    assert_eq!(
        ex.header_all("link"),
        links,
        "Link fields unchanged, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_is_forwarded_to_the_upstream() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let ex = h2_get(&mut client, "/", &[("te", "trailers")]).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(up.requests()[0].header_all("te"), ["trailers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_and_joined_cookies_reach_the_upstream() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let opts = H2Options {
        authority: "example.test:8443".to_owned(),
        ..H2Options::no_push()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;

    let first = h2_get(
        &mut client,
        "/",
        &[
            ("x-forwarded-for", "10.1.1.1"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("cookie", "c=3"),
        ],
    )
    .await;
    let second = h2_get(&mut client, "/", &[]).await;

    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    let reqs = up.requests();
    let with_xff = &reqs[0];
    assert_eq!(with_xff.header_all("host"), ["example.test:8443"]);
    assert_eq!(
        with_xff.header_all("x-forwarded-for"),
        ["10.1.1.1, 127.0.0.1"]
    );
    assert_eq!(with_xff.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(
        with_xff.header_all("x-forwarded-host"),
        ["example.test:8443"]
    );
    assert_eq!(
        with_xff.header_all("cookie"),
        ["a=1; b=2; c=3"],
        "RFC 9113 §8.2.3: one field, joined with \"; \""
    );
    let plain = &reqs[1];
    assert_eq!(plain.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert!(!plain.has_header("cookie"));
    assert_eq!(plain.target, "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_over_tls_say_https() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let opts = H2Options {
        authority: "example.test:8443".to_owned(),
        ..no_push_tls()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;

    let ex = h2_get(&mut client, "/?q=1", &[]).await;

    assert_eq!(ex.status, StatusCode::OK);
    let req = &up.requests()[0];
    assert_eq!(req.target, "/?q=1");
    assert_eq!(req.header_all("host"), ["example.test:8443"]);
    assert_eq!(req.header_all("x-forwarded-proto"), ["https"]);
    assert_eq!(req.header_all("x-forwarded-host"), ["example.test:8443"]);
    assert_eq!(req.header_all("x-forwarded-for"), ["127.0.0.1"]);
}

// ===== Upstream failures =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_with_a_short_text_body() {
    let proxy = Proxy::start(Upstream::closed_port(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let first = h2_get(&mut client, "/", &[]).await;
    let second = h2_get(&mut client, "/again", &[]).await;

    for ex in [&first, &second] {
        assert_eq!(ex.status, StatusCode::BAD_GATEWAY);
        assert!(
            ex.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{ex:?}"
        );
        assert!(!ex.body.is_empty() && ex.body.len() < 200, "{ex:?}");
        assert!(ex.error.is_none(), "{ex:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_without_response_headers_in_time_is_504() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/never", Reply::ok("x").never_respond())
        .route("/held", Reply::ok("x").hold(gate.clone()))
        .route("/ok", Reply::ok("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.upstream.response_timeout = Duration::from_millis(300);
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let never = h2_get(&mut client, "/never", &[]).await;
    let held = h2_get(&mut client, "/held", &[]).await;
    let ok = h2_get(&mut client, "/ok", &[]).await;

    for ex in [&never, &held] {
        assert_eq!(ex.status, StatusCode::GATEWAY_TIMEOUT, "{ex:?}");
        assert!(
            ex.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain"))
        );
        assert!(!ex.body.is_empty() && ex.body.len() < 200, "{ex:?}");
    }
    assert_eq!(
        (ok.status, ok.body.as_ref()),
        (StatusCode::OK, &b"fine"[..])
    );
    assert!(!gate.opened());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_body_resets_the_stream_and_the_connection_lives_on() {
    let up = Upstream::new()
        .route("/cut", Reply::generated(1000).truncate_at(100))
        .route("/ok", Reply::ok("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let req = Request::get("/cut").body(()).expect("request");
    let cut = h2_try_request(&mut client, req, Bytes::new(), |_| false).await;
    let next = h2_get(&mut client, "/ok", &[]).await;

    // The response HEADERS reach the client unless the upstream fails before the connection
    // has written them: h2 then discards the queued frames with the reset (RFC 9113 §8.1 allows
    // a reset at any point). Either way the response never ends as if complete.
    match &cut {
        Ok(cut) => {
            assert_eq!(cut.status, StatusCode::OK);
            assert_eq!(
                cut.reset(),
                Some(h2::Reason::INTERNAL_ERROR),
                "never ended as if complete: {cut:?}"
            );
            assert!(cut.body.len() <= 100, "{cut:?}");
            assert_eq!(&cut.body[..], &generated_body(cut.body.len() as u64)[..]);
        }
        Err(err) => assert_eq!(err.reason(), Some(h2::Reason::INTERNAL_ERROR), "{err:?}"),
    }
    let frames = client.frames();
    let rst = frames
        .iter()
        .find(|f| f.kind == "RST_STREAM" && f.error_code == Some(0x2))
        .expect("the truncated response is reset with INTERNAL_ERROR");
    assert!(
        !frames
            .iter()
            .any(|f| f.stream_id == rst.stream_id && f.end_stream()),
        "no END_STREAM on the truncated response"
    );
    assert_eq!(
        (next.status, next.body.as_ref()),
        (StatusCode::OK, &b"fine"[..])
    );
    assert!(next.error.is_none());
}

/// The response HEADERS wait for the body's first bytes for one turn of the worker at most
/// (`first_bytes`, front/h2/stream.rs): a body held back by the upstream does not hold back the
/// head, which the client has before the body is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_reaches_the_client_while_the_upstream_holds_the_body() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/held", Reply::ok("later").delay_body(gate.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let response = start_get(&mut client, "/held").await;
    let response = bounded("response headers", response)
        .await
        .expect("the head arrives while the body is held");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!gate.opened());
    gate.open();
    assert_eq!(&read_body(response.into_body()).await[..], b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_while_the_upstream_thinks_drops_the_upstream_request() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("late").hold(gate.clone()))
        .route("/ok", Reply::ok("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let response = start_get(&mut client, "/slow").await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    // Dropping the only handle to the stream makes h2 send RST_STREAM(CANCEL).
    drop(response);

    // The proxy stops working for a stream the client gave up on (SPEC §8, rapid reset): the
    // upstream sees its request abandoned, long before `response_timeout` (30 s).
    assert!(
        up.wait_until(TIMEOUT, |up| up.responses_aborted() == 1)
            .await,
        "the upstream request is still in flight after the client reset its stream"
    );
    let ok = h2_get(&mut client, "/ok", &[]).await;
    assert_eq!(
        (ok.status, ok.body.as_ref()),
        (StatusCode::OK, &b"fine"[..])
    );
}

// ===== Hostile connections =====

/// Writes `bytes` and reads until the server closes; true when it did (EOF or reset).
async fn closed_after_sending(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut tcp = bounded("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    // The server may close before it has read everything; a failed write is fine.
    let _ = tcp.write_all(bytes).await;
    bounded("the server to close the connection", async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_connections_are_closed_and_other_connections_keep_working() {
    let up = Upstream::new().route("/", Reply::ok("fine")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut before = h2_connect(proxy.addr, &H2Options::no_push()).await;
    assert_eq!(h2_get(&mut before, "/", &[]).await.status, StatusCode::OK);

    let random = noise(4096, 42);
    let mut preface_then_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface_then_garbage.extend_from_slice(&noise(4096, 43));

    assert!(closed_after_sending(proxy.addr, &random).await);
    assert!(closed_after_sending(proxy.addr, &preface_then_garbage).await);

    let mut after = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let old = h2_get(&mut before, "/", &[]).await;
    let new = h2_get(&mut after, "/", &[]).await;
    assert_eq!(
        (old.status, old.body.as_ref()),
        (StatusCode::OK, &b"fine"[..])
    );
    assert_eq!(
        (new.status, new.body.as_ref()),
        (StatusCode::OK, &b"fine"[..])
    );
    assert!(up.requests().iter().all(|r| r.target == "/"));
    assert_eq!(up.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_upstream_thinks_drops_the_upstream_request() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("late").hold(gate.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let _response = start_get(&mut client, "/slow").await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    // The whole TCP connection goes away.
    drop(client);

    assert!(
        up.wait_until(TIMEOUT, |up| up.responses_aborted() == 1)
            .await,
        "the upstream request is still in flight after the client's connection closed"
    );
}

/// Rapid reset (CVE-2023-44487): a stream the client resets no longer counts against
/// MAX_CONCURRENT_STREAMS, so the work the proxy does for it must stop with it; otherwise a client
/// limited to 10 concurrent streams keeps any number of upstream requests busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_streams_leave_no_upstream_work_behind() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("late").hold(gate.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.server.max_concurrent_streams = 10).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    for i in 0..50 {
        let response = start_get(&mut client, "/slow").await;
        assert!(up.wait_for_requests("/slow", i + 1, TIMEOUT).await);
        // RST_STREAM(CANCEL).
        drop(response);
    }

    let settled = up
        .wait_until(TIMEOUT, |up| up.responses_aborted() == 50)
        .await;
    assert!(
        settled,
        "{} of 50 upstream requests still held for streams the client reset (max {} streams)",
        50 - up.responses_aborted(),
        client.server_setting(0x3).unwrap_or(0)
    );
    gate.open();
    assert_eq!(
        h2_get(&mut client, "/slow", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_reaching_the_upstream() {
    let up = Upstream::new().route("/", Reply::ok("fine")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut tcp = raw_h2(proxy.addr).await;

    // A 4000-byte field put in the dynamic table, then referenced 10,000 times by its one-byte
    // index (62): ~14 KB on the wire that decode to ~40 MB of header list.
    let mut block = hpack_get_root();
    block.extend(hpack_literal_indexed(b"x", &[b'a'; 4000]));
    block.extend(std::iter::repeat_n(0x80 | 62, 10_000));
    tcp.write_all(&frame(0x1, 0x5, 1, &block))
        .await
        .expect("write HEADERS");
    // A response (431), a RST_STREAM on stream 1, or a GOAWAY.
    let refusal = |kind: u8, stream: u32| matches!((kind, stream), (0x1 | 0x3, 1) | (0x7, _));
    let (frames, closed) =
        read_frames_until(&mut tcp, |kind, _, stream| refusal(kind, stream)).await;

    assert!(
        closed || frames.iter().any(|(k, _, s)| refusal(*k, *s)),
        "{frames:?}"
    );
    assert!(up.requests().is_empty(), "the bomb was forwarded");
    let mut other = h2_connect(proxy.addr, &H2Options::no_push()).await;
    assert_eq!(h2_get(&mut other, "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_closes_the_connection() {
    let up = Upstream::new().route("/", Reply::ok("fine")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let tcp = raw_h2(proxy.addr).await;
    let (mut reader, mut writer) = tcp.into_split();

    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block: up to
    // 32 MiB of small literal fields.
    let field = hpack_literal(b"x-pad", b"0123456789");
    let fill: Vec<u8> = field
        .iter()
        .copied()
        .cycle()
        .take(16_000 / field.len() * field.len())
        .collect();
    let writer_task = tokio::spawn(async move {
        let mut sent = 0usize;
        if writer
            .write_all(&frame(0x1, 0x1, 1, &hpack_get_root()))
            .await
            .is_err()
        {
            return sent;
        }
        let continuation = frame(0x9, 0, 1, &fill);
        while sent < 32 * 1024 * 1024 {
            if writer.write_all(&continuation).await.is_err() {
                break;
            }
            sent += continuation.len();
        }
        sent
    });
    let closed = bounded("the server to close a CONTINUATION flood", async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    let sent = bounded("the writer to stop", writer_task)
        .await
        .expect("writer");

    assert!(closed);
    assert!(sent < 32 * 1024 * 1024, "the whole 32 MiB flood was read");
    assert!(up.requests().is_empty());
    let mut other = h2_connect(proxy.addr, &H2Options::no_push()).await;
    assert_eq!(h2_get(&mut other, "/", &[]).await.status, StatusCode::OK);
}

// ===== Settings and timeouts =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_advertise_the_configured_max_concurrent_streams() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |c| c.server.max_concurrent_streams = 77).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    // A request makes sure the server's SETTINGS arrived.
    assert_eq!(h2_get(&mut client, "/", &[]).await.status, StatusCode::OK);

    assert_eq!(client.server_setting(0x3), Some(77));
}

/// Reads raw frames from a bare HTTP/2 connection that sends no request, until the server closes
/// it: (type, flags, stream id, payload). The client acknowledges the server's SETTINGS, and its
/// PINGs only when `ack_pings`.
async fn raw_frames_until_close(addr: SocketAddr, ack_pings: bool) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut tcp = bounded("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    // RFC 9113 §3.4: the preface, then our (empty) SETTINGS.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write preface");
    let mut acked = false;
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    bounded("the server to close the idle connection", async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..9 + len).collect();
                let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                if frame[3] == 0x4 && frame[4] & 0x1 == 0 && !acked {
                    acked = true;
                    let _ = tcp.write_all(b"\0\0\0\x04\x01\0\0\0\0").await;
                }
                if frame[3] == 0x6 && frame[4] & 0x1 == 0 && ack_pings {
                    let mut ack = b"\0\0\x08\x06\x01\0\0\0\0".to_vec();
                    ack.extend_from_slice(&frame[9..]);
                    let _ = tcp.write_all(&ack).await;
                }
                frames.push((
                    frame[3],
                    frame[4],
                    stream & 0x7fff_ffff,
                    frame[9..].to_vec(),
                ));
            }
        }
    })
    .await;
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_gets_goaway_and_is_closed() {
    let up = Upstream::new().start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.idle_timeout = Duration::from_millis(300);
    })
    .await;

    let frames = raw_frames_until_close(proxy.addr, true).await;

    let goaways: Vec<_> = frames.iter().filter(|(kind, ..)| *kind == 0x7).collect();
    assert!(
        !goaways.is_empty(),
        "no GOAWAY before the close: {frames:?}"
    );
    for goaway in goaways {
        let error_code = u32::from_be_bytes(goaway.3[4..8].try_into().unwrap());
        assert_eq!(error_code, 0, "GOAWAY NO_ERROR: {frames:?}");
    }
}

/// SPEC §2 `idle_timeout` counts from the end of the last stream: a connection that was busy for
/// longer than the timeout is not closed the moment it goes idle (the connection's one idle
/// timer is pushed back each time it goes idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_counts_from_the_end_of_the_last_stream() {
    let idle = Duration::from_millis(300);
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/warm", Reply::ok("warm"))
        .route("/slow", Reply::ok("late").hold(gate.clone()))
        .route("/ok", Reply::ok("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.server.idle_timeout = idle).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    // Idle, then busy: the timer has run once before the long stream.
    assert_eq!(
        h2_get(&mut client, "/warm", &[]).await.status,
        StatusCode::OK
    );
    let response = start_get(&mut client, "/slow").await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);
    // The scenario, not synchronisation: the stream stays open past the idle timeout.
    tokio::time::sleep(idle * 2).await;
    gate.open();
    assert_eq!(
        finish(response).await,
        (StatusCode::OK, Bytes::from("late"))
    );
    // Idle only since that response: the next request is served on the same connection.
    let ok = h2_get(&mut client, "/ok", &[]).await;
    assert_eq!(
        (ok.status, ok.body.as_ref(), ok.error.is_none()),
        (StatusCode::OK, &b"fine"[..], true)
    );
}

/// SPEC §2 `idle_timeout` and §8 (bounded idle connections): h2's graceful shutdown waits for the
/// client to acknowledge a PING before the final GOAWAY; a client that never does must not keep
/// the connection (and its task) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_even_if_the_client_ignores_the_goaway_ping() {
    let up = Upstream::new().start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.idle_timeout = Duration::from_millis(300);
    })
    .await;

    let frames = raw_frames_until_close(proxy.addr, false).await;

    assert!(
        frames.iter().any(|(kind, ..)| *kind == 0x7),
        "GOAWAY before the close: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_keeps_the_connection_from_idling_out() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("done").hold(gate.clone()))
        .start()
        .await;
    let idle = Duration::from_millis(300);
    let proxy = Proxy::start(up.addr(), |c| c.server.idle_timeout = idle).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let response = start_get(&mut client, "/slow").await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);
    // A negative check: several idle periods pass while the stream is open.
    tokio::time::sleep(idle * 3).await;
    assert!(!has_goaway(&client.frames()), "{:?}", client.frames());
    gate.open();
    let (status, body) = finish(response).await;

    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"done"[..]));
    // Once the stream is done the connection idles out. Keep a handle so that our own side
    // does not close it.
    let _keep = client.sender().clone();
    assert!(
        client.closed().await.is_ok(),
        "closed cleanly by the server"
    );
}

// ===== Independent clients =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_h2c_prior_knowledge() {
    let up = Upstream::new()
        .route("/page", Reply::html("<p>hi</p>"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;

    let r = curl_fetch(
        CurlHttp::H2PriorKnowledge,
        &format!("{}/page", proxy.url("http")),
        &[],
    )
    .await;

    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert_eq!(r.body, b"<p>hi</p>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls_negotiates_h2() {
    let size = 300_000;
    let up = Upstream::new()
        .route("/gen", Reply::generated(size))
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;

    let r = curl_fetch(CurlHttp::H2, &format!("{}/gen", proxy.url("https")), &[]).await;

    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert_eq!(sha256_hex(&r.body), generated_sha256(size));
    assert_eq!(
        up.requests()[0].header("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_gets_a_200_over_h2c_and_tls() {
    let up = Upstream::new()
        .route("/page", Reply::html("<p>hi</p>"))
        .start()
        .await;
    let clear = Proxy::start(up.addr(), |_| {}).await;
    let tls = Proxy::start_tls(up.addr(), |_| {}).await;

    for url in [
        format!("{}/page", clear.url("http")),
        format!("{}/page", tls.url("https")),
    ] {
        let out = nghttp(&["-nv", &url]).await;

        assert!(out.status.success(), "{url}: {}{}", out.stdout, out.stderr);
        let headers = out
            .frames
            .iter()
            .find(|f| f.kind == "HEADERS" && f.header(":status").is_some())
            .unwrap_or_else(|| panic!("{url}: no response HEADERS: {}", out.stdout));
        assert_eq!(headers.header(":status"), Some("200"), "{url}");
        assert!(
            out.frames.iter().all(|f| f.invalid.is_none()),
            "{url}: nghttp rejected a frame: {}",
            out.stdout
        );
    }
}

// ===== Graceful shutdown =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_the_in_flight_request_finish() {
    let gate = Gate::new();
    let size = 200_000;
    let up = Upstream::new()
        .route("/slow", Reply::generated(size).hold(gate.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.shutdown_timeout = Duration::from_secs(15);
    })
    .await;
    let addr = proxy.addr;
    let admin = proxy.admin.expect("admin listener");
    let mut client = h2_connect(addr, &H2Options::no_push()).await;
    let response = start_get(&mut client, "/slow").await;
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    let shutdown = tokio::spawn(proxy.shutdown());
    client
        .tap()
        .wait_for("GOAWAY from the draining proxy", |f| f.kind == "GOAWAY")
        .await;
    assert_eq!(admin_get(admin, "/healthz").await.0, 503, "draining");
    assert!(!shutdown.is_finished(), "waits for the in-flight stream");
    gate.open();
    let (status, body) = finish(response).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&body), generated_sha256(size));
    assert!(
        bounded("shutdown to return", shutdown)
            .await
            .expect("shutdown task"),
        "every connection drained in time"
    );
    let goaway = client
        .frames()
        .into_iter()
        .rfind(|f| f.kind == "GOAWAY")
        .expect("GOAWAY");
    assert_eq!(goaway.error_code, Some(0), "{goaway:?}");
    eventually("the listener to stop accepting", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_of_an_idle_proxy_returns_true_at_once() {
    let up = Upstream::new().route("/", Reply::ok("x")).start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    assert_eq!(h2_get(&mut client, "/", &[]).await.status, StatusCode::OK);

    let drained = bounded("shutdown", proxy.shutdown()).await;

    assert!(drained);
    // Our handle is the only thing that could keep it open; the server closed its side.
    let _keep = client.sender().clone();
    assert!(client.closed().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_query_are_forwarded_as_sent() {
    let up = Upstream::new()
        .fallback(Reply::status(404).body("nope"))
        .route("/thing", Reply::ok("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let put = h2_request(
        &mut client,
        Request::builder()
            .method(Method::PUT)
            .uri("/thing?a=1&b=%20")
            .header("content-length", "3")
            .body(())
            .unwrap(),
        Bytes::from_static(b"abc"),
    )
    .await;
    let missing = h2_get(&mut client, "/missing", &[]).await;

    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        (missing.status, missing.body.as_ref()),
        (StatusCode::NOT_FOUND, &b"nope"[..])
    );
    let req = &up.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("PUT", "/thing?a=1&b=%20")
    );
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.body_sha256, sha256_hex(b"abc"));
}
