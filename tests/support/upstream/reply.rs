//! [`Reply`]: what a route of the fake upstream answers, and how it misbehaves.

use bytes::Bytes;

use super::Gate;

#[derive(Clone, Debug)]
pub(super) enum Body {
    Bytes(Bytes),
    /// `len` deterministic bytes, see [`generated_body`](super::generated_body).
    Generated(u64),
    /// The request body.
    Echo,
}

/// What a route answers. Built with a constructor and chained options.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Body,
    pub(super) chunked: bool,
    pub(super) close_delimited: bool,
    pub(super) close: bool,
    pub(super) early_hints: Vec<Vec<String>>,
    pub(super) hold: Option<Gate>,
    pub(super) delay_body: Option<Gate>,
    pub(super) truncate_at: Option<u64>,
    pub(super) never_respond: bool,
    pub(super) raw: Option<Bytes>,
    pub(super) stall_after: Option<u64>,
    pub(super) trickle: Option<std::time::Duration>,
}

impl Reply {
    /// A response with this status and an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Bytes::new()),
            chunked: false,
            close_delimited: false,
            close: false,
            early_hints: Vec::new(),
            hold: None,
            delay_body: None,
            truncate_at: None,
            never_respond: false,
            raw: None,
            stall_after: None,
            trickle: None,
        }
    }

    /// 200 with this body and no content type.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Reply::status(200).body(body)
    }

    /// A small HTML page (200) with one `Link` field per preload link.
    pub fn page(links: &[&str]) -> Self {
        links
            .iter()
            .fold(Reply::html("<html>page</html>"), |r, l| r.link(l))
    }

    /// 200, `text/html; charset=utf-8`.
    pub fn html(html: &str) -> Self {
        Reply::ok(html.as_bytes().to_vec()).header("Content-Type", "text/html; charset=utf-8")
    }

    /// 200 with `len` deterministic bytes (see [`generated_body`](super::generated_body)), written
    /// in 64 KiB pieces without ever holding the whole body in memory.
    pub fn generated(len: u64) -> Self {
        let mut reply = Reply::status(200).header("Content-Type", "application/octet-stream");
        reply.body = Body::Generated(len);
        reply
    }

    /// 200 whose body is the request body, with `x-body-sha256` set to its hex SHA-256.
    pub fn echo() -> Self {
        let mut reply = Reply::status(200).header("Content-Type", "application/octet-stream");
        reply.body = Body::Echo;
        reply
    }

    /// Write exactly these bytes as the whole response (status line, headers, body, anything),
    /// then close the connection. For malformed responses.
    pub fn raw(bytes: impl Into<Bytes>) -> Self {
        let mut reply = Reply::status(200);
        reply.raw = Some(bytes.into());
        reply
    }

    /// Add a header field; several fields with the same name are sent as several lines, in order.
    /// A `Content-Length` or `Transfer-Encoding` set here replaces the computed framing (so a test
    /// can lie about the length).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Add one `Link` header field.
    pub fn link(self, value: &str) -> Self {
        self.header("Link", value)
    }

    /// Add one `Link` header field carrying all these values, joined with ", ".
    pub fn links_in_one_field(self, values: &[&str]) -> Self {
        let joined = values.join(", ");
        self.header("Link", joined)
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Send the body with `Transfer-Encoding: chunked` (one chunk per 64 KiB piece).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Send neither Content-Length nor Transfer-Encoding: the body ends when the connection closes
    /// (RFC 9112 §6.3 rule 8).
    pub fn close_delimited(mut self) -> Self {
        self.close_delimited = true;
        self
    }

    /// Send `Connection: close` and close the connection after this response.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Send an `HTTP/1.1 103 Early Hints` carrying these values as `Link` fields, flushed before
    /// the final response (and before any [`Reply::hold`]). Each call adds one more 103.
    pub fn early_hints(mut self, links: &[&str]) -> Self {
        self.early_hints
            .push(links.iter().map(|l| (*l).to_owned()).collect());
        self
    }

    /// Wait for `gate` before sending the final response (the 103s go out first).
    pub fn hold(mut self, gate: Gate) -> Self {
        self.hold = Some(gate);
        self
    }

    /// Send the final response's headers, then wait for `gate` before sending its body.
    pub fn delay_body(mut self, gate: Gate) -> Self {
        self.delay_body = Some(gate);
        self
    }

    /// Announce the full length, send only the first `n` body bytes, then close the connection.
    pub fn truncate_at(mut self, n: u64) -> Self {
        self.truncate_at = Some(n);
        self
    }

    /// Announce the full length, send only the first `n` body bytes, then send nothing more and
    /// keep the connection open until the peer closes it (counted in `responses_aborted`).
    pub fn stall_after(mut self, n: u64) -> Self {
        self.stall_after = Some(n);
        self
    }

    /// Write the body one byte at a time, `interval` apart (a slow but live backend). The wait is
    /// the upstream's pacing, not a test's synchronisation.
    pub fn trickle(mut self, interval: std::time::Duration) -> Self {
        self.trickle = Some(interval);
        self
    }

    /// Read the request, then send nothing until the peer closes the connection (or the upstream
    /// is dropped).
    pub fn never_respond(mut self) -> Self {
        self.never_respond = true;
        self
    }
}
