//! Starts the real proxy in-process on 127.0.0.1:0 in front of a test upstream.

use std::net::SocketAddr;
use std::path::Path;

use linkpush::config::Config;
use linkpush::{Server, TlsSource};

pub struct Proxy {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    /// Cleartext (HTTP/1.1 and h2c on one port), admin on, defaults otherwise; `tweak` edits the
    /// validated config before start.
    pub async fn start(upstream: SocketAddr, tweak: impl FnOnce(&mut Config)) -> Proxy {
        Self::start_inner(upstream, tweak, false).await
    }

    /// Same over TLS with a self-signed certificate (ALPN h2 and http/1.1).
    pub async fn start_tls(upstream: SocketAddr, tweak: impl FnOnce(&mut Config)) -> Proxy {
        Self::start_inner(upstream, tweak, true).await
    }

    async fn start_inner(
        upstream: SocketAddr,
        tweak: impl FnOnce(&mut Config),
        tls: bool,
    ) -> Proxy {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{upstream}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n"
        );
        let mut config =
            Config::from_toml_str(&text, Path::new("<test>"), &|_| None).expect("test config");
        tweak(&mut config);
        let source = if tls {
            let (key, _) = linkpush::listener::tls::self_signed().expect("self-signed cert");
            TlsSource::Certificate(key)
        } else {
            TlsSource::FromConfig
        };
        let server = Server::start_with(config, source)
            .await
            .expect("proxy starts");
        let addr = server.local_addrs()[0];
        let admin = server.admin_addr();
        Proxy {
            server: Some(server),
            addr,
            admin,
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// `/metrics` from the admin listener, over a plain HTTP/1.1 request.
    pub async fn metrics(&self) -> String {
        admin_get(self.admin.expect("admin listener"), "/metrics")
            .await
            .1
    }

    /// `/metrics` once `settled` holds for it: counters recorded by tasks that outlive the
    /// exchange (pushes) land a moment after the client saw the outcome. Bounded by `TIMEOUT`.
    pub async fn metrics_when(&self, what: &str, settled: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                let m = self.metrics().await;
                if settled(&m) {
                    return m;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        super::client::bounded(format!("metrics: {what}"), wait).await
    }

    pub async fn shutdown(mut self) -> bool {
        self.server.take().expect("running").shutdown().await
    }
}

/// A minimal HTTP/1.1 GET (Connection: close) returning status and body as text.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect admin");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut)
        .await
        .expect("admin answered in time")
}

/// The value of one exact Prometheus sample line (`name{labels}`), or 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
