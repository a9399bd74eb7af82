//! A proxy's floor on the same stack: the patched h2 in front, hyper's HTTP/1.1 client behind
//! (ready handles in one shared list), a task per stream. The request goes upstream with its
//! fields and a Host; the response comes back without Connection and Keep-Alive. No log,
//! limits, timeouts, X-Forwarded-*, Link handling or flow-control pacing: none of linkpush's
//! own work.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

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
    let tcp = tokio::net::TcpStream::connect(origin).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (handle, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(handle)
}

async fn forward(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    idle: Idle,
    origin: Arc<str>,
) {
    let (parts, _body) = req.into_parts();
    let (Some(pq), Some(authority)) = (parts.uri.path_and_query(), parts.uri.authority()) else {
        return;
    };
    let mut out = http::Request::new(Empty::<Bytes>::new());
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = http::Uri::from(pq.clone());
    let mut headers = parts.headers;
    if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
        headers.insert(http::header::HOST, host);
    }
    *out.headers_mut() = headers;
    let Some(mut handle) = checkout(&idle, &origin).await else {
        return;
    };
    let Ok(res) = handle.send_request(out).await else {
        return;
    };
    let (mut head, mut body) = res.into_parts();
    head.headers.remove(http::header::CONNECTION);
    head.headers.remove("keep-alive");
    head.version = http::Version::HTTP_2;
    let Ok(mut send) = respond.send_response(http::Response::from_parts(head, ()), false) else {
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
    let Some(setup) = linkpush_floor::setup() else {
        return;
    };
    let idle: Idle = Arc::default();
    let origin: Arc<str> = setup.origin.clone().into();
    linkpush_floor::run(setup, move |mut conn| {
        let (idle, origin) = (idle.clone(), origin.clone());
        async move {
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(forward(req, respond, idle.clone(), origin.clone()));
            }
        }
    })
    .await;
}
