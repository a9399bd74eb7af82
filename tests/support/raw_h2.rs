//! Bare HTTP/2 for tests that must send what no client library sends (floods, bombs, a GOAWAY
//! mid-page): frames and HPACK built by hand, and frames read back by header.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::bounded;

/// RFC 9113 §6 frame types.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
/// Flags: END_STREAM (DATA, HEADERS), ACK (SETTINGS, PING), END_HEADERS.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// HPACK: a literal field with incremental indexing, new name (RFC 7541 §6.2.1).
pub fn hpack_literal_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_string(&mut out, name);
    hpack_string(&mut out, value);
    out
}

/// HPACK: a literal field without indexing, new name (RFC 7541 §6.2.2).
pub fn hpack_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_string(&mut out, name);
    hpack_string(&mut out, value);
    out
}

/// RFC 7541 §5.1 (7-bit prefix, no Huffman) and §5.2.
pub fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// `GET http://localhost/` as HPACK: static-table indices 2 (:method GET), 6 (:scheme http),
/// 4 (:path /), and :authority (index 1) as a literal.
pub fn hpack_get_root() -> Vec<u8> {
    let mut out = vec![0x82, 0x86, 0x84, 0x41];
    hpack_string(&mut out, b"localhost");
    out
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One header block on `stream` as HEADERS and as many CONTINUATION frames as the default
/// SETTINGS_MAX_FRAME_SIZE (16384) requires.
pub fn header_block_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 && end_stream {
            flags |= END_STREAM;
        }
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        out.extend(frame(kind, flags, stream, chunk));
    }
    out
}

/// A bare HTTP/2 connection: preface and empty SETTINGS sent.
pub async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut tcp = bounded("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&frame(0x4, 0, 0, &[]));
    tcp.write_all(&hello).await.expect("preface");
    tcp
}

/// Reads frames until one matches `done` or the server closes; the frames (type, flags,
/// stream) and whether the connection closed.
pub async fn read_frames_until(
    tcp: &mut TcpStream,
    done: impl Fn(u8, u8, u32) -> bool,
) -> (Vec<(u8, u8, u32)>, bool) {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let closed = bounded("a reaction from the server", async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return true;
            }
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let f: Vec<u8> = buf.drain(..9 + len).collect();
                let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                frames.push((f[3], f[4], stream));
                if done(f[3], f[4], stream) {
                    return false;
                }
            }
        }
    })
    .await;
    (frames, closed)
}

/// `GET http://localhost{path}` as HPACK: static-table indices 2 (:method GET), 6 (:scheme
/// http), then :path (index 4) and :authority (index 1) as literals without indexing.
pub fn hpack_get(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86, 0x04];
    hpack_string(&mut out, path.as_bytes());
    out.push(0x01);
    hpack_string(&mut out, b"localhost");
    out
}
