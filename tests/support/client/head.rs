//! The next response head of an h2 client request: 1xx responses one by one, then the final
//! response. Shared by the test client (`request`) and benches/pageload.rs (included there with
//! `#[path]`), so it depends on nothing else in tests/support.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use h2::RecvStream;
use h2::client::ResponseFuture;
use http::Response;

pub enum Head {
    Informational(Response<()>),
    Final(Result<Response<RecvStream>, h2::Error>),
}

/// The next 1xx or the final response; pending forever once the final response was taken.
pub async fn next_head(head: &mut Option<ResponseFuture>) -> Head {
    let Some(response) = head.as_mut() else {
        return std::future::pending().await;
    };
    poll_fn(|cx| {
        // 1xx responses sit in the same queue ahead of the final one, so draining them first
        // keeps their order.
        if let Poll::Ready(Some(info)) = response.poll_informational(cx) {
            return Poll::Ready(match info {
                Ok(r) => Head::Informational(r),
                Err(e) => Head::Final(Err(e)),
            });
        }
        Pin::new(&mut *response).poll(cx).map(Head::Final)
    })
    .await
}
