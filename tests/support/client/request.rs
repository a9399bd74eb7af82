//! Driving one request on an [`H2Client`]: send it, then read the 1xx responses, the final
//! response and its body, and every push promise with its pushed response, all concurrently and
//! every wait bounded.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::client::{PushedResponseFuture, SendRequest};
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::task::JoinHandle;

use super::bounded;
use super::exchange::{Exchange, Pushed, events_on_stream};
use super::h2::H2Client;
use super::head::{Head, next_head};
use super::wire::WireLog;

/// GET `path` with these extra request headers; accepts every push.
pub async fn h2_get(client: &mut H2Client, path: &str, headers: &[(&str, &str)]) -> Exchange {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    h2_request(client, req.body(()).expect("request"), Bytes::new()).await
}

/// Send `req` (scheme and authority filled in from the options when the URI has none) with
/// `body`; accepts every push. Panics if the stream fails before the final response headers.
pub async fn h2_request(client: &mut H2Client, req: Request<()>, body: Bytes) -> Exchange {
    h2_request_refusing(client, req, body, |_| false).await
}

/// As [`h2_request`], but every push promise for which `refuse` returns true is refused at once
/// (dropped, so h2 sends RST_STREAM CANCEL), like a client with that asset cached.
pub async fn h2_request_refusing(
    client: &mut H2Client,
    req: Request<()>,
    body: Bytes,
    refuse: impl FnMut(&Request<()>) -> bool,
) -> Exchange {
    let what = format!("{} {}", req.method(), req.uri());
    match h2_try_request(client, req, body, refuse).await {
        Ok(exchange) => exchange,
        Err(e) => panic!("{what}: stream failed before the response headers: {e:?}"),
    }
}

/// As [`h2_request_refusing`], but a stream that fails before the final response headers (reset,
/// GOAWAY, connection error) is returned as the error instead of panicking.
pub async fn h2_try_request(
    client: &mut H2Client,
    req: Request<()>,
    body: Bytes,
    refuse: impl FnMut(&Request<()>) -> bool,
) -> Result<Exchange, h2::Error> {
    let (mut parts, ()) = req.into_parts();
    parts.uri = client.complete_uri(&parts.uri);
    let req = Request::from_parts(parts, ());
    let sender = client.sender().clone();
    exchange(sender, client.wire.clone(), req, body, refuse).await
}

