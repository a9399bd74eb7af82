//! A proxy's floor on the same stack: the patched h2 in front, hyper's HTTP/1.1 client behind
//! (ready handles in one shared list), a task per stream. The request goes upstream with its
//! fields and a Host; the response comes back without Connection and Keep-Alive. No log,
//! limits, timeouts, X-Forwarded-*, Link handling or flow-control pacing: none of linkpush's
//! own work.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Idle = Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>>;

async fn checkout(idle: &Idle, origin: &str) -> Option<SendRequest<Empty<Bytes>>> {
    loop {
        let handle = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match handle {
            Some(h) if h.is_ready() => return Some(h),
            Some(_) => continue,
            None => break,
        }
    }
    let (handle, conn) = linkpush_floor::hyper_connect(origin).await?;
    tokio::spawn(conn);
    Some(handle)
}

async fn forward(
    out: http::Request<Empty<Bytes>>,
    mut respond: h2::server::SendResponse<Bytes>,
    (idle, origin): (Idle, Arc<str>),
) {
    let Some(mut handle) = checkout(&idle, &origin).await else {
        return;
    };
    let Ok(res) = handle.send_request(out).await else {
        return;
    };
    let (head, mut body) = res.into_parts();
    let Ok(mut send) = respond.send_response(linkpush_floor::h2_head(head), false) else {
        return;
    };
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let _ = send.send_data(data, false);
        }
    }
    let _ = send.send_data(Bytes::new(), true);
    idle.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
}

#[tokio::main]
async fn main() {
    linkpush_floor::hyper_proxy(|origin| (Idle::default(), Arc::from(origin)), forward).await;
}
