//! WebSockets through linkpush (issue 11 item 1): HTTP/1.1 `Upgrade: websocket` over cleartext
//! and TLS, RFC 8441 extended CONNECT over h2c and h2, other Upgrade tokens passed through, the
//! tunnel idle timeout, and the tunnel metrics. The upstream performs the RFC 6455 handshake and
//! echoes frames (tests/support/ws.rs).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::client::{H2Client, H2Options, bounded, h2_connect, h2_get, tls_handshake};
use support::proxy::{Proxy, sample};
use support::raw::RawConn;
use support::upstream::{Reply, Upstream};
use support::ws::{self, WsUpstream};

use support::ws::header;

/// The proxy under test, over TLS or cleartext.
async fn start(upstream: std::net::SocketAddr, tls: bool) -> Proxy {
    if tls {
        Proxy::start_tls(upstream, |_| {}).await
    } else {
        Proxy::start(upstream, |_| {}).await
    }
}

async fn tunnels_closed(proxy: &Proxy, protocol: &str, opened: f64) -> String {
    let total = format!("linkpush_tunnels_total{{protocol=\"{protocol}\"}}");
    let open = format!("linkpush_tunnels{{protocol=\"{protocol}\"}}");
    proxy
        .metrics_when("the tunnel counted and closed", |m| {
            sample(m, &total) == opened && m.lines().any(|l| l == format!("{open} 0"))
        })
        .await
}

#[tokio::test]
async fn websocket_over_http1_cleartext_and_tls() {
    let up = WsUpstream::echo().await;
    for tls in [false, true] {
        let proxy = start(up.addr, tls).await;
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut buf = Vec::new();
        let head = if tls {
            let mut io = tls_handshake(tcp, "localhost", &[b"http/1.1"])
                .await
                .expect("TLS");
            let head = ws::client_handshake(&mut io, "localhost", "/chat", &mut buf).await;
            ws::echo_session(&mut io, &mut buf).await;
            head
        } else {
            let mut io = tcp;
            let head = ws::client_handshake(&mut io, "localhost", "/chat", &mut buf).await;
            ws::echo_session(&mut io, &mut buf).await;
            head
        };
        assert_eq!(
            header(&head, "sec-websocket-protocol"),
            Some("chat"),
            "{head}"
        );
        let upstream_head = up.heads().pop().expect("the upstream saw the handshake");
        assert!(
            upstream_head.starts_with("GET /chat HTTP/1.1"),
            "{upstream_head}"
        );
        assert_eq!(header(&upstream_head, "upgrade"), Some("websocket"));
        assert_eq!(
            header(&upstream_head, "x-forwarded-proto"),
            Some(if tls { "https" } else { "http" })
        );
        let metrics = tunnels_closed(&proxy, "http1", 1.0).await;
        assert!(
            metrics
                .lines()
                .any(|l| l == "linkpush_requests_total{protocol=\"http1\",status=\"101\"} 1"),
            "{metrics}"
        );
        proxy.shutdown().await;
    }
}

/// Opens an extended CONNECT for `:protocol` on `path`; the response and the stream's two halves.
async fn extended_connect(
    client: &mut H2Client,
    protocol: &str,
    path: &str,
) -> (http::Response<h2::RecvStream>, h2::SendStream<Bytes>) {
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive before any response: one GET
    // first makes sure the client has them.
    h2_get(client, "/warm-up", &[]).await;
    assert!(client.sender().is_extended_connect_protocol_enabled());
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://localhost{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(())
        .expect("request");
    req.extensions_mut()
        .insert(h2::ext::Protocol::from(protocol));
    let sender = client.sender().clone();
    let mut sender = bounded("a stream slot", sender.ready())
        .await
        .expect("ready");
    let (response, send) = sender.send_request(req, false).expect("send CONNECT");
    let response = bounded("the CONNECT response", response)
        .await
        .expect("CONNECT response");
    (response, send)
}