/// GET every path at once on one connection (each its own stream, all in flight together),
/// accepting every push; the exchanges in `paths` order.
pub async fn h2_get_many(client: &mut H2Client, paths: &[String]) -> Vec<Exchange> {
    let tasks: Vec<_> = paths
        .iter()
        .map(|path| {
            let uri = client.complete_uri(&path.parse().expect("path"));
            let req = Request::get(uri).body(()).expect("request");
            let sender = client.sender().clone();
            let wire = client.wire.clone();
            let path = path.clone();
            tokio::spawn(async move {
                match exchange(sender, wire, req, Bytes::new(), |_| false).await {
                    Ok(exchange) => exchange,
                    Err(e) => panic!("{path}: stream failed before the response headers: {e:?}"),
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(
            bounded("one of the concurrent requests", task)
                .await
                .expect("request task"),
        );
    }
    out
}

async fn exchange(
    mut sender: SendRequest<Bytes>,
    wire: Arc<Mutex<WireLog>>,
    req: Request<()>,
    body: Bytes,
    mut refuse: impl FnMut(&Request<()>) -> bool,
) -> Result<Exchange, h2::Error> {
    let what = format!("{} {}", req.method(), req.uri());
    sender = bounded(
        format!("{what}: a stream slot on the connection"),
        sender.ready(),
    )
    .await?;
    let (mut response, mut request_body) = sender.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        // h2 buffers the data and sends it as the peer's window allows.
        request_body.send_data(body, true)?;
    }
    let stream_id = response.stream_id().as_u32();
    let mut promises = response.push_promises();

    let mut head = Some(response);
    let mut recv: Option<RecvStream> = None;
    let mut promises_open = true;
    let mut informational = Vec::new();
    let mut final_head: Option<Response<()>> = None;
    let mut body = BytesMut::new();
    let mut trailers = None;
    let mut error = None;
    let mut pushes: Vec<(PushMeta, Option<JoinHandle<PushedResponse>>)> = Vec::new();

    while head.is_some() || recv.is_some() || promises_open {
        let step = bounded(
            format!("{what}: progress (response, body or push promise)"),
            async {
                tokio::select! {
                    p = promises.push_promise(), if promises_open => Step::Promise(p),
                    h = next_head(&mut head) => Step::Head(h),
                    d = next_data(&mut recv) => Step::Data(d),
                }
            },
        )
        .await;
        match step {
            Step::Promise(Some(Ok(promise))) => {
                let (request, response) = promise.into_parts();
                let meta = PushMeta {
                    stream_id: response.stream_id().as_u32(),
                    refused: refuse(&request),
                    request,
                };
                let task = (!meta.refused).then(|| tokio::spawn(collect_pushed(response)));
                pushes.push((meta, task));
            }
            // Errors also show on the response or the body; None means the stream is closed.
            Step::Promise(Some(Err(_)) | None) => promises_open = false,
            Step::Head(Head::Informational(r)) => {
                informational.push((r.status(), r.headers().clone()))
            }
            Step::Head(Head::Final(Ok(r))) => {
                head = None;
                let (parts, stream) = r.into_parts();
                final_head = Some(Response::from_parts(parts, ()));
                recv = Some(stream);
            }
            Step::Head(Head::Final(Err(e))) => return Err(e),
            Step::Data(Some(Ok(chunk))) => {
                let stream = recv.as_mut().expect("body stream");
                // Give the window back as we read, or a large body stalls.
                let _ = stream.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Step::Data(Some(Err(e))) => {
                recv = None;
                error = Some(e);
            }
            Step::Data(None) => {
                let mut stream = recv.take().expect("body stream");
                match bounded(format!("{what}: trailers"), stream.trailers()).await {
                    Ok(t) => trailers = t,
                    Err(e) => error = Some(e),
                }
            }
        }
    }

    let mut pushed = Vec::new();
    for (meta, task) in pushes {
        let response = match task {
            Some(task) => bounded(format!("{what}: pushed {}", meta.request.uri()), task)
                .await
                .expect("push collector task"),
            None => PushedResponse::default(),
        };
        let (parts, ()) = meta.request.into_parts();
        pushed.push(Pushed {
            stream_id: meta.stream_id,
            method: parts.method,
            uri: parts.uri,
            request_headers: parts.headers,
            refused: meta.refused,
            status: response.status,
            headers: response.headers,
            body: response.body.freeze(),
            error: response.error,
        });
    }

    let response = final_head.expect("final response");
    let events = events_on_stream(
        &wire.lock().unwrap().frames,
        stream_id,
        &informational,
        response.status(),
        &pushed,
    );
    Ok(Exchange {
        stream_id,
        informational,
        pushes: pushed,
        status: response.status(),
        headers: response.headers().clone(),
        body: body.freeze(),
        trailers,
        error,
        events,
    })
}

enum Step {
    Promise(Option<Result<h2::client::PushPromise, h2::Error>>),
    Head(Head),
    Data(Option<Result<Bytes, h2::Error>>),
}

async fn next_data(recv: &mut Option<RecvStream>) -> Option<Result<Bytes, h2::Error>> {
    match recv.as_mut() {
        Some(stream) => stream.data().await,
        None => std::future::pending().await,
    }
}

struct PushMeta {
    stream_id: u32,
    refused: bool,
    request: Request<()>,
}

#[derive(Default)]
struct PushedResponse {
    status: Option<StatusCode>,
    headers: HeaderMap,
    body: BytesMut,
    error: Option<h2::Error>,
}

/// Read a pushed response to its end, concurrently with the parent: pushed and parent streams
/// share the connection window, so reading them one after the other could stall.
async fn collect_pushed(response: PushedResponseFuture) -> PushedResponse {
    let mut out = PushedResponse::default();
    let id = response.stream_id().as_u32();
    let (parts, mut stream) =
        match bounded(format!("pushed stream {id}: response headers"), response).await {
            Ok(r) => r.into_parts(),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
    out.status = Some(parts.status);
    out.headers = parts.headers;
    while let Some(chunk) = bounded(format!("pushed stream {id}: body"), stream.data()).await {
        match chunk {
            Ok(chunk) => {
                let _ = stream.flow_control().release_capacity(chunk.len());
                out.body.extend_from_slice(&chunk);
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    if let Err(e) = bounded(format!("pushed stream {id}: end"), stream.trailers()).await {
        out.error = Some(e);
    }
    out
}
