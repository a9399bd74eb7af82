//! The proxy's error type. Every error knows its side — client, upstream or internal — and that
//! one fact decides the status sent back, the log level and the metrics label.

use http::StatusCode;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// SPEC §8: a request head over the bound; answered 431 by hyper or h2 themselves (RFC
    /// 6585 §5, RFC 9113 §10.5.1), so this only ever counts and logs it.
    #[error("request header fields too large")]
    HeaderTooLarge,
    #[error("client went away")]
    ClientGone(#[source] h2::Error),
    /// The client's request body failed: an aborted upload, a malformed chunked body, a reset
    /// stream. The upstream request failed because of it, but the fault is the client's.
    #[error("client request body failed")]
    ClientBody(#[source] crate::upstream::BoxError),
    /// The client asked for something linkpush does not do (an extended CONNECT protocol other
    /// than `websocket`).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("upstream unreachable")]
    UpstreamConnect(#[source] std::io::Error),
    #[error("upstream request failed")]
    UpstreamRequest(#[source] crate::upstream::conn::Error),
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("upstream connection limit reached and no slot freed within {0:?}")]
    UpstreamSaturated(std::time::Duration),
    /// `upstream.read_timeout`: no bytes of the response for this long.
    #[error("upstream sent nothing for {0:?}")]
    UpstreamReadTimeout(std::time::Duration),
    /// A response HTTP cannot carry on (RFC 9110 §15.2: an unsolicited final 1xx, …).
    #[error("invalid upstream response: {0}")]
    UpstreamInvalid(&'static str),
    /// The client's connection held its whole `upstream.max_connections_per_client` share and
    /// none of its slots freed in time: its own doing, not the upstream's.
    #[error("client connection's upstream share stayed full for {0:?}")]
    ClientShareTimeout(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeaderTooLarge
            | ProxyError::ClientGone(_)
            | ProxyError::ClientBody(_)
            | ProxyError::NotImplemented(_)
            | ProxyError::ClientShareTimeout(_) => Side::Client,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamRequest(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamSaturated(_)
            | ProxyError::UpstreamReadTimeout(_)
            | ProxyError::UpstreamInvalid(_) => Side::Upstream,
            ProxyError::Internal(_) => Side::Internal,
        }
    }

    /// Closed vocabulary for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeaderTooLarge => "header_too_large",
            ProxyError::ClientGone(_) => "client_gone",
            ProxyError::ClientBody(_) => "client_body",
            ProxyError::NotImplemented(_) => "not_implemented",
            ProxyError::UpstreamConnect(_) => "upstream_connect",
            ProxyError::UpstreamRequest(_) => "upstream_request",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamSaturated(_) => "upstream_saturated",
            ProxyError::UpstreamReadTimeout(_) => "read_timeout",
            ProxyError::UpstreamInvalid(_) => "upstream_invalid",
            ProxyError::ClientShareTimeout(_) => "client_share_timeout",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// `None` when no response can or should be sent (the client is gone).
    pub fn status(&self) -> Option<StatusCode> {
        Option::<StatusCode>::from(self)
    }
}

impl From<&ProxyError> for Option<StatusCode> {
    fn from(err: &ProxyError) -> Self {
        Some(match err {
            // A failed request body is answered 400 when the client can still read (a malformed
            // chunked body); an aborted upload never sees it.
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientGone(_) => return None,
            ProxyError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // RFC 9110 §15.6.2: the server does not support the functionality required.
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            // RFC 9110 §15.6.3: the proxy got no valid response from the upstream.
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamRequest(_)
            | ProxyError::UpstreamInvalid(_) => StatusCode::BAD_GATEWAY,
            // RFC 9110 §15.6.5: no timely response from the upstream.
            ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamSaturated(_)
            | ProxyError::UpstreamReadTimeout(_)
            // The same wait as for a pool slot, bounded by the same `response_timeout`.
            | ProxyError::ClientShareTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        })
    }
}

/// The short plain-text body of an error response.
pub fn error_body(status: StatusCode) -> bytes::Bytes {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    bytes::Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_mapping_is_pinned() {
        let cases = [
            (ProxyError::BadRequest("x"), Some(400), Side::Client),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                Some(504),
                Side::Upstream,
            ),
            (
                ProxyError::UpstreamSaturated(Duration::from_secs(1)),
                Some(504),
                Side::Upstream,
            ),
            (
                ProxyError::ClientShareTimeout(Duration::from_secs(1)),
                Some(504),
                Side::Client,
            ),
            (ProxyError::Internal("x"), Some(500), Side::Internal),
            (
                ProxyError::ClientBody("aborted".into()),
                Some(400),
                Side::Client,
            ),
            (ProxyError::NotImplemented("x"), Some(501), Side::Client),
            (
                ProxyError::UpstreamReadTimeout(Duration::from_secs(1)),
                Some(504),
                Side::Upstream,
            ),
            (ProxyError::UpstreamInvalid("x"), Some(502), Side::Upstream),
            (ProxyError::HeaderTooLarge, Some(431), Side::Client),
        ];
        for (err, status, side) in cases {
            assert_eq!(err.status().map(|s| s.as_u16()), status, "{err}");
            assert_eq!(err.side(), side, "{err}");
        }
        let gone = ProxyError::ClientGone(h2::Error::from(h2::Reason::CANCEL));
        assert_eq!(gone.status(), None);
        assert_eq!(gone.side(), Side::Client);
    }

    #[test]
    fn error_body_is_short_text() {
        assert_eq!(
            &error_body(StatusCode::BAD_GATEWAY)[..],
            b"502 Bad Gateway\n"
        );
    }
}
