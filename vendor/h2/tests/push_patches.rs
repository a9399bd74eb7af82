//! Regression tests for the linkpush patches (see PATCHES.md). The crates.io package of h2 ships
//! without its `h2-support` test crate, so these tests speak raw HTTP/2 to a real
//! `h2::server` over an in-memory pipe: frames are written by hand and read back by header.
//!
//! Each test queues everything on the server before the connection is polled again, so the
//! frame order on the wire is decided by h2's scheduler alone, not by task timing.

use bytes::Bytes;
use h2::server::{self, SendResponse};
use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn promised_id(&self) -> u32 {
        assert_eq!(self.kind, PUSH_PROMISE);
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// GET https://a/ : indexed :method GET, :scheme https, :path /, and :authority as a literal
/// without indexing (RFC 7541 §6.2.2), so no dynamic-table state is needed.
fn get(stream: u32) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &[0x82, 0x87, 0x84, 0x01, 0x01, b'a'],
    )
}

/// The client preface and a SETTINGS frame with the given (id, value) pairs.
fn preface(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    out.extend(frame(SETTINGS, 0, 0, &payload));
    out
}

async fn read_frame(io: &mut DuplexStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
        payload,
    })
}

/// Reads frames until `done` says so or the server closes; returns all frames read.
async fn read_until(io: &mut DuplexStream, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = read_frame(io).await {
        let stop = done(&f) || f.kind == GOAWAY;
        frames.push(f);
        if stop {
            break;
        }
    }
    frames
}

fn promise(respond: &mut SendResponse<Bytes>, path: &str) -> h2::server::SendPushedResponse<Bytes> {
    let req = Request::get(format!("https://a{path}")).body(()).unwrap();
    respond.push_request(req).expect("push_request")
}

type Conn = server::Connection<DuplexStream, Bytes>;

/// A server connection whose client has sent `client` (bytes) and whose first `n` requests
/// were accepted.
async fn accept(client: Vec<u8>, n: usize) -> (DuplexStream, Conn, Vec<SendResponse<Bytes>>) {
    let (mut c, s) = tokio::io::duplex(1 << 20);
    c.write_all(&client).await.unwrap();
    let mut conn = server::handshake(s).await.expect("handshake");
    let mut responds = Vec::new();
    for _ in 0..n {
        let (_req, respond) = conn.accept().await.expect("request").expect("no error");
        responds.push(respond);
    }
    (c, conn, responds)
}

/// Drives the connection in the background until the client goes away.
fn drive(mut conn: Conn) {
    tokio::spawn(async move { while let Some(Ok(_)) = conn.accept().await {} });
}

/// Patch 1: PUSH_PROMISE frames reach the wire in promised-id order (RFC 9113 §5.1.1) even
/// when their parent streams' queues are scheduled in another order.
#[tokio::test]
async fn push_promises_are_written_in_promised_id_order() {
    let mut client = preface(&[]);
    client.extend(get(1));
    client.extend(get(3));
    let (mut c, conn, mut responds) = accept(client, 2).await;
    let mut r3 = responds.pop().unwrap();
    let mut r1 = responds.pop().unwrap();

    // Stream 1 gets two frames ahead of its promise, stream 3 one: in a round robin over the
    // parents' own queues the promise on stream 3 (id 4) went out before the one on stream 1
    // (id 2).
    let mut s1 = r1.send_response(Response::new(()), false).unwrap();
    s1.send_data(Bytes::from_static(b"page one"), false)
        .unwrap();
    let _s3 = r3.send_response(Response::new(()), false).unwrap();
    let _p2 = promise(&mut r1, "/one.css");
    let _p4 = promise(&mut r3, "/three.css");
    let _p6 = promise(&mut r1, "/one.js");
    drive(conn);

    let mut promised = Vec::new();
    let frames = read_until(&mut c, |f| {
        if f.kind == PUSH_PROMISE {
            promised.push(f.promised_id());
        }
        promised.len() == 3
    })
    .await;
    assert!(frames.iter().all(|f| f.kind != GOAWAY), "{frames:?}");
    assert_eq!(promised, vec![2, 4, 6]);
}

