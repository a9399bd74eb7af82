//! Tunnels after a protocol switch (WebSocket): what the HTTP/1.1 Upgrade path and the HTTP/2
//! extended CONNECT path (`h2::tunnel`) share — the upgrade request to the upstream, the idle
//! timeout (`server.tunnel_idle_timeout`), and the byte relay between two upgraded connections.
//!
//! A tunnel holds its upstream connection's `max_connections` slot until it closes: the
//! connection is open and out of the pool for that long.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use crate::metrics::{Metrics, Protocol};

/// The `Upgrade` token of an HTTP/1.1 request that asks to switch protocols, if it does and
/// linkpush passes it on: RFC 9110 §7.8 wants `upgrade` listed in `Connection` and has a server
/// ignore Upgrade in an HTTP/1.0 request. `h2c` is ours to answer, not the backend's, and is
/// ignored as RFC 9110 §7.8 permits (RFC 9113 §3.1 deprecated that upgrade): the request is then
/// served as HTTP/1.1, which is what such a client expects from a server without h2c upgrade.
pub fn upgrade_token(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(header::UPGRADE)?;
    let h2c = upgrade
        .to_str()
        .is_ok_and(|v| v.split(',').all(|t| t.trim().eq_ignore_ascii_case("h2c")));
    (listed && !h2c).then(|| upgrade.clone())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1: "randomly selected",
/// no stronger requirement; the key proves only that the server read this handshake). The bytes
/// come from std's randomly keyed SipHash over a counter, unpredictable from outside the process.
pub fn websocket_key() -> HeaderValue {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = RandomState::new();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&state.hash_one((n, 0u8)).to_le_bytes());
    bytes[8..].copy_from_slice(&state.hash_one((n, 1u8)).to_le_bytes());
    let encoded = base64(&bytes);
    HeaderValue::from_str(&encoded)
        .unwrap_or_else(|_| HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// When the tunnel last moved a byte, either way.
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let due = last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// An IO that records its reads in an [`Activity`]: every byte relayed is read from one side.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays bytes between the client's and the upstream's upgraded HTTP/1.1 connections until
/// either side closes (its EOF is passed on as a write shutdown, then both connections are
/// dropped, as nginx does), either side fails, or nothing moved for `idle`. Holds the upstream
/// slot (`permit`) and the tunnel gauge meanwhile, so a closed tunnel frees the slot at once.
pub async fn relay_h1(
    metrics: Metrics,
    idle: Duration,
    client: OnUpgrade,
    upstream: crate::upstream::conn::Upgraded,
    permit: Option<crate::upstream::Held>,
) {
    let _permit = permit;
    let client = match client.await {
        Ok(client) => client,
        Err(err) => {
            debug!(error = %err, "upgrade failed");
            return;
        }
    };
    let _gauge = metrics.tunnel(Protocol::Http1);
    let activity = Activity::new();
    let client = Tracked::new(TokioIo::new(client), activity.clone());
    let upstream = Tracked::new(upstream, activity.clone());
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        copied
    };
    tokio::select! {
        res = up => debug!(result = ?res, "tunnel closed by the client"),
        res = down => debug!(result = ?res, "tunnel closed by the upstream"),
        _ = activity.idle(idle) => debug!(?idle, "tunnel idle; closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, out) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"the sample nonce", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            assert_eq!(base64(input), out);
        }
        let a = websocket_key();
        assert_eq!(a.len(), 24);
        assert_ne!(a, websocket_key());
    }

    #[test]
    fn upgrade_token_rules() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let v11 = http::Version::HTTP_11;
        let ws = h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_token(v11, &ws).unwrap(), "websocket");
        assert!(upgrade_token(http::Version::HTTP_10, &ws).is_none());
        assert!(upgrade_token(v11, &h(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_token(v11, &h(&[("connection", "upgrade"), ("upgrade", "h2c")])).is_none());
        let other = h(&[("connection", "upgrade"), ("upgrade", "foo/2")]);
        assert_eq!(upgrade_token(v11, &other).unwrap(), "foo/2");
    }
}
