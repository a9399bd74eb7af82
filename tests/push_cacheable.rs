//! Issue 12 item 7 (docs/push-lifecycle.md, "Which asset responses are pushed"): a cacheable
//! asset response is pushed as it is — a 301 with its Location included — and one the client
//! may not store (`no-store`, a 302 without freshness) is reset and counted instead.

mod support;

use h2::Reason;
use support::client::*;
use support::proxy::*;
use support::upstream::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_responses_are_pushed_as_they_are_and_no_store_ones_are_not() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::html("<html>page</html>")
                .link("</moved.css>; rel=preload; as=style")
                .link("</kept.css>; rel=preload; as=style")
                .link("</secret.css>; rel=preload; as=style")
                .link("</temporary.css>; rel=preload; as=style")
                .link("</fresh-temporary.css>; rel=preload; as=style"),
        )
        .route(
            "/moved.css",
            Reply::status(301).header("location", "/new/moved.css"),
        )
        .route(
            "/kept.css",
            Reply::ok("body{}").header("cache-control", "max-age=600"),
        )
        .route(
            "/secret.css",
            Reply::ok("body{}").header("cache-control", "max-age=600, no-store"),
        )
        .route(
            "/temporary.css",
            Reply::status(302).header("location", "/elsewhere.css"),
        )
        .route(
            "/fresh-temporary.css",
            Reply::status(307)
                .header("location", "/elsewhere.css")
                .header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.status, 200);
    assert_eq!(ex.pushes.len(), 5, "{:?}", ex.pushes);

    let moved = ex.push("/moved.css");
    assert!(moved.completed(), "{moved:?}");
    assert_eq!(moved.status, Some(http::StatusCode::MOVED_PERMANENTLY));
    assert_eq!(moved.header("location"), Some("/new/moved.css"));
    let fresh = ex.push("/fresh-temporary.css");
    assert!(fresh.completed(), "{fresh:?}");
    assert_eq!(fresh.status, Some(http::StatusCode::TEMPORARY_REDIRECT));
    assert!(ex.push("/kept.css").completed());
    for path in ["/secret.css", "/temporary.css"] {
        let p = ex.push(path);
        assert_eq!(p.status, None, "{path} was pushed: {p:?}");
        assert_eq!(p.reset(), Some(Reason::CANCEL), "{path}: {p:?}");
    }
    // linkpush never follows a redirect on the client's behalf.
    assert!(up.requests_for("/new/moved.css").is_empty());
    assert!(up.requests_for("/elsewhere.css").is_empty());

    let metrics = proxy
        .metrics_when("every push ended", |m| {
            sample(m, "linkpush_pushes_total{outcome=\"completed\"}")
                + sample(m, "linkpush_pushes_total{outcome=\"failed\"}")
                >= 5.0
        })
        .await;
    for line in [
        "linkpush_pushes_total{outcome=\"promised\"} 5",
        "linkpush_pushes_total{outcome=\"completed\"} 3",
        "linkpush_pushes_total{outcome=\"failed\"} 2",
        "linkpush_push_skipped_total{reason=\"not_cacheable\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}
