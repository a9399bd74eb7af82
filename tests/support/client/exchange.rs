//! What one request on the h2 client produced: the response, its 1xx responses and pushes, and the
//! order in which they arrived.

use std::fmt;

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, Method, StatusCode, Uri};

use super::wire::Frame;

/// One thing that happened on a request's stream, in wire order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A 1xx HEADERS frame.
    Informational(StatusCode),
    /// A PUSH_PROMISE on this stream, with the promised request's path (and query); empty if the
    /// h2 client rejected the promise as malformed.
    PushPromise(String),
    /// The final response HEADERS.
    Response(StatusCode),
    /// A trailing HEADERS frame.
    Trailers,
    /// RST_STREAM from the server.
    Reset(Reason),
}

/// Everything one request produced.
pub struct Exchange {
    pub stream_id: u32,
    /// 1xx responses, in arrival order.
    pub informational: Vec<(StatusCode, HeaderMap)>,
    /// Push promises on this stream, in arrival order, with their responses.
    pub pushes: Vec<Pushed>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body received, complete unless `error` is set.
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// Set when the stream ended by a reset or connection error after the response headers.
    pub error: Option<h2::Error>,
    /// The order of informational responses, promises and the response on the wire.
    pub events: Vec<Event>,
}

impl Exchange {
    /// The RST_STREAM (or GOAWAY) reason that cut the response short, if any.
    pub fn reset(&self) -> Option<Reason> {
        self.error.as_ref().and_then(h2::Error::reason)
    }

    /// The first value of a response header, as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is visible ASCII"))
    }

    /// Every value of a response header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("header value is visible ASCII"))
            .collect()
    }

    /// Paths (and queries) of the promised requests, in promise order.
    pub fn pushed_paths(&self) -> Vec<&str> {
        self.pushes.iter().map(Pushed::path).collect()
    }

    /// The push of `path`; panics listing the pushed paths if there is none.
    pub fn push(&self, path: &str) -> &Pushed {
        self.pushes
            .iter()
            .find(|p| p.path() == path)
            .unwrap_or_else(|| panic!("no push of {path}; pushed: {:?}", self.pushed_paths()))
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("stream_id", &self.stream_id)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &Abbrev(&self.body))
            .field("trailers", &self.trailers)
            .field("error", &self.error)
            .field("informational", &self.informational)
            .field("events", &self.events)
            .field("pushes", &self.pushes)
            .finish()
    }
}

/// A pushed stream: the promised request, and the response or why there is none.
pub struct Pushed {
    pub stream_id: u32,
    pub method: Method,
    pub uri: Uri,
    /// Headers of the promised request.
    pub request_headers: HeaderMap,
    /// We refused it (dropped it, so h2 sent RST_STREAM CANCEL) without reading the response.
    pub refused: bool,
    /// `None` when refused, or reset before its HEADERS.
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set when the server reset the pushed stream (or the connection failed) before its end.
    pub error: Option<h2::Error>,
}

impl Pushed {
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The server's RST_STREAM reason, if it reset the pushed stream.
    pub fn reset(&self) -> Option<Reason> {
        self.error.as_ref().and_then(h2::Error::reason)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is visible ASCII"))
    }

    /// Pushed, fully received, and not reset.
    pub fn completed(&self) -> bool {
        !self.refused && self.status.is_some() && self.error.is_none()
    }
}

impl fmt::Debug for Pushed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pushed")
            .field("stream_id", &self.stream_id)
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("request_headers", &self.request_headers)
            .field("refused", &self.refused)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &Abbrev(&self.body))
            .field("error", &self.error)
            .finish()
    }
}

/// Bodies in Debug output: the length and the first bytes only.
struct Abbrev<'a>(&'a Bytes);

impl fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(64)];
        write!(
            f,
            "{} bytes {:?}{}",
            self.0.len(),
            Bytes::copy_from_slice(shown),
            if self.0.len() > 64 { "..." } else { "" }
        )
    }
}

/// What happened on `stream_id`, from the wire log: the k-th HEADERS frame is the k-th 1xx, then
/// the final response, then trailers (CONTINUATION frames belong to their HEADERS).
pub(super) fn events_on_stream(
    frames: &[Frame],
    stream_id: u32,
    informational: &[(StatusCode, HeaderMap)],
    status: StatusCode,
    pushes: &[Pushed],
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut headers_seen = 0;
    for frame in frames.iter().filter(|f| f.stream_id == stream_id) {
        match frame.kind.as_str() {
            "HEADERS" => {
                events.push(match informational.get(headers_seen) {
                    Some((s, _)) => Event::Informational(*s),
                    None if headers_seen == informational.len() => Event::Response(status),
                    None => Event::Trailers,
                });
                headers_seen += 1;
            }
            "PUSH_PROMISE" => {
                let promised = frame.promised_stream_id;
                let path = pushes
                    .iter()
                    .find(|p| Some(p.stream_id) == promised)
                    .map_or(String::new(), |p| p.path().to_owned());
                events.push(Event::PushPromise(path));
            }
            "RST_STREAM" => events.push(Event::Reset(Reason::from(frame.error_code.unwrap_or(0)))),
            _ => {}
        }
    }
    events
}
