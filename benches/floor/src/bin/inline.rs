//! `proxy` with hyper's upstream connection driven by the stream's own task instead of a task of
//! its own: the request, the response head and the body are polled together with the
//! connection, and an idle connection is kept with its handle, polled again when next used.
//! Measures what the task and its wakeups cost (see `proxy` for everything else).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = linkpush_floor::HyperConnection;
type Idle = Arc<Mutex<Vec<Upstream>>>;

async fn checkout(idle: &Idle, origin: &str) -> Option<Upstream> {
    let pooled = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
    if let Some((mut handle, mut conn)) = pooled {
        // The connection was not polled since its last response: let it take up the next
        // request (or find it closed).
        let ready = tokio::select! {
            biased;
            r = handle.ready() => r.is_ok(),
            _ = &mut conn => false,
        };
        if ready {
            return Some((handle, conn));
        }
    }
    linkpush_floor::hyper_connect(origin).await
}

async fn forward(
    out: http::Request<Empty<Bytes>>,
    mut respond: h2::server::SendResponse<Bytes>,
    (idle, origin): (Idle, Arc<str>),
) {
    let Some((mut handle, mut conn)) = checkout(&idle, &origin).await else {
        return;
    };
    let res = tokio::select! {
        biased;
        res = handle.send_request(out) => res,
        _ = &mut conn => return,
    };
    let Ok(res) = res else { return };
    let (head, mut body) = res.into_parts();
    let Ok(mut send) = respond.send_response(linkpush_floor::h2_head(head), false) else {
        return;
    };
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = &mut conn => return,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let _ = send.send_data(data, false);
                }
            }
            Some(Err(_)) => return,
            None => break,
        }
    }
    let _ = send.send_data(Bytes::new(), true);
    idle.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((handle, conn));
}

#[tokio::main]
async fn main() {
    linkpush_floor::hyper_proxy(|origin| (Idle::default(), Arc::from(origin)), forward).await;
}
