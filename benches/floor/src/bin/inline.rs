//! `proxy` with hyper's upstream connection driven by the stream's own task instead of a task of
//! its own: the request, the response head and the body are polled together with the
//! connection, and an idle connection is kept with its handle, polled again when next used.
//! Measures what the task and its wakeups cost (see `proxy` for everything else).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Conn = Connection<TokioIo<tokio::net::TcpStream>, Empty<Bytes>>;
type Upstream = (SendRequest<Empty<Bytes>>, Conn);
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
    let tcp = tokio::net::TcpStream::connect(origin).await.ok()?;
    let _ = tcp.set_nodelay(true);
    hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()
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
    let Some((mut handle, mut conn)) = checkout(&idle, &origin).await else {
        return;
    };
    let res = tokio::select! {
        biased;
        res = handle.send_request(out) => res,
        _ = &mut conn => return,
    };
    let Ok(res) = res else { return };
    let (mut head, mut body) = res.into_parts();
    head.headers.remove(http::header::CONNECTION);
    head.headers.remove("keep-alive");
    head.version = http::Version::HTTP_2;
    let Ok(mut send) = respond.send_response(http::Response::from_parts(head, ()), false) else {
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
