//! A raw HTTP/1.1 connection, for what curl and hyper would refuse to send or would hide: bad
//! heads, pipelining, hop-by-hop fields, 1xx, connections closed early. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::bounded;

/// One response read by hand: the head as text (without the final empty line) and the body (by
/// Content-Length).
#[derive(Debug)]
pub struct RawResponse {
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.head))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

pub struct RawConn {
    /// For tests that write without expecting success (the peer may have closed).
    pub stream: TcpStream,
    /// Bytes read and not yet taken by `read_head` / `read_response`.
    pub buf: Vec<u8>,
}

impl RawConn {
    pub async fn open(addr: SocketAddr) -> Self {
        RawConn {
            stream: bounded("connect", TcpStream::connect(addr))
                .await
                .expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// One response head (`HTTP/1.1 ...` up to the empty line); `None` if the connection closed
    /// before a whole head arrived.
    pub async fn read_head(&mut self) -> Option<RawResponse> {
        bounded("a response head", async {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let head = String::from_utf8(self.buf.drain(..end + 4).collect()).expect("UTF-8 head");
            Some(RawResponse {
                head: head.trim_end().to_owned(),
                body: Vec::new(),
            })
        })
        .await
    }

    /// One response head, then a body of Content-Length bytes (fewer if the connection closed
    /// first); `None` if the connection closed before a whole head arrived.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        let mut response = self.read_head().await?;
        let len: usize = response
            .header("content-length")
            .map_or(0, |v| v.parse().expect("content-length"));
        bounded("a response body", async {
            while self.buf.len() < len {
                if !self.fill().await {
                    break;
                }
            }
        })
        .await;
        response.body = self.buf.drain(..len.min(self.buf.len())).collect();
        Some(response)
    }

    /// Reads more into `buf`; false at EOF or on a reset.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match bounded("bytes from the peer", self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Waits (bounded) for the peer to close; true when it closed with no further bytes.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match bounded(
            "the peer to close the connection",
            self.stream.read(&mut chunk),
        )
        .await
        {
            Ok(0) | Err(_) => self.buf.is_empty(),
            Ok(_) => false,
        }
    }

    /// True when nothing arrives for `quiet` (a negative check: something must not happen yet).
    pub async fn quiet(&mut self, quiet: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        tokio::time::timeout(quiet, self.stream.read(&mut chunk))
            .await
            .is_err()
    }
}

/// One raw HTTP/2 frame (RFC 9113 §4.1): the 9-byte header, then `payload`. For frames a client
/// library would refuse to send, or connections driven byte by byte.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
