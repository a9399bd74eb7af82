//! `linkpush healthcheck`: one `GET /healthz` to the admin listener, for a container's
//! `HEALTHCHECK`. The image is `FROM scratch` (no shell, no curl), so the binary probes itself.
//!
//! The admin listener is plain HTTP/1.1; the exchange goes through hyper's client connection so
//! framing (chunked or sized bodies, keep-alive) is handled by the same library the admin
//! listener serves with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("no [admin] listener in the configuration (add one, or pass --addr)")]
    NoAdmin,
    #[error("cannot connect to the admin listener at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the admin listener at {addr} within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("bad HTTP exchange with the admin listener at {addr}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("unhealthy: http://{addr}/healthz answered {status}")]
    Unhealthy {
        addr: SocketAddr,
        status: StatusCode,
    },
}

/// Where to send the probe for an admin listener bound to `listen`, in order of preference.
///
/// A wildcard bind accepts on every interface, loopback included, and loopback is the one
/// interface a container always has. For `[::]` the IPv4 loopback comes first: Docker disables
/// IPv6 in containers on networks without it (so `::1` does not exist), while Linux's dual-stack
/// `[::]` socket (`net.ipv6.bindv6only = 0`) still accepts on 127.0.0.1; `::1` is the fallback
/// for a v6-only socket.
pub fn probe_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    let port = listen.port();
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]
        }
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ],
        _ => vec![listen],
    }
}

/// Probes `/healthz` for an admin listener bound to `listen`, all of it within `timeout`.
/// Returns the address that answered 200.
pub async fn probe(listen: SocketAddr, timeout: Duration) -> Result<SocketAddr, HealthcheckError> {
    let candidates = probe_addrs(listen);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for addr in candidates {
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(HealthcheckError::Timeout {
                    addr,
                    after: timeout,
                });
            }
            Ok(Err(source)) => {
                last = Some(HealthcheckError::Connect { addr, source });
                continue;
            }
            Ok(Ok(stream)) => stream,
        };
        return match tokio::time::timeout_at(deadline, get_healthz(addr, stream)).await {
            Err(_) => Err(HealthcheckError::Timeout {
                addr,
                after: timeout,
            }),
            Ok(Ok(StatusCode::OK)) => Ok(addr),
            Ok(Ok(status)) => Err(HealthcheckError::Unhealthy { addr, status }),
            Ok(Err(err)) => Err(err),
        };
    }
    // `probe_addrs` never returns an empty list, so `last` is set here.
    Err(last.unwrap_or(HealthcheckError::NoAdmin))
}

async fn get_healthz(addr: SocketAddr, stream: TcpStream) -> Result<StatusCode, HealthcheckError> {
    let http = |source| HealthcheckError::Http { addr, source };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection future does the socket I/O; the response head arrives through `sender`.
    let connection = tokio::spawn(connection);
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = Uri::from_static("/healthz");
    let headers = request.headers_mut();
    // RFC 9112 §3.2: a client MUST send Host in every HTTP/1.1 request. A socket address is
    // always a valid header value.
    if let Ok(host) = HeaderValue::try_from(addr.to_string()) {
        headers.insert(header::HOST, host);
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("linkpush-healthcheck"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let result = sender.send_request(request).await.map_err(http);
    connection.abort();
    Ok(result?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(listen: &str) -> Vec<String> {
        probe_addrs(listen.parse().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_wildcard_bind_is_probed_on_loopback() {
        assert_eq!(addrs("0.0.0.0:9901"), ["127.0.0.1:9901"]);
        assert_eq!(addrs("[::]:9901"), ["127.0.0.1:9901", "[::1]:9901"]);
    }

    #[test]
    fn a_specific_bind_is_probed_where_it_is() {
        assert_eq!(addrs("10.1.2.3:9901"), ["10.1.2.3:9901"]);
        assert_eq!(addrs("[::1]:9901"), ["[::1]:9901"]);
    }
}
