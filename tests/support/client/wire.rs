//! HTTP/2 frames as the server sent them: [`Frame`], the tap under the h2 client that parses the
//! bytes it reads into frames, and the parser of `nghttp -v` traces, which yields the same
//! [`Frame`]s with header blocks decoded.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::bounded;

/// One HTTP/2 frame received from the server, from the wire tap under the h2 client (header
/// blocks are not decoded there, so `headers` is empty) or from an `nghttp -nv` trace (with
/// `headers` decoded, in order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    /// `DATA`, `HEADERS`, `PRIORITY`, `RST_STREAM`, `SETTINGS`, `PUSH_PROMISE`, `PING`, `GOAWAY`,
    /// `WINDOW_UPDATE`, `CONTINUATION`, or `UNKNOWN`.
    pub kind: String,
    pub length: u32,
    pub flags: u8,
    pub stream_id: u32,
    /// PUSH_PROMISE.
    pub promised_stream_id: Option<u32>,
    /// RST_STREAM and GOAWAY.
    pub error_code: Option<u32>,
    /// GOAWAY.
    pub last_stream_id: Option<u32>,
    /// SETTINGS: (identifier, value) in frame order.
    pub settings: Vec<(u16, u32)>,
    /// HEADERS and PUSH_PROMISE, nghttp traces only: the decoded fields (for a PUSH_PROMISE, the
    /// promised request).
    pub headers: Vec<(String, String)>,
    /// nghttp traces only: nghttp rejected the frame with this error (`PROTOCOL_ERROR`, ...).
    pub invalid: Option<String>,
}

impl Frame {
    pub fn end_stream(&self) -> bool {
        matches!(self.kind.as_str(), "DATA" | "HEADERS") && self.flags & 0x1 != 0
    }

    /// The first value of a decoded header field (nghttp traces only).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 9113 §6 frame type names.
fn frame_kind(code: u8) -> &'static str {
    match code {
        0x0 => "DATA",
        0x1 => "HEADERS",
        0x2 => "PRIORITY",
        0x3 => "RST_STREAM",
        0x4 => "SETTINGS",
        0x5 => "PUSH_PROMISE",
        0x6 => "PING",
        0x7 => "GOAWAY",
        0x8 => "WINDOW_UPDATE",
        0x9 => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

/// Frames parsed from the bytes the server sent.
#[derive(Default)]
pub(super) struct WireLog {
    pending: BytesMut,
    pub(super) frames: Vec<Frame>,
}

impl WireLog {
    fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        // RFC 9113 §4.1: 24-bit length, 8-bit type, 8-bit flags, 31-bit stream id.
        while self.pending.len() >= 9 {
            let p = &self.pending;
            let length = u32::from_be_bytes([0, p[0], p[1], p[2]]);
            if self.pending.len() < 9 + length as usize {
                return;
            }
            let mut frame = self.pending.split_to(9 + length as usize);
            let header = frame.split_to(9);
            let kind = frame_kind(header[3]);
            let flags = header[4];
            let stream_id =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut out = Frame {
                kind: kind.to_owned(),
                length,
                flags,
                stream_id,
                ..Frame::default()
            };
            let mut payload = frame.freeze();
            match kind {
                "PUSH_PROMISE" => {
                    // §6.6: optional pad length (PADDED flag 0x8), then the promised stream id.
                    if flags & 0x8 != 0 && payload.has_remaining() {
                        payload.advance(1);
                    }
                    if payload.remaining() >= 4 {
                        out.promised_stream_id = Some(payload.get_u32() & 0x7fff_ffff);
                    }
                }
                "RST_STREAM" if payload.remaining() >= 4 => {
                    out.error_code = Some(payload.get_u32())
                }
                "GOAWAY" if payload.remaining() >= 8 => {
                    out.last_stream_id = Some(payload.get_u32() & 0x7fff_ffff);
                    out.error_code = Some(payload.get_u32());
                }
                "SETTINGS" => {
                    while payload.remaining() >= 6 {
                        out.settings.push((payload.get_u16(), payload.get_u32()));
                    }
                }
                _ => {}
            }
            self.frames.push(out);
        }
    }
}

/// Records every frame read from `io`, passing bytes through unchanged.
pub(super) struct Tap<T> {
    pub(super) io: T,
    pub(super) wire: Arc<Mutex<WireLog>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.wire.lock().unwrap().feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The frames a connection received so far, readable from another task.
#[derive(Clone)]
pub struct WireTap(pub(super) Arc<Mutex<WireLog>>);

impl WireTap {
    pub fn frames(&self) -> Vec<Frame> {
        self.0.lock().unwrap().frames.clone()
    }