/// Reads DATA until `buf` holds a whole WebSocket frame (releasing capacity as it goes).
async fn h2_frame(recv: &mut h2::RecvStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>, bool)> {
    bounded("a WebSocket frame over HTTP/2", async {
        loop {
            if let Some(frame) = ws::decode(buf) {
                return Some(frame);
            }
            match recv.data().await {
                Some(Ok(data)) => {
                    let _ = recv.flow_control().release_capacity(data.len());
                    buf.extend_from_slice(&data);
                }
                _ => return None,
            }
        }
    })
    .await
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let up = WsUpstream::echo().await;
    for tls in [false, true] {
        let proxy = start(up.addr, tls).await;
        let opts = H2Options {
            tls,
            ..H2Options::default()
        };
        let mut client = h2_connect(proxy.addr, &opts).await;
        // RFC 8441 §3: SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) = 1.
        let (response, mut send) = extended_connect(&mut client, "websocket", "/chat").await;
        assert_eq!(client.server_setting(0x8), Some(1));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        let mut recv = response.into_body();
        let mut buf = Vec::new();
        for (i, (opcode, payload)) in ws::messages().into_iter().enumerate() {
            let frame = ws::encode(opcode, &payload, Some([9, 8, 7, i as u8]));
            send.send_data(Bytes::from(frame), false).expect("send");
            let (op, echoed, masked) = h2_frame(&mut recv, &mut buf).await.expect("echo");
            assert_eq!((op, masked), (opcode, false));
            assert!(echoed == payload, "message {i} echoed differently");
        }
        let close = ws::encode(ws::CLOSE, &1000u16.to_be_bytes(), Some([1, 2, 3, 4]));
        send.send_data(Bytes::from(close), true)
            .expect("send close");
        let (op, _, _) = h2_frame(&mut recv, &mut buf).await.expect("close");
        assert_eq!(op, ws::CLOSE);
        assert!(h2_frame(&mut recv, &mut buf).await.is_none(), "stream ends");
        assert!(recv.is_end_stream(), "ended cleanly, not reset");

        let upstream_head = up.heads().pop().expect("the upstream saw the handshake");
        assert!(
            upstream_head.starts_with("GET /chat HTTP/1.1"),
            "{upstream_head}"
        );
        assert_eq!(header(&upstream_head, "upgrade"), Some("websocket"));
        assert_eq!(header(&upstream_head, "sec-websocket-version"), Some("13"));
        let key = header(&upstream_head, "sec-websocket-key").expect("a key");
        assert_eq!(key.len(), 24, "16 bytes, base64 (RFC 6455 §4.1)");
        tunnels_closed(&proxy, "h2", 1.0).await;
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn extended_connect_other_protocol_is_501_and_upstream_refusal_is_forwarded() {
    let refusing = Upstream::new()
        .fallback(Reply::status(403).body("no websockets here\n"))
        .start()
        .await;
    let proxy = Proxy::start(refusing.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let (response, _send) = extended_connect(&mut client, "not-a-protocol", "/x").await;
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    assert!(refusing.requests_for("/x").is_empty());

    let (response, _send) = extended_connect(&mut client, "websocket", "/chat").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut body = response.into_body();
    let data = bounded("the refusal body", body.data())
        .await
        .expect("data")
        .expect("data ok");
    assert_eq!(&data[..], b"no websockets here\n");
    let seen = refusing.requests_for("/chat");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade").as_deref(), Some("websocket"));
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "linkpush_client_errors_total{kind=\"not_implemented\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn other_upgrade_tokens_pass_through_on_http1() {
    let up = Upstream::new()
        .route(
            "/foo",
            Reply::raw(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/2\r\nConnection: Upgrade\r\n\r\nhello in foo",
            ),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut conn = RawConn::open(proxy.addr).await;
    conn.send(
        b"GET /foo HTTP/1.1\r\nHost: localhost\r\nUpgrade: foo/2\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let head = conn.read_head().await.expect("101");
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("foo/2"));
    while conn.buf.len() < 12 {
        assert!(conn.fill().await, "tunnel closed early");
    }
    assert_eq!(conn.buf.drain(..).as_slice(), b"hello in foo");
    let seen = up.requests_for("/foo");
    assert_eq!(seen[0].header("upgrade").as_deref(), Some("foo/2"));
    assert!(
        seen[0]
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade"))
    );
    // The upstream closed after its bytes: the tunnel closes the client side too.
    assert!(conn.closed().await);
}

#[tokio::test]
async fn idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let up = WsUpstream::echo().await;
    let proxy = Proxy::start(up.addr, |c| {
        c.server.tunnel_idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut io = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut buf = Vec::new();
    ws::client_handshake(&mut io, "localhost", "/chat", &mut buf).await;
    // Traffic keeps it open past the timeout (pacing, not synchronisation: 4 × 400 ms > 1 s)...
    for i in 0..4u8 {
        io.write_all(&ws::encode(ws::TEXT, &[i], Some([1, 1, 1, 1])))
            .await
            .expect("write");
        let (_, echoed, _) = ws::read_frame(&mut io, &mut buf).await.expect("echo");
        assert_eq!(echoed, vec![i]);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // ...silence closes it.
    let mut rest = [0u8; 16];
    let n = bounded("the idle tunnel to close", io.read(&mut rest))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    tunnels_closed(&proxy, "http1", 1.0).await;
}

#[tokio::test]
async fn a_tunnel_holds_its_upstream_slot_until_it_closes() {
    let up = WsUpstream::echo().await;
    let proxy = Proxy::start(up.addr, |c| {
        c.upstream.max_connections = 1;
        c.upstream.response_timeout = Duration::from_secs(1);
    })
    .await;
    let mut io = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut buf = Vec::new();
    ws::client_handshake(&mut io, "localhost", "/chat", &mut buf).await;

    let plain = b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut other = RawConn::open(proxy.addr).await;
    other.send(plain).await;
    let res = other.read_response().await.expect("response");
    assert_eq!(res.status(), 504, "the only slot is the tunnel's");

    ws::echo_session(&mut io, &mut buf).await;
    tunnels_closed(&proxy, "http1", 1.0).await;
    other.send(plain).await;
    let res = other.read_response().await.expect("response");
    // The echo upstream answers a plain GET with 400: it was reached.
    assert_eq!(res.status(), 400, "{res:?}");
}
