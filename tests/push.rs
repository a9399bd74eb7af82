//! SPEC §4 end to end: which links are pushed, in what order, with what request, and what
//! happens to pushes that fail, are refused or are not allowed. The h2 crate's client gives the
//! frame order; `nghttp` checks the same as an independent HTTP/2 implementation.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use support::client::*;
use support::proxy::*;
use support::raw_h2::*;
use support::upstream::*;
use tokio::io::AsyncWriteExt;

fn asset(body: &str) -> Reply {
    Reply::ok(body.to_owned()).header("content-type", "text/plain")
}

/// Every PUSH_PROMISE the exchange saw came before its final response HEADERS.
fn assert_promises_before_response(ex: &Exchange) {
    let response_at = ex
        .events
        .iter()
        .position(|e| matches!(e, Event::Response(_)))
        .expect("a response");
    for (i, e) in ex.events.iter().enumerate() {
        if matches!(e, Event::PushPromise(_)) {
            assert!(
                i < response_at,
                "PUSH_PROMISE after the response HEADERS: {:?}",
                ex.events
            );
        }
    }
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_exactly_the_same_origin_preloads_before_the_page_headers() {
    let up = Upstream::new()
        .route(
            "/dir/page",
            Reply::page(&[
                "</a.css>; rel=preload; as=style",
                "</b.js>; rel=preload; as=script; nopush",
                "</prefetch.js>; rel=prefetch",
                "<https://cdn.example/x.js>; rel=preload; as=script",
                "<c.png>; rel=preload; as=image",
                "<//localhost/d.woff2>; rel=preload; as=font; crossorigin",
                "</e.js>; rel=\"preload prefetch\"; as=script, </f.css>; rel=stylesheet",
                "</g.css>; anchor=\"/other\"; rel=preload",
            ]),
        )
        .fallback(asset("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/dir/page", &[]).await;

    assert_eq!(ex.status, 200);
    assert_eq!(
        sorted(ex.pushed_paths()),
        vec!["/a.css", "/d.woff2", "/dir/c.png", "/e.js"]
    );
    assert_promises_before_response(&ex);
    for p in &ex.pushes {
        assert!(p.completed(), "{p:?}");
        assert_eq!(p.body, "asset");
    }
    // The page's Link fields reach the client unchanged.
    assert_eq!(ex.header_all("link").len(), 8);
    // Nothing but the page and the pushed assets was fetched.
    let mut fetched: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    fetched.sort();
    assert_eq!(
        fetched,
        vec!["/a.css", "/d.woff2", "/dir/c.png", "/dir/page", "/e.js"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promised_requests_carry_only_the_configured_headers() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</app.css>; rel=preload; as=style"]))
        .route(
            "/app.css",
            Reply::ok("body{}")
                .header("content-type", "text/css")
                .header("connection", "x-drop")
                .header("x-drop", "1"),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(
        &mut client,
        "/",
        &[
            ("accept-encoding", "gzip"),
            ("user-agent", "push-test"),
            ("cookie", "session=secret"),
            ("authorization", "Bearer secret"),
            ("x-other", "1"),
        ],
    )
    .await;

    let pushed = ex.push("/app.css");
    assert_eq!(pushed.method, Method::GET);
    // h2 needs an absolute URI in a promise: scheme and authority of the request.
    assert_eq!(pushed.uri.to_string(), "http://localhost/app.css");
    let names: Vec<&str> = pushed.request_headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(sorted(names), vec!["accept-encoding", "user-agent"]);
    // The pushed response: upstream headers minus connection-specific ones, body intact.
    assert_eq!(pushed.status.map(|s| s.as_u16()), Some(200));
    assert_eq!(pushed.header("content-type"), Some("text/css"));
    assert_eq!(pushed.header("x-drop"), None);
    assert_eq!(pushed.body, "body{}");
    // The asset fetch upstream: the copied headers and the forwarding ones, never the secrets.
    let fetch = &up.requests_for("/app.css")[0];
    assert_eq!(fetch.method, "GET");
    assert_eq!(fetch.header("accept-encoding").as_deref(), Some("gzip"));
    assert_eq!(fetch.header("user-agent").as_deref(), Some("push-test"));
    assert_eq!(fetch.header("host").as_deref(), Some("localhost"));
    assert_eq!(
        fetch.header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert!(!fetch.has_header("cookie"));
    assert!(!fetch.has_header("authorization"));
    assert!(!fetch.has_header("x-other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_request_headers_may_include_cookie() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</app.css>; rel=preload"]))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.push.request_headers = vec![http::header::COOKIE];
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[("cookie", "a=1"), ("user-agent", "u")]).await;
    assert_eq!(
        ex.push("/app.css").request_headers.get("cookie").unwrap(),
        "a=1"
    );
    let fetch = &up.requests_for("/app.css")[0];
    assert_eq!(fetch.header("cookie").as_deref(), Some("a=1"));
    assert!(!fetch.has_header("user-agent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_bodies_are_byte_identical_to_the_upstream() {
    let sizes = [0u64, 1, 16_384, 65_537, 300_000];
    let links: Vec<String> = sizes
        .iter()
        .map(|n| format!("</g{n}>; rel=preload"))
        .collect();
    let link_refs: Vec<&str> = links.iter().map(String::as_str).collect();
    let mut up = Upstream::new().route("/", Reply::page(&link_refs));
    for n in sizes {
        up = up.route(&format!("/g{n}"), Reply::generated(n));
    }
    let up = up.start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/", &[]).await;

    for n in sizes {
        let pushed = ex.push(&format!("/g{n}"));
        assert!(pushed.completed(), "{pushed:?}");
        assert_eq!(
            sha256_hex(&pushed.body),
            generated_sha256(n),
            "body of /g{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_never_gets_the_same_asset_twice_but_a_new_one_does() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&["</app.css>; rel=preload", "</app.js>; rel=preload"]),
        )
        .route(
            "/other",
            Reply::page(&["</app.css>; rel=preload", "</new.js>; rel=preload"]),
        )
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let first = h2_get(&mut client, "/", &[]).await;
    let again = h2_get(&mut client, "/", &[]).await;
    let other = h2_get(&mut client, "/other", &[]).await;
    assert_eq!(sorted(first.pushed_paths()), vec!["/app.css", "/app.js"]);
    assert!(again.pushes.is_empty(), "{:?}", again.pushed_paths());
    assert_eq!(other.pushed_paths(), vec!["/new.js"]);

    let mut fresh = h2_connect(proxy.addr, &H2Options::default()).await;
    let on_new_connection = h2_get(&mut fresh, "/", &[]).await;
    assert_eq!(
        sorted(on_new_connection.pushed_paths()),
        vec!["/app.css", "/app.js"]
    );

    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_push_skipped_total{reason=\"duplicate\"}"
        ),
        3.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pushed_url_memory_is_a_bounded_lru() {
    let up = Upstream::new()
        .route(
            "/p1",
            Reply::page(&[
                "</a>; rel=preload",
                "</b>; rel=preload",
                "</c>; rel=preload",
            ]),
        )
        .route("/p2", Reply::page(&["</a>; rel=preload"]))
        .route("/p3", Reply::page(&["</c>; rel=preload"]))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.push.lru_capacity = std::num::NonZeroUsize::new(2).unwrap();
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    assert_eq!(
        h2_get(&mut client, "/p1", &[]).await.pushed_paths().len(),
        3
    );
    // Capacity 2: /a was evicted by /c and is pushed again; /c is still remembered.
    assert_eq!(
        h2_get(&mut client, "/p2", &[]).await.pushed_paths(),
        vec!["/a"]
    );
    assert!(h2_get(&mut client, "/p3", &[]).await.pushes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_pushes_per_response() {
    let links = [
        "</1>; rel=preload",
        "</2>; rel=preload",
        "</3>; rel=preload",
        "</4>; rel=preload",
    ];
    let up = Upstream::new()
        .route("/", Reply::page(&links))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.push.max_pushes_per_response = 2).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(ex.pushed_paths(), vec!["/1", "/2"]);
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_push_skipped_total{reason=\"limit\"}"),
        2.0,
        "{metrics}"
    );
}

/// Serves `page` at `/` (assets elsewhere) and GETs it three times on one connection of a client
/// that refuses push (SETTINGS_ENABLE_PUSH = 0): each a 200 with the page and no push.
async fn three_pages_refusing_push(page: Reply) -> (RunningUpstream, Proxy, H2Client) {
    let up = Upstream::new()
        .route("/", page)
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let opts = H2Options {
        enable_push: false,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    for _ in 0..3 {
        let ex = h2_get(&mut client, "/", &[]).await;
        assert_eq!(ex.status, 200);
        assert_eq!(ex.body, "<html>page</html>");
        assert!(ex.pushes.is_empty());
    }
    (up, proxy, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disabled_push_gets_no_promise_and_a_normal_response() {
    let (up, proxy, client) = three_pages_refusing_push(Reply::page(&[
        "</a.css>; rel=preload",
        "</b.js>; rel=preload",
    ]))
    .await;
    assert!(
        client
            .frames()
            .iter()
            .all(|f| f.kind != "PUSH_PROMISE" && f.kind != "GOAWAY")
    );
    assert!(
        up.requests_for("/a.css").is_empty(),
        "nothing fetched for a client that refuses push"
    );
    let metrics = proxy.metrics().await;
    assert!(
        sample(
            &metrics,
            "linkpush_push_skipped_total{reason=\"client_disabled\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_pushes_total{outcome=\"promised\"}"),
        0.0
    );
}

/// A client that refuses push has each link of a response counted once as skipped, whether it
/// came from the learned set, the upstream's 103 or both: the learned set is decided whole
/// without keeping its paths (`skip_all`), and the 103 repeating two of them is decided against
/// it. Request 1 (nothing learned yet): the 103's two links. Requests 2 and 3: the learned set,
/// the final links and the 103's (a.css, b.js, c.css, and n.css marked `nopush`); the 103's
/// a.css and c.css again are repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_refuses_push_has_each_link_counted_once_per_response() {
    let (up, proxy, _client) = three_pages_refusing_push(
        Reply::page(&[
            "</a.css>; rel=preload",
            "</b.js>; rel=preload",
            "</n.css>; rel=preload; nopush",
        ])
        .early_hints(&["</a.css>; rel=preload", "</c.css>; rel=preload"]),
    )
    .await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_push_skipped_total{reason=\"client_disabled\"}"
        ),
        2.0 + 2.0 * 3.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_push_skipped_total{reason=\"nopush\"}"),
        2.0,
        "{metrics}"
    );
    assert!(up.requests_for("/a.css").is_empty());
}

/// h2 0.4.20 answers a client RST_STREAM on a pushed stream still waiting for a
/// MAX_CONCURRENT_STREAMS slot with GOAWAY PROTOCOL_ERROR. A client allowing one stream that
/// refuses every push makes exactly that happen unless pushes are budgeted below its limit.
/// A client that refuses every push (RST_STREAM CANCEL on each promise), with this
/// SETTINGS_MAX_CONCURRENT_STREAMS, loads ten pages of two preloads each on one connection: the
/// connection survives (vendor/h2 PATCHES.md 2; it used to need the read gate). Returns the proxy.
async fn refusing_every_push_keeps_the_connection(max_streams: u32) -> Proxy {
    let up = pages_with_preloads(10).await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let opts = H2Options {
        max_concurrent_streams: Some(max_streams),
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    for i in 0..10 {
        let req = Request::get(format!("/p{i}")).body(()).unwrap();
        let ex = h2_request_refusing(&mut client, req, Bytes::new(), |_| true).await;
        assert_eq!(ex.status, 200, "page load {i}");
        if max_streams >= 2 {
            assert_eq!(ex.pushes.len(), 2, "page load {i}");
        } else {
            assert!(
                ex.pushes.len() <= 1,
                "more pushes than the client's one stream: {:?}",
                ex.pushed_paths()
            );
        }
    }
    let frames = client.frames();
    assert!(
        frames.iter().all(|f| f.kind != "GOAWAY"),
        "connection killed: {frames:?}"
    );
    // And it still works.
    assert_eq!(h2_get(&mut client, "/p0", &[]).await.status, 200);
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_stream_client_refusing_every_push_keeps_its_connection() {
    let proxy = refusing_every_push_keeps_the_connection(1).await;
    let metrics = proxy.metrics().await;
    assert!(
        sample(&metrics, "linkpush_push_skipped_total{reason=\"limit\"}") >= 10.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_stream_client_refusing_every_push_keeps_its_connection() {
    refusing_every_push_keeps_the_connection(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_links_never_reach_outside_the_site() {
    let long = format!("</{}>; rel=preload", "a".repeat(9 * 1024));
    let hostile = [
        "<http://evil.example/x>; rel=preload",
        "<http://localhost:1/x>; rel=preload",
        "<https://localhost/x>; rel=preload",
        "<data:text/css,body{}>; rel=preload",
        "<javascript:alert(1)>; rel=preload",
        "<file:///etc/passwd>; rel=preload",
        "<//evil.example/x>; rel=preload",
        "</%2e%2e/secret>; rel=preload",
        "</a/%2E%2E/b>; rel=preload",
        "</a%2fb>; rel=preload",
        "<\\\\evil\\x>; rel=preload",
        "<http://user@localhost/x>; rel=preload",
        long.as_str(),
        "</../../inside>; rel=preload",
    ];
    let up = Upstream::new()
        .route("/site/page", Reply::page(&hostile))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/site/page", &[]).await;

    assert_eq!(ex.status, 200);
    // Dot segments resolve inside the site (RFC 3986 §5.2.4): /../../inside is /inside.
    assert_eq!(ex.pushed_paths(), vec!["/inside"]);
    for r in up.requests() {
        let t = r.target.to_ascii_lowercase();
        assert!(t.starts_with('/') && !t.starts_with("//"), "{t}");
        assert!(
            !t.contains("..") && !t.contains("%2e") && !t.contains("%2f") && !t.contains('\\'),
            "{t}"
        );
    }
    assert_eq!(up.requests().len(), 2, "the page and /inside only");
    let metrics = proxy.metrics().await;
    assert!(
        sample(
            &metrics,
            "linkpush_push_skipped_total{reason=\"cross_origin\"}"
        ) >= 6.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "linkpush_push_skipped_total{reason=\"invalid\"}") >= 4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_final_2xx_answers_to_get_push() {
    let links = ["</a.css>; rel=preload"];
    let up = Upstream::new()
        .route("/ok", Reply::page(&links))
        .route(
            "/204",
            Reply::page(&links)
                .body(Vec::<u8>::new())
                .header("x-s", "1"),
        )
        .fallback(asset("x"))
        .start()
        .await;
    for status in [204u16, 304, 404, 500] {
        up.set_route(
            &format!("/s{status}"),
            links.iter().fold(Reply::status(status), |r, l| r.link(l)),
        );
    }
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    for status in [204u16, 304, 404, 500] {
        let ex = h2_get(&mut client, &format!("/s{status}"), &[]).await;
        assert_eq!(ex.status.as_u16(), status);
        assert!(
            ex.pushes.is_empty(),
            "{status} pushed {:?}",
            ex.pushed_paths()
        );
    }
    let head = h2_request(
        &mut client,
        Request::head("/ok").body(()).unwrap(),
        Bytes::new(),
    )
    .await;
    assert!(head.pushes.is_empty(), "HEAD pushed");
    let post = h2_request(
        &mut client,
        Request::post("/ok").body(()).unwrap(),
        Bytes::from_static(b"x"),
    )
    .await;
    assert!(post.pushes.is_empty(), "POST pushed");
    assert!(up.requests_for("/a.css").is_empty());
    // The same link on a 200 GET is pushed: the cases above differ only by method and status.
    assert_eq!(
        h2_get(&mut client, "/ok", &[]).await.pushed_paths(),
        vec!["/a.css"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_oversized_assets_are_reset_not_pushed() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&[
                "</missing.css>; rel=preload",
                "</broken.js>; rel=preload",
                "</big.bin>; rel=preload",
                "</chunked.bin>; rel=preload",
                "</ok.css>; rel=preload",
            ]),
        )
        .route("/missing.css", Reply::status(404))
        .route("/broken.js", Reply::status(500))
        .route("/big.bin", Reply::generated(10_000))
        .route("/chunked.bin", Reply::generated(10_000).chunked())
        .route("/ok.css", asset("fine"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.push.max_asset_bytes = 5_000).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(ex.status, 200);
    for path in ["/missing.css", "/broken.js", "/big.bin", "/chunked.bin"] {
        let p = ex.push(path);
        assert_eq!(p.reset(), Some(h2::Reason::CANCEL), "{path}: {p:?}");
        assert!(!p.completed());
    }
    // A chunked asset is cut off mid-body: never more than the limit reaches the client.
    assert!(ex.push("/chunked.bin").body.len() <= 5_000);
    assert!(ex.push("/ok.css").completed());
    let outcomes = |m: &str| {
        ["failed", "completed", "cancelled"]
            .iter()
            .map(|o| sample(m, &format!("linkpush_pushes_total{{outcome=\"{o}\"}}")))
            .sum::<f64>()
    };
    let metrics = proxy
        .metrics_when("all five pushes settled", |m| outcomes(m) >= 5.0)
        .await;
    assert_eq!(
        sample(&metrics, "linkpush_pushes_total{outcome=\"failed\"}"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_pushes_total{outcome=\"completed\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_pushed_bytes_total"),
        4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_drops_the_asset_fetch_at_once() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</slow.css>; rel=preload"]))
        .route("/slow.css", asset("late").hold(Gate::new()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;

    // Drive the h2 client by hand: accept the promise, and reset the pushed stream only once
    // its fetch is known to be waiting at the upstream.
    let sender = client.sender().clone();
    let mut sender = bounded("a stream slot", sender.ready())
        .await
        .expect("ready");
    let req = Request::get("http://localhost/").body(()).unwrap();
    let (mut response, _) = sender.send_request(req, true).expect("send request");
    let mut promises = response.push_promises();
    let promise = bounded("the PUSH_PROMISE", promises.push_promise())
        .await
        .expect("a promise")
        .expect("a valid promise");
    assert!(
        up.wait_for_requests("/slow.css", 1, TIMEOUT).await,
        "the asset fetch never reached the upstream"
    );
    assert_eq!(up.responses_aborted(), 0);
    // Dropping the pushed response makes h2 send RST_STREAM CANCEL.
    drop(promise);

    proxy
        .metrics_when("the cancelled push to be counted", |m| {
            sample(m, "linkpush_pushes_total{outcome=\"cancelled\"}") == 1.0
        })
        .await;
    assert!(
        up.wait_until(TIMEOUT, |u| u.responses_aborted() >= 1).await,
        "upstream fetch still open after the client reset the pushed stream"
    );
    drop(response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_disabled_in_config_pushes_nothing() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</a.css>; rel=preload"]))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.push.enabled = false).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.status, 200);
    assert!(ex.pushes.is_empty());
    assert!(up.requests_for("/a.css").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_tls_use_the_https_scheme() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</a.css>; rel=preload"]))
        .fallback(asset("x"))
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let opts = H2Options {
        tls: true,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.push("/a.css").uri.to_string(), "https://localhost/a.css");
    assert!(ex.push("/a.css").completed());
    assert_eq!(
        up.requests_for("/a.css")[0]
            .header("x-forwarded-proto")
            .as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_metrics_are_exact() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&[
                "</a.css>; rel=preload",
                "</b.js>; rel=preload",
                "</n.js>; rel=preload; nopush",
                "<https://cdn.example/x>; rel=preload",
            ]),
        )
        .fallback(asset("12345"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.pushes.len(), 2);

    let metrics = proxy
        .metrics_when("both pushes to complete", |m| {
            sample(m, "linkpush_pushes_total{outcome=\"completed\"}") == 2.0
        })
        .await;
    for line in [
        "linkpush_pushes_total{outcome=\"promised\"} 2",
        "linkpush_pushes_total{outcome=\"completed\"} 2",
        "linkpush_pushes_total{outcome=\"cancelled\"} 0",
        "linkpush_pushes_total{outcome=\"failed\"} 0",
        "linkpush_push_skipped_total{reason=\"nopush\"} 1",
        "linkpush_push_skipped_total{reason=\"cross_origin\"} 1",
        "linkpush_push_skipped_total{reason=\"duplicate\"} 0",
        "linkpush_pushed_bytes_total 10",
        "linkpush_requests_total{protocol=\"h2\",status=\"200\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

/// An independent HTTP/2 implementation sees the same pushes, promised before the HEADERS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_sees_the_promises_before_the_page() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&[
                "</a.css>; rel=preload; as=style",
                "</b.js>; rel=preload; as=script",
                "</n.js>; rel=preload; nopush",
            ]),
        )
        .fallback(asset("asset"))
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let url = format!("https://127.0.0.1:{}/", proxy.addr.port());

    let out = nghttp(&["-nv", &url]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(sorted(out.promised_paths()), vec!["/a.css", "/b.js"]);
    let first_headers = out
        .frames
        .iter()
        .position(|f| f.kind == "HEADERS" && f.stream_id % 2 == 1)
        .expect("response HEADERS");
    let last_promise = out
        .frames
        .iter()
        .rposition(|f| f.kind == "PUSH_PROMISE")
        .expect("promises");
    assert!(last_promise < first_headers, "{:?}", out.frames);
    let promise = out
        .frames
        .iter()
        .find(|f| f.kind == "PUSH_PROMISE")
        .unwrap();
    assert_eq!(promise.header(":scheme"), Some("https"));
    assert_eq!(promise.header(":method"), Some("GET"));

    let no_push = nghttp(&["-nv", "--no-push", &url]).await;
    assert!(no_push.status.success(), "{}", no_push.stderr);
    assert!(no_push.promised_paths().is_empty());
    assert!(
        no_push
            .frames
            .iter()
            .any(|f| f.kind == "HEADERS" && f.header(":status") == Some("200"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_respect_max_concurrent_pushes() {
    let links: Vec<String> = (0..6).map(|i| format!("</h{i}>; rel=preload")).collect();
    let refs: Vec<&str> = links.iter().map(String::as_str).collect();
    let gate = Gate::new();
    let mut up = Upstream::new().route("/", Reply::page(&refs));
    for i in 0..6 {
        up = up.route(&format!("/h{i}"), asset("x").hold(gate.clone()));
    }
    let up = up.start().await;
    let proxy = Proxy::start(up.addr(), |c| c.push.max_concurrent_pushes = 2).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let fetch = tokio::spawn(async move {
        let ex = h2_get(&mut client, "/", &[]).await;
        (ex, client)
    });
    assert!(up.wait_for_requests("/h1", 1, TIMEOUT).await);
    gate.open();
    let (ex, _client) = bounded("the page", fetch).await.unwrap();
    assert_eq!(
        ex.pushed_paths(),
        vec!["/h0", "/h1"],
        "two open pushes at most"
    );
}

// ===== Many pages at once, shutdown, GOAWAY (issue 8; vendor/h2/PATCHES.md) =====

/// An upstream with `n` pages `/p{i}`, each preloading two assets of its own.
async fn pages_with_preloads(n: usize) -> RunningUpstream {
    let mut up = Upstream::new().fallback(asset("asset"));
    for i in 0..n {
        let links = [
            format!("</p{i}/a.css>; rel=preload; as=style"),
            format!("</p{i}/b.js>; rel=preload; as=script"),
        ];
        let refs: Vec<&str> = links.iter().map(String::as_str).collect();
        up = up.route(&format!("/p{i}"), Reply::page(&refs));
    }
    up.start().await
}

/// RFC 9113 §5.1.1 on the wire: promised ids strictly increasing; every promised stream ended
/// (END_STREAM or RST_STREAM). With `pages_first` (pushes from the final Link fields, so the
/// page's HEADERS are queued before any pushed response exists), each pushed response's HEADERS
/// come after its page's HEADERS; learned pushes may precede a page still waiting for its
/// upstream (docs/push-lifecycle.md).
fn assert_push_wire_order(frames: &[Frame], pages_first: bool) {
    assert!(
        frames.iter().all(|f| f.kind != "GOAWAY"),
        "GOAWAY: {frames:?}"
    );
    let promises: Vec<(u32, u32)> = frames
        .iter()
        .filter(|f| f.kind == "PUSH_PROMISE")
        .map(|f| (f.stream_id, f.promised_stream_id.expect("promised id")))
        .collect();
    assert!(!promises.is_empty(), "no pushes: {frames:?}");
    let ids: Vec<u32> = promises.iter().map(|(_, id)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "promised ids out of order: {ids:?}"
    );
    let first_headers = |id: u32| {
        frames
            .iter()
            .position(|f| f.kind == "HEADERS" && f.stream_id == id)
    };
    for (parent, id) in &promises {
        assert!(
            frames
                .iter()
                .any(|f| f.stream_id == *id && (f.end_stream() || f.kind == "RST_STREAM")),
            "promised stream {id} never ended"
        );
        if let (true, Some(pushed_at)) = (pages_first, first_headers(*id)) {
            let page_at = first_headers(*parent).expect("page HEADERS");
            assert!(
                page_at < pushed_at,
                "pushed {id} HEADERS before page {parent} HEADERS"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pages_at_once_promise_in_id_order_and_every_push_ends() {
    let up = pages_with_preloads(20).await;
    let proxy = Proxy::start(up.addr(), |c| c.push.max_concurrent_pushes = 64).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let paths: Vec<String> = (0..20).map(|i| format!("/p{i}")).collect();

    let pages = h2_get_many(&mut client, &paths).await;

    for (i, ex) in pages.iter().enumerate() {
        assert_eq!(ex.status, 200, "/p{i}");
        assert_eq!(
            sorted(ex.pushed_paths()),
            vec![
                format!("/p{i}/a.css").as_str(),
                format!("/p{i}/b.js").as_str()
            ]
        );
        assert!(
            ex.pushes.iter().all(|p| p.completed()),
            "/p{i}: {:?}",
            ex.pushes
        );
    }
    assert_push_wire_order(&client.frames(), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_loads_twelve_pages_at_once_repeatedly() {
    let up = pages_with_preloads(12).await;
    let proxy = Proxy::start_tls(up.addr(), |c| c.push.max_concurrent_pushes = 64).await;
    let urls: Vec<String> = (0..12)
        .map(|i| format!("https://127.0.0.1:{}/p{i}", proxy.addr.port()))
        .collect();
    let mut args = vec!["-nv"];
    args.extend(urls.iter().map(String::as_str));
    for run in 0..3 {
        let out = nghttp(&args).await;
        assert!(out.status.success(), "run {run}: {}", out.stderr);
        assert!(
            out.frames.iter().all(|f| f.invalid.is_none()),
            "run {run}: nghttp rejected a frame: {:?}",
            out.frames.iter().find(|f| f.invalid.is_some())
        );
        // nghttp ends with its own GOAWAY NO_ERROR; any other error code is a failure.
        assert!(
            !out.stdout
                .lines()
                .any(|l| l.contains("error_code=") && !l.contains("NO_ERROR")),
            "run {run}:\n{}",
            out.stdout
        );
        assert_eq!(out.promised_paths().len(), 24, "run {run}");
        // From the second run on, the pages' links are learned and pushed before the page.
        assert_push_wire_order(&out.frames, run == 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_goaway_mid_page_stops_the_promises() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route(
            "/held",
            Reply::page(&["</late.css>; rel=preload"]).hold(gate.clone()),
        )
        .fallback(asset("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut tcp = raw_h2(proxy.addr).await;
    tcp.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &hpack_get("/held"),
    ))
    .await
    .unwrap();
    assert!(up.wait_for_requests("/held", 1, TIMEOUT).await);
    // GOAWAY (last stream 0: we take no pushed streams), then a PING: its ACK means the proxy
    // has read the GOAWAY before the page's upstream answers.
    let mut goaway = 0u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    let mut out = frame(GOAWAY, 0, 0, &goaway);
    out.extend(frame(PING, 0, 0, b"goaway?!"));
    tcp.write_all(&out).await.unwrap();
    let (frames, closed) = read_frames_until(&mut tcp, |t, f, _| t == PING && f & ACK != 0).await;
    assert!(!closed, "{frames:?}");
    gate.open();

    let (frames, _) = read_frames_until(&mut tcp, |t, f, s| {
        s == 1 && f & END_STREAM != 0 && (t == DATA || t == HEADERS)
    })
    .await;
    assert!(
        frames.iter().any(|(t, _, s)| *t == HEADERS && *s == 1),
        "the page still arrives: {frames:?}"
    );
    assert!(
        frames.iter().all(|(t, _, _)| *t != PUSH_PROMISE),
        "PUSH_PROMISE after the client's GOAWAY: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_still_running_at_the_shutdown_deadline_are_reset_before_the_close() {
    let never = Gate::new();
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&["</a.css>; rel=preload", "</b.js>; rel=preload"]),
        )
        .fallback(asset("never").hold(never.clone()))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.shutdown_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = proxy.addr;
    let page = tokio::spawn(async move {
        let mut client = h2_connect(addr, &H2Options::default()).await;
        let ex = h2_get(&mut client, "/", &[]).await;
        (ex, client.frames())
    });
    assert!(up.wait_for_requests("/a.css", 1, TIMEOUT).await);
    assert!(up.wait_for_requests("/b.js", 1, TIMEOUT).await);

    assert!(
        proxy.shutdown().await,
        "drained (streams reset at the deadline)"
    );

    let (ex, frames) = bounded("the page", page).await.expect("page task");
    assert_eq!(ex.status, 200);
    assert_eq!(sorted(ex.pushed_paths()), vec!["/a.css", "/b.js"]);
    for p in &ex.pushes {
        assert_eq!(p.reset(), Some(h2::Reason::CANCEL), "{p:?}");
        assert!(
            frames.iter().any(|f| f.kind == "RST_STREAM"
                && f.stream_id == p.stream_id
                && f.error_code == Some(0x8)),
            "no RST_STREAM CANCEL for {}: {frames:?}",
            p.stream_id
        );
    }
    assert!(frames.iter().any(|f| f.kind == "GOAWAY"), "{frames:?}");
    assert!(!never.opened());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_the_pages_and_pushes_in_flight_and_completes_them() {
    // Three pages answered at once, their six pushes and a fourth page held at the upstream
    // when the drain starts: the connection runs all of them (its own task polls its streams
    // and pushes) to the end, then closes with GOAWAY NO_ERROR; nothing is reset.
    let gate = Gate::new();
    let mut up = Upstream::new()
        .route("/slow", asset("slow").hold(gate.clone()))
        .fallback(asset("asset").hold(gate.clone()));
    for i in 0..3 {
        let links = [
            format!("</p{i}/a.css>; rel=preload"),
            format!("</p{i}/b.js>; rel=preload"),
        ];
        let refs: Vec<&str> = links.iter().map(String::as_str).collect();
        up = up.route(&format!("/p{i}"), Reply::page(&refs));
    }
    let up = up.start().await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.server.shutdown_timeout = Duration::from_secs(15);
        c.push.max_concurrent_pushes = 16;
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let tap = client.tap();
    let paths: Vec<String> = ["/p0", "/p1", "/p2", "/slow"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    let pages = tokio::spawn(async move { h2_get_many(&mut client, &paths).await });
    for i in 0..3 {
        assert!(
            up.wait_for_requests(&format!("/p{i}/a.css"), 1, TIMEOUT)
                .await
        );
        assert!(
            up.wait_for_requests(&format!("/p{i}/b.js"), 1, TIMEOUT)
                .await
        );
    }
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    let shutdown = tokio::spawn(proxy.shutdown());
    tap.wait_for("GOAWAY from the draining proxy", |f| f.kind == "GOAWAY")
        .await;
    assert!(!shutdown.is_finished(), "waits for the streams and pushes");
    gate.open();

    let pages = bounded("the pages", pages).await.expect("pages task");
    assert!(
        bounded("shutdown to return", shutdown)
            .await
            .expect("shutdown task"),
        "the connection drained in time"
    );
    for (i, ex) in pages.iter().take(3).enumerate() {
        assert_eq!(ex.status, 200, "/p{i}");
        assert_eq!(ex.pushes.len(), 2, "/p{i}: {:?}", ex.pushes);
        for p in &ex.pushes {
            assert!(p.completed(), "/p{i}: {p:?}");
            assert_eq!(p.body, "asset");
        }
    }
    assert_eq!(pages[3].status, 200);
    assert_eq!(pages[3].body, "slow");
    let frames = tap.frames();
    assert!(frames.iter().all(|f| f.kind != "RST_STREAM"), "{frames:?}");
    let goaway = frames.iter().rfind(|f| f.kind == "GOAWAY").expect("GOAWAY");
    assert_eq!(goaway.error_code, Some(0), "{goaway:?}");
}