    /// Waits (bounded) until a received frame matches.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Frame) -> bool) {
        let wait = async {
            loop {
                if self.frames().iter().any(&pred) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        bounded(format!("a frame: {what}"), wait).await
    }
}

/// The frames an `nghttp -v` trace shows as received, in order. nghttp prints a header block's
/// fields (`recv (stream_id=13) :status: 200`) before the line of the frame that carried them
/// (`recv HEADERS frame <length=92, flags=0x04, stream_id=13>`), then the frame's details on
/// indented lines (`(padlen=0, promised_stream_id=2)`, `(last_stream_id=4,
/// error_code=NO_ERROR(0x00), ...)`, `[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]`). Sent frames
/// are skipped. The format is nghttp2's src/app_helper.cc (`print_frame`,
/// `verbose_on_header_callback`).
pub fn parse_nghttp_frames(trace: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut fields = Vec::new();
    // Whether indented detail lines belong to the last received frame.
    let mut in_recv = false;
    for line in trace.lines().map(strip_ansi) {
        let line = line.as_str();
        if line.starts_with(char::is_whitespace) {
            if in_recv && let Some(frame) = frames.last_mut() {
                parse_nghttp_details(line.trim(), frame);
            }
            continue;
        }
        in_recv = false;
        // `[  0.001] recv ...`; other lines (`[ERROR]`, `Some requests were not processed`) are
        // not frames.
        let Some(rest) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .map(|(_, r)| r)
        else {
            continue;
        };
        // `[INVALID; status=PROTOCOL_ERROR] recv HEADERS frame <...>`: received, and rejected.
        let (invalid, rest) = match rest
            .strip_prefix("[INVALID; status=")
            .and_then(|r| r.split_once("] "))
        {
            Some((status, rest)) => (Some(status.to_owned()), rest),
            None => (None, rest),
        };
        let Some(rest) = rest.strip_prefix("recv ") else {
            continue;
        };
        if let Some(field) = rest.strip_prefix("(stream_id=") {
            // `(stream_id=13) name: value` or `(stream_id=13, sensitive) name: value`; with -vv
            // also `(stream_id=13, length=6, srecv=6, crecv=6) DATA`, which has no ": ".
            let Some((_, nv)) = field.split_once(") ") else {
                continue;
            };
            // Pseudo-header names start with ':' themselves.
            let split = nv.get(1..).and_then(|s| s.find(": ")).map(|i| i + 1);
            if let Some(i) = split {
                fields.push((nv[..i].to_owned(), nv[i + 2..].to_owned()));
            }
            continue;
        }
        let Some((kind, info)) = rest.split_once(" frame <") else {
            continue;
        };
        let mut frame = Frame {
            kind: kind.to_owned(),
            invalid,
            ..Frame::default()
        };
        for item in info.trim_end_matches('>').split(", ") {
            match item.split_once('=') {
                Some(("length", v)) => frame.length = v.parse().unwrap_or(0),
                Some(("flags", v)) => {
                    frame.flags = u8::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0)
                }
                Some(("stream_id", v)) => frame.stream_id = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        // The fields printed since the last frame line belong to this frame's header block.
        let block = std::mem::take(&mut fields);
        if matches!(kind, "HEADERS" | "PUSH_PROMISE") {
            frame.headers = block;
        }
        frames.push(frame);
        in_recv = true;
    }
    frames
}

fn parse_nghttp_details(line: &str, frame: &mut Frame) {
    // `[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]`
    if let Some(setting) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let id = setting
            .split_once("(0x")
            .and_then(|(_, r)| r.split_once(')'))
            .and_then(|(hex, _)| u16::from_str_radix(hex, 16).ok());
        let value = setting.rsplit_once(':').and_then(|(_, v)| v.parse().ok());
        if let (Some(id), Some(value)) = (id, value) {
            frame.settings.push((id, value));
        }
        return;
    }
    // `(padlen=0, promised_stream_id=2)`, `(error_code=CANCEL(0x08))`,
    // `(last_stream_id=4, error_code=NO_ERROR(0x00), opaque_data(0)=[])`
    let Some(inner) = line.strip_prefix('(').and_then(|s| s.strip_suffix(')')) else {
        return;
    };
    for item in inner.split(", ") {
        match item.split_once('=') {
            Some(("promised_stream_id", v)) => frame.promised_stream_id = v.parse().ok(),
            Some(("last_stream_id", v)) => frame.last_stream_id = v.parse().ok(),
            Some(("error_code", v)) => {
                frame.error_code = v
                    .split_once("(0x")
                    .and_then(|(_, r)| r.strip_suffix(')'))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
            }
            _ => {}
        }
    }
}

/// nghttp colours its output on a terminal; drop the escapes in case it did.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
