//! Bodies across the HTTP/2 boundary: the one send loop every response and every push uses
//! (`reserve_capacity` → `poll_capacity` → `send_data`, with a stall timeout and reset
//! detection), and the adapter that streams a client's request body to the upstream while
//! releasing flow-control capacity as the upstream takes it.
//!
//! Memory stays bounded: the loop holds at most one upstream chunk, and h2 buffers at most
//! what the client's flow-control window allows. While it waits for that window it keeps an
//! upstream response's read-ahead going ([`ReadAhead`]): the stream's own future does the
//! reading, no task of its own.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body, Frame, SizeHint};

use crate::upstream::{BoxError, Buffered, ClientBodyError, UpstreamBody};

/// A body the send loop keeps reading ahead while it waits for the client's window (see
/// `upstream::buffer`). Bodies that are not read ahead do nothing.
pub trait ReadAhead: Body {
    fn poll_read_ahead(self: Pin<&mut Self>, _cx: &mut Context<'_>) {}
}

impl ReadAhead for Buffered {
    fn poll_read_ahead(self: Pin<&mut Self>, cx: &mut Context<'_>) {
        self.get_mut().poll_read_ahead(cx);
    }
}

impl ReadAhead for UpstreamBody {}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("client reset the stream ({0:?})")]
    ClientReset(h2::Reason),
    #[error("client window stayed closed for {0:?}")]
    Stalled(Duration),
    #[error("body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("upstream body failed")]
    Upstream(#[source] BoxError),
    #[error("h2 send failed")]
    H2(#[source] h2::Error),
}

impl SendError {
    fn from_h2(err: h2::Error) -> Self {
        match err.reason() {
            Some(reason) if err.is_reset() || err.is_remote() => SendError::ClientReset(reason),
            _ => SendError::H2(err),
        }
    }
}

/// Streams `body` into `stream` and ends the stream. Returns the bytes sent.
///
/// On `Err` the caller decides the reset code (INTERNAL_ERROR for a truncated response, CANCEL
/// for a push); a client reset needs none. `limit` cuts the body off (for pushed assets).
/// (An `async` block, not an `async fn`: see [`crate::upstream::Upstream::send`].)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn send_body<B>(
    stream: &mut SendStream<Bytes>,
    body: B,
    limit: Option<u64>,
    stall: Duration,
) -> impl Future<Output = Result<u64, SendError>>
where
    B: ReadAhead<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async move {
        let mut sent = 0;
        send_body_counted(stream, body, limit, stall, &mut sent).await?;
        Ok(sent)
    }
}

/// [`send_body`], adding to `sent` the body bytes handed to h2 as they go, so a response cut
/// short still reports what was sent (the access log's `bytes`). Every byte counted fit the
/// client's window; a reset that follows may still discard a tail h2 had not yet written.
/// (An `async` block, not an `async fn`: see [`crate::upstream::Upstream::send`].)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn send_body_counted<B>(
    stream: &mut SendStream<Bytes>,
    body: B,
    limit: Option<u64>,
    stall: Duration,
    sent: &mut u64,
) -> impl Future<Output = Result<(), SendError>>
where
    B: ReadAhead<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async move {
        let mut body = pin!(body);
        // Bytes read from the body, for `limit`; `sent` lags it by the chunk in flight.
        let mut seen: u64 = 0;
        if body.is_end_stream() {
            stream
                .send_data(Bytes::new(), true)
                .map_err(SendError::from_h2)?;
            return Ok(());
        }
        loop {
            // Wait for the upstream's next frame, but notice a client reset meanwhile so a slow
            // upstream read is dropped as soon as the client gives up.
            let frame = poll_fn(|cx| {
                if let Poll::Ready(reset) = stream.poll_reset(cx) {
                    return Poll::Ready(Err(match reset {
                        Ok(reason) => SendError::ClientReset(reason),
                        Err(e) => SendError::from_h2(e),
                    }));
                }
                body.as_mut().poll_frame(cx).map(Ok)
            })
            .await?;
            match frame {
                None => {
                    stream
                        .send_data(Bytes::new(), true)
                        .map_err(SendError::from_h2)?;
                    return Ok(());
                }
                Some(Err(e)) => return Err(SendError::Upstream(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        seen += data.len() as u64;
                        if let Some(max) = limit.filter(|max| seen > *max) {
                            return Err(SendError::TooLarge(max));
                        }
                        let end = body.is_end_stream();
                        send_chunk(stream, body.as_mut(), data, end, stall, sent).await?;
                        if end {
                            return Ok(());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let mut trailers = trailers;
                            crate::upstream::strip_hop_by_hop(&mut trailers);
                            stream.send_trailers(trailers).map_err(SendError::from_h2)?;
                            return Ok(());
                        }
                    }
                },
            }
        }
    }
}

/// Sends one chunk as the client's flow-control window allows (RFC 9113 §5.2), reading `body`
/// ahead meanwhile.
async fn send_chunk<B: ReadAhead>(
    stream: &mut SendStream<Bytes>,
    mut body: Pin<&mut B>,
    mut data: Bytes,
    end: bool,
    stall: Duration,
    sent: &mut u64,
) -> Result<(), SendError> {
    if data.is_empty() {
        return stream.send_data(data, end).map_err(SendError::from_h2);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = tokio::time::timeout(
            stall,
            poll_fn(|cx| {
                loop {
                    match stream.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => continue,
                        Poll::Ready(Some(Ok(n))) => return Poll::Ready(Ok(n)),
                        Poll::Ready(Some(Err(e))) => {
                            return Poll::Ready(Err(SendError::from_h2(e)));
                        }
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(SendError::ClientReset(h2::Reason::CANCEL)));
                        }
                        Poll::Pending => {
                            body.as_mut().poll_read_ahead(cx);
                            if let Poll::Ready(reset) = stream.poll_reset(cx) {
                                return Poll::Ready(Err(match reset {
                                    Ok(reason) => SendError::ClientReset(reason),
                                    Err(e) => SendError::from_h2(e),
                                }));
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }),
        )
        .await
        .map_err(|_| SendError::Stalled(stall))??;
        let n = granted.min(data.len());
        let chunk = data.split_to(n);
        stream
            .send_data(chunk, end && data.is_empty())
            .map_err(SendError::from_h2)?;
        *sent += n as u64;
    }
    Ok(())
}

/// A client's HTTP/2 request body as an `http_body::Body` for the upstream client. Capacity is
/// released as each chunk is handed on, so the client's window refills only as fast as the
/// upstream reads: backpressure end to end, and memory bounded by the window.
pub struct H2RequestBody {
    recv: RecvStream,
    data_done: bool,
    content_length: Option<u64>,
}

impl H2RequestBody {
    pub fn new(recv: RecvStream, content_length: Option<u64>) -> Self {
        H2RequestBody {
            recv,
            data_done: false,
            content_length,
        }
    }
}

impl Body for H2RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // The client's fault (reset, broken stream): marked so it is not blamed upstream.
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(ClientBodyError::boxed(e))));
                }
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(mut trailers))) => {
                crate::upstream::strip_hop_by_hop(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(ClientBodyError::boxed(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.content_length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
