//! What the two floors share: linkpush's config file (only `listen`, `cert`, `key` and `url`
//! are read, by line), its TLS setup (rustls with ring, ALPN h2) and its `check` subcommand, so
//! that `benches/compare.sh` and `benches/instructions.sh` run them in linkpush's place
//! (`LINKPUSH_BIN`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct Setup {
    pub listen: String,
    /// `host:port` of `upstream.url`.
    pub origin: String,
    pub tls: tokio_rustls::TlsAcceptor,
}

/// `None` for `check --config F` (the config is linkpush's: nothing to check here).
pub fn setup() -> Option<Setup> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("check") {
        return None;
    }
    let path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("usage: --config linkpush.toml");
    let conf = std::fs::read_to_string(path).expect("read the config");
    let field = |key: &str| {
        conf.lines()
            .find_map(|l| {
                let rest = l.trim().strip_prefix(key)?.trim_start();
                Some(rest.strip_prefix('=')?.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("no {key} in {path}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(field("cert"))
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(field("key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let origin = field("url");
    Some(Setup {
        listen: field("listen"),
        origin: origin
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
    })
}

/// Accepts connections until SIGTERM (then exits 0, so valgrind writes its profile), each
/// with TCP_NODELAY, TLS and the HTTP/2 handshake, and hands them to `serve`.
pub async fn run<F, Fut>(setup: Setup, serve: F)
where
    F: Fn(
            h2::server::Connection<
                tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
                bytes::Bytes,
            >,
        ) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(&setup.listen)
        .await
        .expect("bind");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        let (sock, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors, say: wait a little rather than spin on the error.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => std::process::exit(0),
        };
        let _ = sock.set_nodelay(true);
        let tls = setup.tls.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            let Ok(tls) = tls.accept(sock).await else {
                return;
            };
            let Ok(conn) = h2::server::handshake(tls).await else {
                return;
            };
            serve(conn).await;
        });
    }
}

/// Runs a proxying stand-in: `state` made once from the origin's `host:port`, and each stream's
/// request handed to `forward` with a clone of it, in a task of its own.
pub async fn proxy<S, F, Fut>(state: impl FnOnce(&str) -> S, forward: F)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>, S) -> Fut
        + Copy
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(setup) = setup() else {
        return;
    };
    let state = state(&setup.origin);
    run(setup, move |mut conn| {
        let state = state.clone();
        async move {
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(forward(req, respond, state.clone()));
            }
        }
    })
    .await;
}

/// [`proxy`] for a stand-in built on hyper's client: `forward` gets the request as
/// [`hyper_request`] makes it (a request it cannot make is dropped).
pub async fn hyper_proxy<S, F, Fut>(state: impl FnOnce(&str) -> S, forward: F)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(http::Request<Empty<Bytes>>, h2::server::SendResponse<Bytes>, S) -> Fut
        + Copy
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    proxy(state, move |req, respond, state| async move {
        if let Some(out) = hyper_request(req) {
            forward(out, respond, state).await;
        }
    })
    .await;
}

/// The upstream request for hyper: the h2 request's method, path and fields, and a Host.
pub fn hyper_request(req: http::Request<h2::RecvStream>) -> Option<http::Request<Empty<Bytes>>> {
    let (parts, _body) = req.into_parts();
    let pq = parts.uri.path_and_query()?.clone();
    let host = http::HeaderValue::from_str(parts.uri.authority()?.as_str()).ok()?;
    let mut out = http::Request::new(Empty::<Bytes>::new());
    *out.method_mut() = parts.method;
    *out.uri_mut() = http::Uri::from(pq);
    let mut headers = parts.headers;
    headers.insert(http::header::HOST, host);
    *out.headers_mut() = headers;
    Some(out)
}

/// A hyper connection that is ours to drive: the handle and its connection future.
pub type HyperConnection = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    hyper::client::conn::http1::Connection<
        hyper_util::rt::TokioIo<tokio::net::TcpStream>,
        Empty<Bytes>,
    >,
);

/// A new upstream connection (`TCP_NODELAY`) and hyper's HTTP/1.1 handshake on it.
pub async fn hyper_connect(origin: &str) -> Option<HyperConnection> {
    let tcp = tokio::net::TcpStream::connect(origin).await.ok()?;
    let _ = tcp.set_nodelay(true);
    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .ok()
}

/// A hyper response head as an h2 one: without Connection and Keep-Alive.
pub fn h2_head(mut head: http::response::Parts) -> http::Response<()> {
    head.headers.remove(http::header::CONNECTION);
    head.headers.remove("keep-alive");
    head.version = http::Version::HTTP_2;
    http::Response::from_parts(head, ())
}
