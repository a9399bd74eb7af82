//! The front end's floor: every request answered in the connection's own task with a canned
//! response (nginx's seven fields for a 100-byte file, and the 100 bytes). No upstream, no
//! log, no checks: what tokio, rustls and the patched h2 cost per request on their own.

use bytes::Bytes;
use http::{HeaderValue, Response};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let Some(setup) = linkpush_floor::setup() else {
        return;
    };
    let body = Bytes::from(vec![b'x'; 100]);
    linkpush_floor::run(setup, move |mut conn| {
        let body = body.clone();
        async move {
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                let mut res = Response::new(());
                let h = res.headers_mut();
                for (name, value) in [
                    ("server", "nginx/1.26.3"),
                    ("date", "Fri, 04 Dec 2026 04:10:00 GMT"),
                    ("content-type", "text/plain"),
                    ("content-length", "100"),
                    ("last-modified", "Fri, 04 Dec 2026 04:00:00 GMT"),
                    ("etag", "\"6751c2a0-64\""),
                    ("accept-ranges", "bytes"),
                ] {
                    h.insert(name, HeaderValue::from_static(value));
                }
                if let Ok(mut send) = respond.send_response(res, false) {
                    let _ = send.send_data(body.clone(), true);
                }
            }
        }
    })
    .await;
}
