//! Serving: the accept loop, each connection's request loop (keep-alive per RFC 9112 §9.3), and
//! writing a [`Reply`] as an HTTP/1.1 response, misbehaviour included.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::generated::Pattern;
use super::http1::{BodyError, Conn, Head, HeadError, ReadBody, has_token, peer_gone};
use super::reply::{Body, Reply};
use super::{Mode, Recorded, State, WRITE_CHUNK};

pub(super) async fn accept_loop(listener: TcpListener, state: Arc<State>, mode: Mode) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let id = state.accepted.fetch_add(1, Ordering::SeqCst);
                state.bump();
                if mode == Mode::AcceptThenClose {
                    drop(stream);
                    state.closed.fetch_add(1, Ordering::SeqCst);
                    state.bump();
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    serve(Conn { stream, buf: BytesMut::new() }, id, &state).await;
                    state.closed.fetch_add(1, Ordering::SeqCst);
                    state.bump();
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Why a connection stops after a request.
enum Next {
    KeepAlive,
    Close,
}

async fn serve(mut conn: Conn, id: usize, state: &State) {
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadError::Io) => return,
            Err(HeadError::TooLarge) => {
                let _ = conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
            Err(HeadError::Malformed) => {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
        };
        let reply = state.reply_for(&head.target);
        let keep_body = matches!(reply.body, Body::Echo);
        let body = match conn.read_body(&head, keep_body).await {
            Ok(body) => body,
            Err(BodyError::Io) => return,
            Err(BodyError::Malformed) => {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return;
            }
        };
        state.requests.lock().unwrap().push(Recorded {
            conn: id,
            method: head.method.clone(),
            target: head.target.clone(),
            version: head.version.clone(),
            headers: head.headers.clone(),
            body_len: body.len,
            body_sha256: body.sha256.clone(),
        });
        state.bump();

        match respond(&mut conn, &head, &reply, body).await {
            Ok(Next::KeepAlive) if head.wants_keep_alive() => {}
            Ok(_) => {
                let _ = conn.stream.shutdown().await;
                return;
            }
            Err(_) => {
                state.aborted.fetch_add(1, Ordering::SeqCst);
                state.bump();
                return;
            }
        }
    }
}

async fn respond(
    conn: &mut Conn,
    head: &Head,
    reply: &Reply,
    body: ReadBody,
) -> std::io::Result<Next> {
    if reply.never_respond {
        conn.wait_for_peer_close().await;
        return Err(peer_gone());
    }
    if let Some(raw) = &reply.raw {
        conn.write_all(raw).await?;
        return Ok(Next::Close);
    }

    for links in &reply.early_hints {
        let mut hint = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
        for link in links {
            hint.extend_from_slice(format!("Link: {link}\r\n").as_bytes());
        }
        hint.extend_from_slice(b"\r\n");
        conn.write_all(&hint).await?;
    }
    if let Some(gate) = &reply.hold {
        conn.wait_gate(gate).await?;
    }

    let mut headers = reply.headers.clone();
    let mut body_src = match &reply.body {
        Body::Bytes(b) => Source::Bytes(b.clone()),
        Body::Generated(n) => Source::Generated(*n),
        Body::Echo => {
            headers.push(("x-body-sha256".into(), body.sha256.into_bytes()));
            Source::Bytes(body.bytes.freeze())
        }
    };
    let body_len = body_src.len();
    // RFC 9110 §6.4.1: no content in responses to HEAD, or with 1xx, 204 or 304.
    let bodiless = matches!(reply.status, 100..=199 | 204 | 304);
    let send_body = !bodiless && head.method != "HEAD";
    if !send_body {
        body_src = Source::Bytes(Bytes::new());
    }

    let user_set = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let user_framing = user_set("content-length") || user_set("transfer-encoding");
    let has_connection = user_set("connection");
    let mut framing = Vec::new();
    if !user_framing && !bodiless && !reply.close_delimited {
        if reply.chunked {
            framing.push(("Transfer-Encoding".to_owned(), b"chunked".to_vec()));
        } else {
            framing.push((
                "Content-Length".to_owned(),
                body_len.to_string().into_bytes(),
            ));
        }
    }
    let close = reply.close
        || reply.close_delimited
        || reply.truncate_at.is_some()
        || !head.wants_keep_alive()
        || headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
    if close && !has_connection {
        framing.push(("Connection".to_owned(), b"close".to_vec()));
    }
    let chunked = reply.chunked && !user_framing && !reply.close_delimited;

    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    for (name, value) in headers.iter().chain(&framing) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    conn.write_all(&out).await?;

    if let Some(gate) = &reply.delay_body {
        conn.wait_gate(gate).await?;
    }

    let limit = reply.truncate_at.or(reply.stall_after).unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut pattern = Pattern::new();
    let total = body_src.len().min(limit);
    while sent < total {
        let piece_max = if reply.trickle.is_some() {
            1
        } else {
            WRITE_CHUNK as u64
        };
        let n = (total - sent).min(piece_max) as usize;
        let piece: &[u8] = match &body_src {
            Source::Bytes(b) => &b[sent as usize..sent as usize + n],
            Source::Generated(_) => pattern.slice(sent, n),
        };
        if chunked {
            let mut chunk = format!("{n:x}\r\n").into_bytes();
            chunk.extend_from_slice(piece);
            chunk.extend_from_slice(b"\r\n");
            conn.write_all(&chunk).await?;
        } else {
            conn.write_all(piece).await?;
        }
        sent += n as u64;
        if let Some(interval) = reply.trickle.filter(|_| sent < total) {
            tokio::time::sleep(interval).await;
        }
    }
    if reply.truncate_at.is_some() {
        return Ok(Next::Close);
    }
    if reply.stall_after.is_some() {
        conn.wait_for_peer_close().await;
        return Err(peer_gone());
    }
    if chunked && send_body {
        conn.write_all(b"0\r\n\r\n").await?;
    }
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

enum Source {
    Bytes(Bytes),
    Generated(u64),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Generated(n) => *n,
        }
    }
}
