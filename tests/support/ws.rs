//! WebSocket for the tunnel tests: a minimal RFC 6455 frame codec, a scripted upstream that
//! performs the opening handshake (§4.2) and echoes every data frame, and the client side of the
//! HTTP/1.1 handshake (§4.1) checking `Sec-WebSocket-Accept`. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::bounded;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// RFC 6455 §1.3: base64(SHA-1(key + GUID)).
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha.finalize())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// One final frame (FIN set). Clients mask (§5.3), servers do not.
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// One whole frame off the front of `buf`: (opcode, unmasked payload, was it masked), or `None`
/// if `buf` does not hold one yet.
pub fn decode(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>, bool)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key: Option<[u8; 4]> = if masked {
        let k = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?.to_vec();
    buf.drain(..at + len);
    let payload = match key {
        Some(k) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
        None => payload,
    };
    Some((opcode, payload, masked))
}

/// Reads frames off `io` into `buf` until one is whole; `None` at EOF.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> Option<(u8, Vec<u8>, bool)> {
    bounded("a WebSocket frame", async {
        loop {
            if let Some(frame) = decode(buf) {
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// The request heads the echo upstream received, as text, one per connection.
pub struct WsUpstream {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    /// An upstream that answers a WebSocket handshake with 101 (any other request with 400) and
    /// then echoes every text and binary frame unmasked, answers a close with a close, and counts
    /// client frames that arrived unmasked as a protocol failure (it closes at once).
    pub async fn echo() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve_echo(stream, recorded).await;
                });
            }
        });
        WsUpstream { addr, heads, task }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// The first value of field `name` in a head given as text.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

async fn serve_echo(
    mut stream: tokio::net::TcpStream,
    recorded: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    recorded.lock().unwrap().push(head.clone());
    let is_ws = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && header(&head, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    let Some(key) = header(&head, "sec-websocket-key").filter(|_| is_ws) else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nconnection: close\r\n\r\nno upgrade\n")
            .await?;
        return Ok(());
    };
    let mut reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_for(key)
    );
    if let Some(p) = header(&head, "sec-websocket-protocol") {
        let first = p.split(',').next().unwrap_or(p).trim();
        reply.push_str(&format!("Sec-WebSocket-Protocol: {first}\r\n"));
    }
    reply.push_str("\r\n");
    stream.write_all(reply.as_bytes()).await?;
    loop {
        let Some((opcode, payload, masked)) = read_frame(&mut stream, &mut buf).await else {
            return Ok(());
        };
        if !masked {
            // RFC 6455 §5.1: a server MUST close on an unmasked client frame.
            return Ok(());
        }
        match opcode {
            CLOSE => {
                stream.write_all(&encode(CLOSE, &payload, None)).await?;
                stream.shutdown().await?;
                return Ok(());
            }
            _ => stream.write_all(&encode(opcode, &payload, None)).await?,
        }
    }
}

/// Client side of the HTTP/1.1 opening handshake on `io` (§4.1): returns the 101 head after
/// checking its Sec-WebSocket-Accept. Panics on any other answer.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    host: &str,
    path: &str,
    buf: &mut Vec<u8>,
) -> String {
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.expect("write handshake");
    let head = bounded("the 101 head", async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                buf.drain(..i + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await.expect("read 101");
            assert!(n > 0, "closed before the handshake answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(accept_for(key).as_str()),
        "{head}"
    );
    head
}

/// Messages a test sends through a tunnel: a short text, a 200 KB binary (several DATA frames
/// and flow-control windows on HTTP/2), and the close handshake.
pub fn messages() -> Vec<(u8, Vec<u8>)> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    vec![(TEXT, b"hello through linkpush".to_vec()), (BINARY, big)]
}

/// Sends each of [`messages`] masked and expects it echoed unmasked, then closes and expects the
/// upstream's close and the end of the stream.
pub async fn echo_session<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, buf: &mut Vec<u8>) {
    for (i, (opcode, payload)) in messages().into_iter().enumerate() {
        let mask = [0x12, 0x34, 0x56, i as u8];
        io.write_all(&encode(opcode, &payload, Some(mask)))
            .await
            .expect("write frame");
        let (op, echoed, masked) = read_frame(io, buf).await.expect("echoed frame");
        assert_eq!((op, masked), (opcode, false));
        assert!(echoed == payload, "message {i} echoed differently");
    }
    io.write_all(&encode(CLOSE, &1000u16.to_be_bytes(), Some([1, 2, 3, 4])))
        .await
        .expect("write close");
    let (op, payload, _) = read_frame(io, buf).await.expect("close frame");
    assert_eq!((op, payload), (CLOSE, 1000u16.to_be_bytes().to_vec()));
    let mut rest = [0u8; 16];
    let n = bounded("the tunnel to close", io.read(&mut rest))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "bytes after the close");
}
