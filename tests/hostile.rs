//! Misbehaving backends and clients (issue 11 items 2–5): `upstream.read_timeout` on stalled
//! bodies (pages and pushed assets) and heads, trickling bodies that must keep going; backend
//! responses normalised for both client protocols; Host and target validation; client faults
//! counted on the client's side and upstream faults on the upstream's.

mod support;

use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::{Method, Request, StatusCode};

use support::client::{CurlHttp, H2Options, curl_fetch, h2_connect, h2_get, h2_request};
use support::proxy::{Proxy, sample};
use support::raw::RawConn;
use support::upstream::{Reply, Upstream};

const STALL: &str = "/stall";

fn stalling_upstream() -> Upstream {
    Upstream::new()
        .route(STALL, Reply::generated(1000).stall_after(500))
        .route("/ok", Reply::ok("fine\n"))
        .route(
            "/trickle",
            Reply::ok("abcdefgh").trickle(Duration::from_millis(300)),
        )
        .route("/silent", Reply::ok("never").never_respond())
}

fn one_slot_one_second(c: &mut linkpush::Config) {
    c.upstream.read_timeout = Duration::from_secs(1);
    c.upstream.max_connections = 1;
}

fn has_line(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

async fn assert_metric(proxy: &Proxy, line: &str) {
    let metrics = proxy.metrics().await;
    assert!(has_line(&metrics, line), "{line:?} missing from\n{metrics}");
}

#[tokio::test]
async fn stalled_body_is_reset_and_frees_the_only_slot_h2() {
    let up = stalling_upstream().start().await;
    let proxy = Proxy::start(up.addr(), one_slot_one_second).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let stalled = h2_get(&mut client, STALL, &[]).await;
    assert_eq!(stalled.status, StatusCode::OK);
    assert_eq!(
        stalled.reset(),
        Some(Reason::INTERNAL_ERROR),
        "a stalled body is reset, never ended cleanly"
    );
    assert!(stalled.body.len() <= 500, "{} bytes", stalled.body.len());
    // The upstream connection was dropped, and with it the only slot.
    assert!(
        up.wait_until(Duration::from_secs(10), |u| u.responses_aborted() == 1)
            .await
    );
    let next = h2_get(&mut client, "/ok", &[]).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(&next.body[..], b"fine\n");
    assert_metric(
        &proxy,
        "linkpush_upstream_errors_total{kind=\"read_timeout\"} 1",
    )
    .await;
}

#[tokio::test]
async fn stalled_body_closes_the_http1_connection() {
    let up = stalling_upstream().start().await;
    let proxy = Proxy::start(up.addr(), one_slot_one_second).await;
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(b"GET /stall HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let head = conn.read_head().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    while conn.fill().await {}
    assert!(
        conn.buf.len() < 1000,
        "a truncated body must not look complete"
    );

    let mut again = RawConn::open(proxy.addr).await;
    again
        .send(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let ok = again.read_response().await.expect("response");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.body, b"fine\n");
}

#[tokio::test]
async fn trickling_body_keeps_going() {
    let up = stalling_upstream().start().await;
    let proxy = Proxy::start(up.addr(), one_slot_one_second).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    // 8 bytes 300 ms apart: longer than read_timeout in total, never that long between bytes.
    let slow = h2_get(&mut client, "/trickle", &[]).await;
    assert_eq!(slow.status, StatusCode::OK);
    assert!(slow.error.is_none(), "{:?}", slow.error);
    assert_eq!(&slow.body[..], b"abcdefgh");
}

#[tokio::test]
async fn silent_upstream_head_times_out_on_read_timeout() {
    let up = stalling_upstream().start().await;
    let proxy = Proxy::start(up.addr(), one_slot_one_second).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let silent = h2_get(&mut client, "/silent", &[]).await;
    assert_eq!(silent.status, StatusCode::GATEWAY_TIMEOUT);
    let next = h2_get(&mut client, "/ok", &[]).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_metric(
        &proxy,
        "linkpush_upstream_errors_total{kind=\"read_timeout\"} 1",
    )
    .await;
}

#[tokio::test]
async fn stalled_pushed_asset_is_reset() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::html("<p>page</p>").link("</app.css>; rel=preload; as=style"),
        )
        .route("/app.css", Reply::generated(1000).stall_after(500))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.upstream.read_timeout = Duration::from_secs(1);
        c.learn.enabled = false;
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let page = h2_get(&mut client, "/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let pushed = page.push("/app.css");
    assert!(pushed.reset().is_some(), "{pushed:?}");
    assert!(!pushed.completed());
    proxy
        .metrics_when("the failed push counted", |m| {
            has_line(m, "linkpush_upstream_errors_total{kind=\"read_timeout\"} 1")
                && has_line(m, "linkpush_pushes_total{outcome=\"failed\"} 1")
        })
        .await;
}

fn raw_routes() -> Upstream {
    Upstream::new()
        .route(
            "/dup-length",
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        )
        .route(
            "/conflicting-length",
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        )
        .route(
            "/switch",
            Reply::raw(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ),
        )
        .route(
            "/head-body",
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        )
        .route(
            "/hop",
            Reply::raw(
                "HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
                 Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: foo\r\nX-Kept: yes\r\n\
                 Content-Length: 2\r\n\r\nok",
            ),
        )
}

#[tokio::test]
async fn malformed_responses_are_normalised_for_h2_clients() {
    let up = raw_routes().start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let dup = h2_get(&mut client, "/dup-length", &[]).await;
    assert_eq!(dup.status, StatusCode::OK);
    assert_eq!(dup.header_all("content-length"), vec!["5"]);
    assert_eq!(&dup.body[..], b"hello");
    // An independent HTTP/2 client, which refused the response before (PROTOCOL_ERROR).
    let curl = curl_fetch(
        CurlHttp::H2PriorKnowledge,
        &format!("{}/dup-length", proxy.url("http")),
        &[],
    )
    .await;
    assert_eq!((curl.exit_code, curl.status), (0, 200), "{curl:?}");
    assert_eq!(curl.body, b"hello");

    let conflicting = h2_get(&mut client, "/conflicting-length", &[]).await;
    assert_eq!(conflicting.status, StatusCode::BAD_GATEWAY);

    // RFC 9113 §8.6: no :status 101 on HTTP/2; a 101 nobody asked for is no valid response.
    let switch = h2_get(&mut client, "/switch", &[]).await;
    assert_eq!(switch.status, StatusCode::BAD_GATEWAY);

    let head = h2_request(
        &mut client,
        Request::builder()
            .method(Method::HEAD)
            .uri("/head-body")
            .body(())
            .expect("request"),
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    let hop = h2_get(&mut client, "/hop", &[]).await;
    assert_eq!(hop.status, StatusCode::OK);
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            hop.header(name).is_none(),
            "{name} forwarded: {:?}",
            hop.headers
        );
    }
    assert_eq!(hop.header("x-kept"), Some("yes"));

    assert_metric(
        &proxy,
        "linkpush_upstream_errors_total{kind=\"upstream_invalid\"} 1",
    )
    .await;
}

