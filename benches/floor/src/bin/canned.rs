//! The front end's floor: every request answered in the connection's own task with a canned
//! response shaped like the origin's (nginx's seven fields; for `/index.html` also the five
//! Links of `benches/compare.sh`'s page and its 3,922 bytes, otherwise 100 bytes). No upstream,
//! no log, no checks: what tokio, rustls and the patched h2 cost per request on their own.

use bytes::Bytes;
use http::{HeaderValue, Response};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAGE_LINKS: [&str; 5] = [
    "</static/app.css>; rel=preload; as=style",
    "</static/vendor.js>; rel=preload; as=script",
    "</static/app.js>; rel=preload; as=script",
    "</static/font.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
    "</static/hero.jpg>; rel=preload; as=image",
];

fn response(page: bool) -> Response<()> {
    let mut res = Response::new(());
    let h = res.headers_mut();
    let (content_type, length) = if page {
        ("text/html", "3922")
    } else {
        ("text/plain", "100")
    };
    for (name, value) in [
        ("server", "nginx/1.22.1"),
        ("date", "Fri, 04 Dec 2026 04:10:00 GMT"),
        ("content-type", content_type),
        ("content-length", length),
        ("last-modified", "Fri, 04 Dec 2026 04:00:00 GMT"),
        ("etag", "\"6751c2a0-64\""),
        ("accept-ranges", "bytes"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if page {
        for link in PAGE_LINKS {
            h.append("link", HeaderValue::from_static(link));
        }
    }
    res
}

#[tokio::main]
async fn main() {
    let Some(setup) = linkpush_floor::setup() else {
        return;
    };
    let small = Bytes::from(vec![b'x'; 100]);
    let page = Bytes::from(vec![b'p'; 3922]);
    linkpush_floor::run(setup, move |mut conn| {
        let (small, page) = (small.clone(), page.clone());
        async move {
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let is_page = req.uri().path() == "/index.html";
                if let Ok(mut send) = respond.send_response(response(is_page), false) {
                    let body = if is_page { page.clone() } else { small.clone() };
                    let _ = send.send_data(body, true);
                }
            }
        }
    })
    .await;
}