/// Patch 3: a pushed response's frames wait behind the client's own streams, so the page's
/// HEADERS precede the pushed response's HEADERS even when the pushed response was queued
/// first.
#[tokio::test]
async fn pushed_responses_yield_to_client_streams() {
    let mut client = preface(&[]);
    client.extend(get(1));
    let (mut c, conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();

    let mut pushed = promise(&mut r1, "/style.css");
    let mut ps = pushed.send_response(Response::new(()), false).unwrap();
    ps.send_data(Bytes::from_static(b"body{}"), true).unwrap();
    let mut s1 = r1.send_response(Response::new(()), false).unwrap();
    s1.send_data(Bytes::from_static(b"<html>"), true).unwrap();
    drive(conn);

    let frames = read_until(&mut c, |f| f.stream == 2 && f.flags & END_STREAM != 0).await;
    let order: Vec<(u8, u32)> = frames
        .iter()
        .filter(|f| matches!(f.kind, HEADERS | DATA | PUSH_PROMISE))
        .map(|f| (f.kind, f.stream))
        .collect();
    assert_eq!(
        order,
        vec![
            (PUSH_PROMISE, 1),
            (HEADERS, 1),
            (DATA, 1),
            (HEADERS, 2),
            (DATA, 2)
        ]
    );
}

/// A client with SETTINGS_MAX_CONCURRENT_STREAMS = 1 and two promises with queued responses:
/// stream 2 opens, stream 4 waits in `pending_open`. Returns once the client has seen both
/// promises and stream 2's HEADERS.
async fn second_push_pending_open() -> (DuplexStream, Vec<h2::SendStream<Bytes>>) {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let mut client = preface(&[(MAX_CONCURRENT_STREAMS, 1)]);
    client.extend(get(1));
    let (mut c, conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();
    let mut p2 = promise(&mut r1, "/a.css");
    let mut p4 = promise(&mut r1, "/b.css");
    let s2 = p2.send_response(Response::new(()), false).unwrap();
    let s4 = p4.send_response(Response::new(()), false).unwrap();
    drive(conn);
    let mut seen = (false, false);
    let frames = read_until(&mut c, |f| {
        seen.0 |= f.kind == PUSH_PROMISE && f.promised_id() == 4;
        seen.1 |= f.kind == HEADERS && f.stream == 2;
        seen.0 && seen.1
    })
    .await;
    assert!(
        frames.iter().all(|f| !(f.kind == HEADERS && f.stream == 4)),
        "stream 4 must still wait for a slot: {frames:?}"
    );
    // Keep r1 open too, so the connection has work.
    std::mem::forget(r1);
    (c, vec![s2, s4])
}

/// Sends `frames` then a PING, and asserts the PING is answered with no GOAWAY first.
async fn assert_connection_survives(c: &mut DuplexStream, frames: Vec<u8>) {
    let mut out = frames;
    out.extend(frame(PING, 0, 0, b"survive?"));
    c.write_all(&out).await.unwrap();
    let frames = read_until(c, |f| f.kind == PING && f.flags & ACK != 0).await;
    assert!(
        frames.iter().all(|f| f.kind != GOAWAY),
        "connection error instead of a stream event: {frames:?}"
    );
    assert!(frames.iter().any(|f| f.kind == PING), "{frames:?}");
}

/// Patch 2: a client RST_STREAM on a pushed stream still waiting in `pending_open` refuses
/// that push (RFC 9113 §8.4.2); it is not a connection error.
#[tokio::test]
async fn rst_stream_on_pending_open_pushed_stream_is_a_stream_event() {
    let (mut c, _streams) = second_push_pending_open().await;
    let cancel = 0x8u32.to_be_bytes();
    assert_connection_survives(&mut c, frame(RST_STREAM, 0, 4, &cancel)).await;
}

/// Patch 2: the same for WINDOW_UPDATE, which RFC 9113 §5.1 allows in "reserved (remote)".
#[tokio::test]
async fn window_update_on_pending_open_pushed_stream_is_a_stream_event() {
    let (mut c, _streams) = second_push_pending_open().await;
    let increment = 1024u32.to_be_bytes();
    assert_connection_survives(&mut c, frame(WINDOW_UPDATE, 0, 4, &increment)).await;
}

/// Patch 4: no PUSH_PROMISE once this side has sent GOAWAY (RFC 9113 §6.8).
#[tokio::test]
async fn no_push_promise_after_sending_goaway() {
    let mut client = preface(&[]);
    client.extend(get(1));
    let (_c, mut conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();
    conn.graceful_shutdown();
    let req = Request::get("https://a/late.css").body(()).unwrap();
    let err = r1.push_request(req).expect_err("push after GOAWAY");
    assert!(err.to_string().contains("GOAWAY"), "{err}");
}

/// Patch 4: no PUSH_PROMISE once the client has sent GOAWAY (RFC 9113 §6.8).
#[tokio::test]
async fn no_push_promise_after_receiving_goaway() {
    let mut client = preface(&[]);
    // The client announces it is going away, then sends one last request: GOAWAY restricts
    // the streams its receiver (the server) may open, not the requests the sender may still
    // make on streams up to its own last-stream-id semantics.
    let mut goaway = 0u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    client.extend(frame(GOAWAY, 0, 0, &goaway));
    client.extend(get(1));
    let (_c, _conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();
    let req = Request::get("https://a/late.css").body(()).unwrap();
    let err = r1
        .push_request(req)
        .expect_err("push after the client's GOAWAY");
    assert!(err.to_string().contains("GOAWAY"), "{err}");
}

/// Patch 5: after a graceful GOAWAY, the connection does not close while a promised stream is
/// unfinished (it used to close as soon as the promising stream ended: the client was left
/// with a reserved stream that got neither HEADERS nor RST_STREAM).
#[tokio::test]
async fn graceful_shutdown_waits_for_promised_streams() {
    let mut client = preface(&[]);
    client.extend(get(1));
    let (mut c, mut conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();
    let mut p2 = promise(&mut r1, "/late.css");
    r1.send_response(Response::new(()), true).unwrap();
    drop(r1);
    conn.graceful_shutdown();
    drive(conn);

    // The page ends, the first GOAWAY (last id 2^31-1) comes with a PING; answering it makes
    // the server send its final GOAWAY, after which it closes once nothing is left.
    let mut ping = None;
    let mut page_done = false;
    while ping.is_none() || !page_done {
        let f = read_frame(&mut c)
            .await
            .expect("page and PING before close");
        page_done |= f.kind == HEADERS && f.stream == 1 && f.flags & END_STREAM != 0;
        if f.kind == PING {
            ping = Some(f.payload);
        }
    }
    let ping = ping.unwrap();
    c.write_all(&frame(PING, ACK, 0, &ping)).await.unwrap();
    let mut last_goaway = None;
    while last_goaway != Some(1) {
        let f = read_frame(&mut c).await.expect("final GOAWAY before close");
        if f.kind == GOAWAY {
            last_goaway = Some(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
        }
    }

    // The promised stream still gets its response, then the connection closes.
    let sent = p2.send_response(Response::new(()), true);
    let mut rest = Vec::new();
    while let Some(f) = read_frame(&mut c).await {
        rest.push(f);
    }
    assert!(sent.is_ok(), "{sent:?}");
    assert!(
        rest.iter()
            .any(|f| f.kind == HEADERS && f.stream == 2 && f.flags & END_STREAM != 0),
        "promised stream 2 left open at close: {rest:?}"
    );
}

const CONTINUATION: u8 = 0x9;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// HPACK: a literal field without indexing, new name, no Huffman (RFC 7541 §6.2.2, §5.1,
/// §5.2).
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    for s in [name, value] {
        let mut n = s.len();
        if n < 127 {
            out.push(n as u8);
        } else {
            out.push(127);
            n -= 127;
            while n >= 128 {
                out.push((n % 128) as u8 | 0x80);
                n /= 128;
            }
            out.push(n as u8);
        }
        out.extend_from_slice(s);
    }
    out
}

/// `:status 431` as h2 encodes it: the string "431" Huffman-coded (RFC 7541 Appendix B:
/// '4' 011010, '3' 011001, '1' 00001, padded with 1s), 3 octets long.
const STATUS_431: [u8; 4] = [0x83, 0x69, 0x90, 0xff];

/// Patch 6: a request whose header list is over SETTINGS_MAX_HEADER_LIST_SIZE is answered 431
/// (RFC 9113 §10.5.1); its body, still coming, is refused with RST_STREAM NO_ERROR after the
/// response (RFC 9113 §8.1), not PROTOCOL_ERROR; the application can count it; the connection
/// and the next request are fine.
#[tokio::test]
async fn oversized_request_headers_get_431_and_a_no_error_reset() {
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 0x01, b'a'];
    block.extend(literal(b"x-big", &[b'a'; 20 * 1024]));
    let (first, rest) = block.split_at(16_000);
    let mut client = preface(&[]);
    client.extend(frame(HEADERS, 0, 1, first));
    client.extend(frame(CONTINUATION, END_HEADERS, 1, rest));
    client.extend(frame(DATA, END_STREAM, 1, b"body"));
    client.extend(get(3));
    let (mut c, s) = tokio::io::duplex(1 << 20);
    c.write_all(&client).await.unwrap();
    let mut conn = server::Builder::new()
        .max_header_list_size(16 * 1024)
        .handshake::<_, Bytes>(s)
        .await
        .expect("handshake");

    let (_req, mut r3) = conn.accept().await.expect("request").expect("no error");
    assert_eq!(
        u32::from(r3.stream_id()),
        3,
        "stream 1 never reaches accept"
    );
    assert_eq!(conn.num_oversized_header_lists(), 1);
    r3.send_response(Response::new(()), true).unwrap();
    drive(conn);

    let frames = read_until(&mut c, |f| f.kind == HEADERS && f.stream == 3).await;
    let on_1: Vec<&Frame> = frames.iter().filter(|f| f.stream == 1).collect();
    assert!(frames.iter().all(|f| f.kind != GOAWAY), "{frames:?}");
    assert_eq!(on_1.len(), 2, "{on_1:?}");
    assert_eq!(
        (on_1[0].kind, on_1[0].flags),
        (HEADERS, END_STREAM | END_HEADERS)
    );
    assert!(
        on_1[0].payload.windows(4).any(|w| w == STATUS_431),
        "{:?}",
        on_1[0].payload
    );
    assert_eq!(
        (on_1[1].kind, &on_1[1].payload[..]),
        (RST_STREAM, &[0u8; 4][..])
    );
}

/// Patch 7: a header block over the client's SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2)
/// is refused by each send call with a distinguishable error, nothing queued, the stream
/// unchanged: the server then answers that stream with a smaller response, and the client
/// never gets a block it would have to treat as a connection error.
#[tokio::test]
async fn header_blocks_over_the_peers_header_list_limit_are_refused() {
    let mut client = preface(&[(SETTINGS_MAX_HEADER_LIST_SIZE, 1024)]);
    client.extend(get(1));
    let (mut c, conn, mut responds) = accept(client, 1).await;
    let mut r1 = responds.pop().unwrap();
    let big = "a".repeat(1024);
    // 32 + 7 (":status") + 3 + 32 + 1 ("x") + 960 = 1035: just over.
    let just_over = "a".repeat(960);

    let mut early = Response::builder().status(103);
    early = early.header("link", big.as_str());
    let err = r1.send_informational(early.body(()).unwrap()).unwrap_err();
    assert!(err.is_header_list_too_large(), "{err}");
    let req = Request::get("https://a/a.css").header("x", big.as_str());
    let err = r1.push_request(req.body(()).unwrap()).unwrap_err();
    assert!(err.is_header_list_too_large(), "{err}");
    let mut pushed = promise(&mut r1, "/b.css");
    let res = Response::builder()
        .header("x", big.as_str())
        .body(())
        .unwrap();
    let err = pushed.send_response(res, true).unwrap_err();
    assert!(err.is_header_list_too_large(), "{err}");
    pushed.send_reset(h2::Reason::CANCEL);
    let res = Response::builder()
        .header("x", just_over.as_str())
        .body(())
        .unwrap();
    let err = r1.send_response(res, true).unwrap_err();
    assert!(err.is_header_list_too_large(), "{err}");
    let res = Response::builder().status(502).body(()).unwrap();
    r1.send_response(res, true)
        .expect("the stream is still usable");
    drive(conn);

    let frames = read_until(&mut c, |f| f.kind == HEADERS && f.stream == 1).await;
    assert!(frames.iter().all(|f| f.kind != GOAWAY), "{frames:?}");
    let promised: Vec<u32> = frames
        .iter()
        .filter(|f| f.kind == PUSH_PROMISE)
        .map(Frame::promised_id)
        .collect();
    // One promise (for /b.css; the id reserved for the refused one is never used, which RFC
    // 9113 §5.1.1 allows), and the first HEADERS on stream 1 is the final 502, not a 103.
    assert_eq!(promised.len(), 1, "{frames:?}");
    let last = frames.last().unwrap();
    assert_eq!(last.flags & END_STREAM, END_STREAM, "{frames:?}");
    assert!(frames.iter().all(|f| f.payload.len() < 1024), "{frames:?}");
}

const SETTINGS_ENABLE_PUSH: u16 = 0x2;

/// Patch 14: the server can read the client's SETTINGS_ENABLE_PUSH (RFC 9113 §6.5.2, initially
/// 1), so it need not prepare pushes for a client that takes none; `push_request` fails then,
/// as before.
#[tokio::test]
async fn the_clients_enable_push_setting_is_readable() {
    let mut client = preface(&[]);
    client.extend(get(1));
    let (_c, conn, _) = accept(client, 1).await;
    assert!(conn.is_push_enabled(), "no setting: push allowed");

    let mut client = preface(&[(SETTINGS_ENABLE_PUSH, 1)]);
    client.extend(get(1));
    let (_c, conn, _) = accept(client, 1).await;
    assert!(conn.is_push_enabled());

    let mut client = preface(&[(SETTINGS_ENABLE_PUSH, 0)]);
    client.extend(get(1));
    let (_c, conn, mut responds) = accept(client, 1).await;
    assert!(!conn.is_push_enabled());
    let req = Request::get("https://a/pushed").body(()).unwrap();
    assert!(responds[0].push_request(req).is_err(), "push refused");
}

/// Patch 18: a request is made from its pseudo-header fields with its parts set in place, not
/// through `Request::builder()`: method, URI (scheme, authority, path and query), version and
/// fields come out as before, and a malformed `:authority` or a missing `:method` still resets
/// only its own stream with PROTOCOL_ERROR (RFC 9113 §8.1.1), the next request unharmed.
#[tokio::test]
async fn requests_are_made_from_their_pseudo_header_fields() {
    let mut client = preface(&[]);
    // GET https://a/ with one field.
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 0x01, b'a'];
    block.extend(literal(b"x-a", b"1"));
    client.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
    // POST http://b/p?q=1: `:path` as a literal with the static table's name (index 4).
    let mut block = vec![0x83, 0x86, 0x04, 6];
    block.extend_from_slice(b"/p?q=1");
    block.extend([0x01, 0x01, b'b']);
    client.extend(frame(HEADERS, END_STREAM | END_HEADERS, 3, &block));
    // `:authority` "a b": not an authority.
    let block = [0x82, 0x87, 0x84, 0x01, 0x03, b'a', b' ', b'b'];
    client.extend(frame(HEADERS, END_STREAM | END_HEADERS, 5, &block));
    // No `:method`.
    let block = [0x87, 0x84, 0x01, 0x01, b'a'];
    client.extend(frame(HEADERS, END_STREAM | END_HEADERS, 7, &block));
    client.extend(get(9));
    let (mut c, s) = tokio::io::duplex(1 << 20);
    c.write_all(&client).await.unwrap();
    let mut conn = server::handshake(s).await.expect("handshake");
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(conn.accept().await.expect("request").expect("no error"));
    }

    let ids: Vec<u32> = accepted
        .iter()
        .map(|(_, r)| u32::from(r.stream_id()))
        .collect();
    assert_eq!(ids, [1, 3, 9], "streams 5 and 7 never reach accept");
    let get = &accepted[0].0;
    assert_eq!(get.method(), http::Method::GET);
    assert_eq!(get.uri(), "https://a/");
    assert_eq!(get.version(), http::Version::HTTP_2);
    assert_eq!(get.headers().len(), 1);
    assert_eq!(get.headers()["x-a"], "1");
    let post = &accepted[1].0;
    assert_eq!(post.method(), http::Method::POST);
    assert_eq!(post.uri().scheme_str(), Some("http"));
    assert_eq!(post.uri().authority().map(|a| a.as_str()), Some("b"));
    assert_eq!(post.uri().path(), "/p");
    assert_eq!(post.uri().query(), Some("q=1"));
    assert_eq!(post.version(), http::Version::HTTP_2);
    assert!(post.headers().is_empty());
    assert!(post.extensions().get::<h2::ext::Protocol>().is_none());

    drive(conn);
    let frames = read_until(&mut c, |f| f.kind == RST_STREAM && f.stream == 7).await;
    for stream in [5, 7] {
        let reset = frames
            .iter()
            .find(|f| f.kind == RST_STREAM && f.stream == stream)
            .unwrap_or_else(|| panic!("no RST_STREAM on {stream}: {frames:?}"));
        assert_eq!(reset.payload, 1u32.to_be_bytes(), "PROTOCOL_ERROR");
    }
    assert!(frames.iter().all(|f| f.kind != GOAWAY), "{frames:?}");
}