#[tokio::test]
async fn malformed_responses_are_normalised_for_http1_clients() {
    let up = raw_routes().start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;

    conn.send(b"GET /dup-length HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let dup = conn.read_response().await.expect("response");
    assert_eq!(dup.status(), 200);
    assert_eq!(
        dup.head
            .to_ascii_lowercase()
            .matches("content-length")
            .count(),
        1,
        "{}",
        dup.head
    );
    assert_eq!(dup.body, b"hello");

    conn.send(b"GET /switch HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let switch = conn.read_response().await.expect("response");
    assert_eq!(switch.status(), 502, "{switch:?}");

    conn.send(b"HEAD /head-body HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let head = conn.read_head().await.expect("head");
    assert_eq!(head.status(), 200);
    // Nothing follows the head: the next response on the connection starts right away.
    conn.send(b"GET /hop HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let hop = conn.read_response().await.expect("response");
    assert_eq!(hop.status(), 200, "{hop:?}");
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(hop.header(name).is_none(), "{name} forwarded: {}", hop.head);
    }
    assert_eq!(hop.body, b"ok");
}

#[tokio::test]
async fn bad_hosts_and_targets_are_400_and_never_reach_the_backend() {
    let up = Upstream::new()
        .fallback(Reply::ok("reached\n"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let cases: [&[u8]; 6] = [
        b"GET http://a.example/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.example/../x?y\r\n\r\n",
        b"GET http://user:pw@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    ];
    for case in cases {
        let mut conn = RawConn::open(proxy.addr).await;
        conn.send(case).await;
        let res = conn.read_response().await.expect("response");
        assert_eq!(res.status(), 400, "{}", String::from_utf8_lossy(case));
        assert_eq!(res.body, b"400 Bad Request\n");
    }

    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let h2_cases = [
        ("http://a.example/", vec![("host", "b.example")]),
        (
            "http://a.example/",
            vec![("host", "a.example"), ("host", "a.example")],
        ),
        ("http://user:pw@a.example/", vec![]),
    ];
    for (uri, hosts) in h2_cases {
        let mut req = Request::builder().uri(uri);
        for (n, v) in &hosts {
            req = req.header(*n, *v);
        }
        let res = h2_request(&mut client, req.body(()).expect("request"), Bytes::new()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{uri} {hosts:?}");
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_client_errors_total{kind=\"bad_request\"}"
        ),
        9.0,
        "{metrics}"
    );

    // RFC 9112 §3.2.2: an absolute-form target that agrees with Host is served, and its
    // authority is the one forwarded.
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(b"GET http://A.example:80/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await;
    let res = conn.read_response().await.expect("response");
    assert_eq!(res.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/x");
    assert_eq!(seen[0].header("host").as_deref(), Some("A.example:80"));
}

#[tokio::test]
async fn client_body_faults_are_client_errors() {
    let up = Upstream::new()
        .route("/upload", Reply::echo())
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;

    // An upload aborted halfway.
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\npartial")
        .await;
    assert!(
        up.wait_until(Duration::from_secs(10), |u| u.connections_accepted() == 1)
            .await
    );
    drop(conn);
    proxy
        .metrics_when("the aborted upload counted", |m| {
            sample(m, "linkpush_client_errors_total{kind=\"client_body\"}") == 1.0
        })
        .await;

    // A malformed chunked body: the client is still there to read a 400.
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\n",
    )
    .await;
    let res = conn.read_response().await.expect("response");
    assert_eq!(res.status(), 400, "{res:?}");
    let metrics = proxy
        .metrics_when("the malformed body counted", |m| {
            sample(m, "linkpush_client_errors_total{kind=\"client_body\"}") == 2.0
        })
        .await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_upstream_errors_total{kind=\"upstream_request\"}"
        ),
        0.0,
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"502\""), "{metrics}");
}

#[tokio::test]
async fn upstream_faults_stay_upstream_errors() {
    let up = Upstream::accept_then_close().start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let res = conn.read_response().await.expect("response");
    assert_eq!(res.status(), 502);
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_upstream_errors_total{kind=\"upstream_request\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "linkpush_client_errors_total{kind=\"client_body\"}"
        ),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn h2_upload_reset_by_the_client_is_not_an_upstream_error() {
    let up = Upstream::new()
        .route("/upload", Reply::echo())
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://localhost/upload")
        .header("content-length", "100000")
        .body(())
        .expect("request");
    let (_response, mut body) = client.sender().send_request(req, false).expect("send");
    body.send_data(Bytes::from_static(b"partial"), false)
        .expect("data");
    // The proxy is streaming the body upstream when the client gives up.
    assert!(
        up.wait_until(Duration::from_secs(10), |u| u.connections_accepted() == 1)
            .await
    );
    body.send_reset(Reason::CANCEL);
    assert!(
        up.wait_until(Duration::from_secs(10), |u| u.connections_closed() == 1)
            .await,
        "the upstream request is dropped with the client's stream"
    );
    let metrics = proxy
        .metrics_when("the stream counted", |m| {
            m.contains("linkpush_requests_total{protocol=\"h2\"")
        })
        .await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_upstream_errors_total{kind=\"upstream_request\"}"
        ),
        0.0,
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"502\""), "{metrics}");
}
