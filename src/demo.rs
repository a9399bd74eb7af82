//! The built-in demo: a small HTTP/1.1 site whose pages carry preload Link headers (assets of
//! realistic sizes, one `nopush` link, one page that "thinks" 200 ms to show learned hints),
//! served in-process behind the proxy over TLS with a certificate made at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The page's preload links, as a framework would send them.
pub const PAGE_LINKS: [&str; 5] = [
    "</static/app.css>; rel=preload; as=style",
    "</static/app.js>; rel=preload; as=script",
    "</static/inter.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
    "</static/hero.svg>; rel=preload; as=image",
    "</static/analytics.js>; rel=preload; as=script; nopush",
];

/// How long `/think` waits before answering, like a backend rendering a page.
pub const THINK_TIME: Duration = Duration::from_millis(200);

struct Site {
    index: Bytes,
    assets: Vec<(&'static str, &'static str, Bytes)>,
}

fn filler(prefix: &str, line: &str, size: usize) -> Bytes {
    let mut s = String::with_capacity(size + line.len());
    s.push_str(prefix);
    let mut i = 0usize;
    while s.len() < size {
        s.push_str(&line.replace("{i}", &i.to_string()));
        i += 1;
    }
    s.truncate(size);
    Bytes::from(s)
}

fn binary(size: usize, seed: u32) -> Bytes {
    // A deterministic, incompressible-looking font stand-in (xorshift).
    let mut x = seed.max(1);
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(b"wOF2");
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x & 0xff) as u8);
    }
    Bytes::from(v)
}

impl Site {
    fn new() -> Self {
        let index = Bytes::from_static(
            b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>linkpush demo</title>\n\
<link rel=\"stylesheet\" href=\"/static/app.css\">\n<script src=\"/static/app.js\" defer></script>\n\
<script src=\"/static/analytics.js\" defer></script></head>\n\
<body><h1>linkpush demo</h1><img src=\"/static/hero.svg\" alt=\"\" width=\"800\" height=\"300\">\n\
<p>The stylesheet, script, font and image were pushed (HTTP/2 clients that accept push) or\n\
announced in a 103 Early Hints response (browsers). analytics.js is marked nopush: hinted only.</p>\n\
</body></html>\n",
        );
        let assets = vec![
            (
                "/static/app.css",
                "text/css",
                filler(
                    "@font-face{font-family:Inter;src:url(/static/inter.woff2) format(\"woff2\")}\n",
                    ".c{i}{margin:0 auto;padding:{i}px;font-family:Inter,sans-serif}\n",
                    20 * 1024,
                ),
            ),
            (
                "/static/app.js",
                "text/javascript",
                filler(
                    "\"use strict\";\n",
                    "function f{i}(a){return a*{i}+1}\n",
                    80 * 1024,
                ),
            ),
            (
                "/static/analytics.js",
                "text/javascript",
                filler("\"use strict\";\n", "void {i};\n", 5 * 1024),
            ),
            ("/static/inter.woff2", "font/woff2", binary(30 * 1024, 7)),
            (
                "/static/hero.svg",
                "image/svg+xml",
                filler(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"300\">\n",
                    "<rect x=\"{i}\" y=\"3\" width=\"5\" height=\"5\" fill=\"#4a8\"/>\n",
                    50 * 1024,
                ),
            ),
        ];
        Site { index, assets }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let mut res = match path {
            "/" | "/index.html" | "/think" => {
                if path == "/think" {
                    tokio::time::sleep(THINK_TIME).await;
                }
                let mut res = Response::new(Full::new(self.index.clone()));
                let headers = res.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                for link in PAGE_LINKS {
                    headers.append(header::LINK, header::HeaderValue::from_static(link));
                }
                res
            }
            _ => match self.assets.iter().find(|(p, _, _)| *p == path) {
                Some((_, content_type, body)) => {
                    let mut res = Response::new(Full::new(body.clone()));
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(content_type),
                    );
                    res.headers_mut().insert(
                        header::CACHE_CONTROL,
                        header::HeaderValue::from_static("public, max-age=3600"),
                    );
                    res
                }
                None => {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
                    *res.status_mut() = StatusCode::NOT_FOUND;
                    res
                }
            },
        };
        if req.method() == http::Method::HEAD {
            *res.body_mut() = Full::new(Bytes::new());
        }
        res
    }
}

/// Serves the demo site on `listener` until the task is dropped.
pub async fn serve_backend(listener: TcpListener) {
    let site = Arc::new(Site::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        let site = site.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(site.respond(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// Starts the demo backend on an ephemeral loopback port.
pub async fn start_backend() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_backend(listener));
    Ok(addr)
}

/// The demo's proxy configuration: defaults, in front of `backend`, on `listen`, with the admin
/// listener (`/metrics`, `/healthz`) on `admin` when given.
pub fn config(
    listen: SocketAddr,
    backend: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<crate::Config, crate::config::ConfigError> {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\n[upstream]\nurl = \"http://{backend}\"\n[log]\nlevel = \"info\"\n"
    );
    if let Some(admin) = admin {
        text.push_str(&format!("[admin]\nlisten = \"{admin}\"\n"));
    }
    crate::Config::from_toml_str(&text, std::path::Path::new("<demo>"), &|_| None)
}
