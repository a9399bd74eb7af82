//! Reading HTTP/1.1 requests off a connection by hand: the request head (RFC 9112 §3, §5) and the
//! body, by Content-Length or chunked (§6, §7.1), hashed as it is read and kept only for echo
//! routes.

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Gate;
use super::generated::hex;

/// Request heads larger than this get a 431 and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;

pub(super) struct Head {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) version: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
    pub(super) fn wants_keep_alive(&self) -> bool {
        let has = |token| self.values("connection").any(|v| has_token(v, token));
        if self.version == "HTTP/1.0" {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

pub(super) enum HeadError {
    Io,
    TooLarge,
    Malformed,
}

pub(super) enum BodyError {
    Io,
    Malformed,
}

pub(super) struct ReadBody {
    pub(super) len: u64,
    pub(super) sha256: String,
    /// Kept only for echo routes.
    pub(super) bytes: BytesMut,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    pub(super) async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Read more bytes into `buf`; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// `Ok(None)` when the peer closed cleanly between requests.
    pub(super) async fn read_head(&mut self) -> Result<Option<Head>, HeadError> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Io),
                Ok(_) => {}
            }
        };
        if end > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let raw = self.buf.split_to(end + 4);
        parse_head(&raw[..end])
            .map(Some)
            .ok_or(HeadError::Malformed)
    }

    pub(super) async fn read_body(
        &mut self,
        head: &Head,
        keep: bool,
    ) -> Result<ReadBody, BodyError> {
        let mut body = BodySink {
            hasher: Sha256::new(),
            len: 0,
            keep,
            bytes: BytesMut::new(),
        };
        let chunked = match head.values("transfer-encoding").last() {
            None => false,
            Some(v)
                if String::from_utf8_lossy(v)
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")) =>
            {
                true
            }
            Some(_) => return Err(BodyError::Malformed),
        };
        let length = if chunked {
            None
        } else {
            let mut lengths = head.values("content-length").map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            });
            match lengths.next() {
                None => Some(0),
                Some(None) => return Err(BodyError::Malformed),
                Some(Some(n)) => {
                    if lengths.any(|m| m != Some(n)) {
                        return Err(BodyError::Malformed);
                    }
                    Some(n)
                }
            }
        };
        let expects_body = chunked || length.is_some_and(|n| n > 0);
        if expects_body && head.values("expect").any(|v| has_token(v, "100-continue")) {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| BodyError::Io)?;
        }
        match length {
            Some(n) => self.read_exact_into(n, &mut body).await?,
            None => loop {
                let line = self.read_line().await?;
                let size = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| {
                        u64::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok()
                    })
                    .ok_or(BodyError::Malformed)?;
                if size == 0 {
                    // Trailer section, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                self.read_exact_into(size, &mut body).await?;
                if !self.read_line().await?.is_empty() {
                    return Err(BodyError::Malformed);
                }
            },
        }
        Ok(ReadBody {
            len: body.len,
            sha256: hex(&body.hasher.finalize()),
            bytes: body.bytes,
        })
    }

    async fn read_exact_into(&mut self, mut n: u64, sink: &mut BodySink) -> Result<(), BodyError> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Io);
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink.push(&self.buf[..take]);
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn read_line(&mut self) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return Ok(line[..i].to_vec());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(BodyError::Malformed);
            }
            if self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Io);
            }
        }
    }

    /// Wait for `gate`, but give up when the peer closes meanwhile. Bytes that arrive while
    /// waiting (a pipelined request) stay buffered.
    pub(super) async fn wait_gate(&mut self, gate: &Gate) -> std::io::Result<()> {
        loop {
            if self.buf.len() > MAX_HEAD {
                gate.wait().await;
                return Ok(());
            }
            tokio::select! {
                _ = gate.wait() => return Ok(()),
                read = self.fill() => match read {
                    Ok(0) | Err(_) => return Err(peer_gone()),
                    Ok(_) => {}
                },
            }
        }
    }

    pub(super) async fn wait_for_peer_close(&mut self) {
        let mut scratch = [0u8; 16 * 1024];
        while let Ok(n) = self.stream.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    }
}

struct BodySink {
    hasher: Sha256,
    len: u64,
    keep: bool,
    bytes: BytesMut,
}

impl BodySink {
    fn push(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
        if self.keep {
            self.bytes.extend_from_slice(data);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Request line and header fields (RFC 9112 §3, §5). `None` for anything malformed.
fn parse_head(raw: &[u8]) -> Option<Head> {
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || target.is_empty()
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        // RFC 9112 §5.1: no whitespace between the field name and the colon.
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        let value = line[colon + 1..].trim_ascii();
        headers.push((name.to_owned(), value.to_vec()));
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    })
}

pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub(super) fn peer_gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "peer closed the connection",
    )
}
