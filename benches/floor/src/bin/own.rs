//! `proxy` with a minimal HTTP/1.1 client of its own instead of hyper's: the request head
//! written in one buffer straight from the h2 request, the response head parsed once with
//! httparse into the map h2 sends, the body read in the stream's task. Only what the benchmark
//! origin sends is handled (a Content-Length body, keep-alive): a measurement of what an own
//! client could cost, not one linkpush could use.

use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Upstream {
    io: TcpStream,
    read: BytesMut,
}

type Idle = Arc<Mutex<Vec<Upstream>>>;

async fn checkout(idle: &Idle, origin: &str) -> Option<Upstream> {
    if let Some(up) = idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return Some(up);
    }
    let io = TcpStream::connect(origin).await.ok()?;
    let _ = io.set_nodelay(true);
    Some(Upstream {
        io,
        read: BytesMut::with_capacity(8192),
    })
}

/// The response head: status, fields without Connection and Keep-Alive, and the body length.
fn parse(buf: &mut BytesMut) -> Option<Option<(StatusCode, HeaderMap, usize)>> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut fields);
    let len = match res.parse(buf).ok()? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Some(None),
    };
    let status = StatusCode::from_u16(res.code?).ok()?;
    let mut map = HeaderMap::with_capacity(res.headers.len());
    let mut length = 0;
    for f in res.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
        if name == http::header::CONNECTION || name.as_str() == "keep-alive" {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            length = std::str::from_utf8(f.value).ok()?.parse().ok()?;
        }
        map.append(name, HeaderValue::from_bytes(f.value).ok()?);
    }
    buf.advance(len);
    Some(Some((status, map, length)))
}

async fn forward(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    (idle, origin): (Idle, Arc<str>),
) {
    let (parts, _body) = req.into_parts();
    let (Some(pq), Some(authority)) = (parts.uri.path_and_query(), parts.uri.authority()) else {
        return;
    };
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(parts.method.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(pq.as_str().as_bytes());
    head.put_slice(b" HTTP/1.1\r\nhost: ");
    head.put_slice(authority.as_str().as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    let Some(mut up) = checkout(&idle, &origin).await else {
        return;
    };
    if up.io.write_all(&head).await.is_err() {
        return;
    }
    let (status, fields, length) = loop {
        match parse(&mut up.read) {
            Some(Some(parsed)) => break parsed,
            Some(None) => {}
            None => return,
        }
        // A head over 64 KiB is refused, as linkpush refuses one.
        if up.read.len() > 64 * 1024 {
            return;
        }
        match up.io.read_buf(&mut up.read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.headers_mut() = fields;
    let Ok(mut send) = respond.send_response(res, false) else {
        return;
    };
    let mut left = length;
    while left > 0 {
        if up.read.is_empty() {
            match up.io.read_buf(&mut up.read).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let n = left.min(up.read.len());
        let _ = send.send_data(up.read.split_to(n).freeze(), false);
        left -= n;
    }
    let _ = send.send_data(Bytes::new(), true);
    if up.read.capacity() < 4096 {
        up.read.reserve(8192);
    }
    idle.lock().unwrap_or_else(|p| p.into_inner()).push(up);
}

#[tokio::main]
async fn main() {
    linkpush_floor::proxy(|origin| (Idle::default(), Arc::from(origin)), forward).await;
}
