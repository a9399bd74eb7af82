//! TLS handshakes that fail are counted by reason in `linkpush_tls_handshake_errors_total`, and
//! never disturb the next client.

mod support;

use std::sync::Arc;

use http::StatusCode;
use support::{client::*, proxy::*, upstream::*};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn handshake_errors(reason: &str) -> String {
    format!("linkpush_tls_handshake_errors_total{{reason=\"{reason}\"}}")
}

/// A client that trusts no certificate at all, as a browser does with a self-signed one: it
/// refuses the proxy's certificate with a fatal alert.
async fn handshake_trusting_nothing(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_by_reason() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;

    // eof: connect and close, as a TCP probe does.
    drop(TcpStream::connect(proxy.addr).await.expect("connect"));
    // protocol: cleartext HTTP/1.1 on the TLS port.
    let mut plain = TcpStream::connect(proxy.addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = bounded("the proxy to close", plain.read_to_end(&mut sink)).await;
    // protocol: no ALPN protocol in common (RFC 7301 §3.2: no_application_protocol).
    assert!(tls_alpn(proxy.addr, &[b"spdy/3"]).await.is_err());
    // certificate: the client refuses the certificate.
    assert!(handshake_trusting_nothing(proxy.addr).await.is_err());

    let metrics = proxy
        .metrics_when("four handshake errors", |m| {
            sample(m, &handshake_errors("eof"))
                + sample(m, &handshake_errors("protocol"))
                + sample(m, &handshake_errors("certificate"))
                >= 4.0
        })
        .await;
    for line in [
        format!("{} 1", handshake_errors("eof")),
        format!("{} 2", handshake_errors("protocol")),
        format!("{} 1", handshake_errors("certificate")),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }

    // None of it disturbs the next client.
    let opts = H2Options {
        tls: true,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    assert_eq!(h2_get(&mut client, "/", &[]).await.status, StatusCode::OK);
    assert!(
        !proxy.metrics().await.contains(&handshake_errors("timeout")),
        "no handshake timed out"
    );
}
