//! SPEC §5 and §6 end to end: upstream 103s forwarded and pushed on, learned links acted on
//! before the upstream has answered, and what turns each off. Upstreams hold their final
//! response behind a gate the test opens, so "before" is an ordering, not a timing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use linkpush::learn::ManualClock;

use support::client::*;
use support::proxy::*;
use support::upstream::*;

const PAGE_LINKS: [&str; 3] = [
    "</a.css>; rel=preload; as=style",
    "</b.js>; rel=preload; as=script; nopush",
    "</f.woff2>; rel=preload; as=font; crossorigin; type=\"font/woff2\"; x-custom=1",
];

/// What a browser sends on a navigation (Fetch Metadata): only navigations get learned 103s.
const NAVIGATE: &[(&str, &str)] = &[("sec-fetch-mode", "navigate")];

/// A frame on the page's stream that is a HEADERS (the 103, while the final response is held).
fn is_headers_on(stream_id: u32) -> impl Fn(&Frame) -> bool {
    move |f| f.kind == "HEADERS" && f.stream_id == stream_id
}

fn links_of(ex: &Exchange, i: usize) -> Vec<String> {
    ex.informational[i]
        .1
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Starts a GET on its own task; returns the client's wire tap and the join handle.
fn get_in_background(
    mut client: H2Client,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> (WireTap, tokio::task::JoinHandle<(Exchange, H2Client)>) {
    let tap = client.tap();
    let task = tokio::spawn(async move {
        let ex = h2_get(&mut client, path, headers).await;
        (ex, client)
    });
    (tap, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_103_reaches_the_client_before_the_final_response() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&["</a.css>; rel=preload"])
                .early_hints(&PAGE_LINKS)
                .hold(gate.clone()),
        )
        .fallback(Reply::ok("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let (tap, task) = get_in_background(client, "/", &[]);
    tap.wait_for("the forwarded 103", is_headers_on(1)).await;
    assert!(
        !gate.opened(),
        "the 103 came while the upstream was still holding its answer"
    );
    gate.open();
    let (ex, _client) = bounded("the page", task).await.unwrap();

    assert_eq!(ex.status, 200);
    assert_eq!(ex.informational.len(), 1);
    assert_eq!(ex.informational[0].0, 103);
    // Only Link fields, in the upstream's order, cleaned of attributes browsers don't know.
    assert_eq!(
        ex.informational[0]
            .1
            .keys()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        vec!["link"]
    );
    assert_eq!(
        links_of(&ex, 0),
        vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script",
            "</f.woff2>; rel=preload; as=font; crossorigin; type=\"font/woff2\"",
        ]
    );
    assert_eq!(
        ex.events.first(),
        Some(&Event::Informational(http::StatusCode::EARLY_HINTS))
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"upstream\"}"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_of_an_upstream_103_are_pushed_before_the_final_response() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&PAGE_LINKS)
                .early_hints(&PAGE_LINKS)
                .hold(gate.clone()),
        )
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let client = h2_connect(proxy.addr, &H2Options::default()).await;

    let (tap, task) = get_in_background(client, "/", &[]);
    tap.wait_for("a PUSH_PROMISE", |f| f.kind == "PUSH_PROMISE")
        .await;
    // The pushed asset's own response goes out while the page is still held upstream.
    tap.wait_for("the pushed HEADERS", |f| {
        f.kind == "HEADERS" && f.stream_id % 2 == 0
    })
    .await;
    assert!(!gate.opened());
    gate.open();
    let (ex, _client) = bounded("the page", task).await.unwrap();

    // nopush is hinted, never pushed; the final Link fields repeat the 103's and push nothing new.
    let mut pushed = ex.pushed_paths();
    pushed.sort();
    assert_eq!(pushed, vec!["/a.css", "/f.woff2"]);
    assert!(ex.pushes.iter().all(|p| p.completed()));
    let response_at = ex
        .events
        .iter()
        .position(|e| matches!(e, Event::Response(_)))
        .unwrap();
    assert!(
        ex.events[..response_at]
            .iter()
            .filter(|e| matches!(e, Event::PushPromise(_)))
            .count()
            == 2
    );
    assert_eq!(up.requests_for("/a.css").len(), 1, "fetched once");
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "linkpush_push_skipped_total{reason=\"duplicate\"}"
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_push_skipped_total{reason=\"nopush\"}"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_103s_are_sent_once() {
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&[])
                .early_hints(&["</a.css>; rel=preload"])
                .early_hints(&["</a.css>; rel=preload"]),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.informational.len(), 1, "{:?}", ex.informational);
}

/// Learns `/` from one visit, then holds the upstream's answer for the next.
async fn learned_setup(
    tweak: impl FnOnce(&mut linkpush::Config),
) -> (RunningUpstream, Proxy, Gate) {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), tweak).await;
    let mut first = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let learning = h2_get(&mut first, "/", NAVIGATE).await;
    assert!(
        learning.informational.is_empty(),
        "nothing is known before the first answer"
    );
    let gate = Gate::new();
    up.set_route("/", Reply::page(&PAGE_LINKS).hold(gate.clone()));
    (up, proxy, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_route_is_pushed_before_the_upstream_answers() {
    let (up, proxy, gate) = learned_setup(|_| {}).await;
    let client = h2_connect(proxy.addr, &H2Options::default()).await;

    let (tap, task) = get_in_background(client, "/", NAVIGATE);
    // The assets are promised and their responses under way while the page is held upstream.
    tap.wait_for("a pushed response's HEADERS", |f| {
        f.kind == "HEADERS" && f.stream_id % 2 == 0
    })
    .await;
    assert!(
        up.wait_for_requests("/", 2, TIMEOUT).await,
        "the page request reached the upstream"
    );
    assert!(!gate.opened());
    gate.open();
    let (ex, _client) = bounded("the page", task).await.unwrap();

    let mut pushed = ex.pushed_paths();
    pushed.sort();
    assert_eq!(pushed, vec!["/a.css", "/f.woff2"]);
    // The nopush link is announced in a 103 instead.
    assert_eq!(ex.informational.len(), 1);
    assert_eq!(links_of(&ex, 0), vec!["</b.js>; rel=preload; as=script"]);
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"learned\"}"),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_route_gets_a_103_before_the_upstream_answers() {
    let (up, proxy, gate) = learned_setup(|_| {}).await;
    let client = h2_connect(proxy.addr, &H2Options::no_push()).await;

    let (tap, task) = get_in_background(client, "/", NAVIGATE);
    tap.wait_for("the learned 103", is_headers_on(1)).await;
    assert!(!gate.opened());
    gate.open();
    let (ex, _client) = bounded("the page", task).await.unwrap();

    assert!(ex.pushes.is_empty());
    assert_eq!(ex.informational.len(), 1);
    assert_eq!(
        links_of(&ex, 0),
        vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script",
            "</f.woff2>; rel=preload; as=font; crossorigin; type=\"font/woff2\"",
        ]
    );
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_links_replace_the_learned_ones() {
    let up = Upstream::new()
        .route("/", Reply::page(&["</old.css>; rel=preload"]))
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    h2_get(&mut client, "/", NAVIGATE).await;
    up.set_route("/", Reply::page(&["</new.css>; rel=preload"]));

    let second = h2_get(&mut client, "/", NAVIGATE).await;
    assert_eq!(
        links_of(&second, 0),
        vec!["</old.css>; rel=preload"],
        "still the learned links"
    );
    let third = h2_get(&mut client, "/", NAVIGATE).await;
    assert_eq!(
        links_of(&third, 0),
        vec!["</new.css>; rel=preload"],
        "replaced by the last answer"
    );

    // A push client is not pushed the link the route no longer carries.
    let mut pusher = h2_connect(proxy.addr, &H2Options::default()).await;
    assert_eq!(
        h2_get(&mut pusher, "/", &[]).await.pushed_paths(),
        vec!["/new.css"]
    );
    assert!(up.requests_for("/old.css").is_empty());

    // An answer without links forgets the route.
    up.set_route("/", Reply::page(&[]));
    h2_get(&mut client, "/", NAVIGATE).await;
    assert!(
        h2_get(&mut client, "/", NAVIGATE)
            .await
            .informational
            .is_empty()
    );
}

/// The TTL runs on the store's clock, injected here: no waiting, and no dependence on how far
/// apart two requests happen to be on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_routes_expire_after_the_ttl() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .start()
        .await;
    let ttl = Duration::from_secs(600);
    let proxy = Proxy::start(up.addr(), |c| c.learn.ttl = ttl).await;
    let clock = ManualClock::default();
    let store = proxy
        .server
        .as_ref()
        .unwrap()
        .learn_store()
        .expect("learning on");
    store.set_clock(Arc::new(clock.clone()));
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    h2_get(&mut client, "/", NAVIGATE).await;

    clock.advance(ttl - Duration::from_secs(1));
    assert_eq!(
        h2_get(&mut client, "/", NAVIGATE).await.informational.len(),
        1,
        "still fresh a second before the TTL (and learned again from this answer)"
    );
    clock.advance(ttl);
    assert!(
        h2_get(&mut client, "/", NAVIGATE)
            .await
            .informational
            .is_empty(),
        "expired"
    );
    assert_eq!(
        h2_get(&mut client, "/", NAVIGATE).await.informational.len(),
        1,
        "learned again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learned_store_is_bounded_by_routes() {
    let up = Upstream::new()
        .route("/a", Reply::page(&["</a.css>; rel=preload"]))
        .route("/b", Reply::page(&["</b.css>; rel=preload"]))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| {
        c.learn.routes = std::num::NonZeroUsize::new(1).unwrap()
    })
    .await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    h2_get(&mut client, "/a", NAVIGATE).await;
    h2_get(&mut client, "/b", NAVIGATE).await;
    assert!(
        h2_get(&mut client, "/a", NAVIGATE)
            .await
            .informational
            .is_empty(),
        "/a was evicted by /b"
    );
    // /a's answer evicted /b in turn.
    assert!(
        h2_get(&mut client, "/b", NAVIGATE)
            .await
            .informational
            .is_empty()
    );
    assert_eq!(
        h2_get(&mut client, "/b", NAVIGATE)
            .await
            .informational
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_navigation_requests_get_no_learned_103() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    h2_get(&mut client, "/", &[]).await;
    let none = h2_get(&mut client, "/", &[]).await;
    assert!(none.informational.is_empty(), "curl, bots, load generators");
    let cors = h2_get(&mut client, "/", &[("sec-fetch-mode", "cors")]).await;
    assert!(cors.informational.is_empty());
    let navigate = h2_get(&mut client, "/", NAVIGATE).await;
    assert_eq!(navigate.informational.len(), 1);
    let document = h2_get(&mut client, "/", &[("sec-fetch-dest", "document")]).await;
    assert_eq!(document.informational.len(), 1);

    // Push clients get learned pushes whatever they send: the page no longer carries links,
    // so what is pushed comes from the learned route.
    up.set_route("/", Reply::page(&[]));
    let mut pusher = h2_connect(proxy.addr, &H2Options::default()).await;
    let mut pushed = h2_get(&mut pusher, "/", &[])
        .await
        .pushed_paths()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>();
    pushed.sort();
    assert_eq!(pushed, ["/a.css", "/f.woff2"]);
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"learned\"}"),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_route_still_forwards_the_upstream_103_to_non_navigations() {
    // SPEC §5: an upstream 103 is forwarded at once, whatever was learned. A learned link that
    // was not pushed (this client takes no push) is not "coming", so the upstream's 103 that
    // repeats it must still reach the client.
    let up = Upstream::new()
        .route(
            "/hinted",
            Reply::ok("page").early_hints(&["</a.css>; rel=preload; as=style"]),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    for round in 0..3 {
        let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
        let ex = h2_get(&mut client, "/hinted", &[]).await;
        assert_eq!(ex.informational.len(), 1, "round {round}: {:?}", ex.events);
        assert_eq!(links_of(&ex, 0), ["</a.css>; rel=preload; as=style"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_disabled_sends_no_103() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS).early_hints(&PAGE_LINKS))
        .fallback(Reply::ok("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.early_hints.enabled = false).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    for _ in 0..2 {
        let ex = h2_get(&mut client, "/", &[]).await;
        assert_eq!(ex.status, 200);
        assert!(ex.informational.is_empty(), "{:?}", ex.informational);
    }
    // Pushing on the upstream's 103 is push, not early hints: it still happens.
    let mut pusher = h2_connect(proxy.addr, &H2Options::default()).await;
    assert!(!h2_get(&mut pusher, "/", &[]).await.pushes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_disabled_acts_only_on_what_the_upstream_says() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .fallback(Reply::ok("x"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.learn.enabled = false).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    for _ in 0..3 {
        assert!(
            h2_get(&mut client, "/", NAVIGATE)
                .await
                .informational
                .is_empty()
        );
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"learned\"}"),
        0.0
    );
}

/// curl, an independent HTTP/2 client, sees the learned 103 before the 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_the_learned_early_hints() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .start()
        .await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let url = format!("https://127.0.0.1:{}/", proxy.addr.port());
    let args = [
        "-sk",
        "-v",
        "--http2",
        "-H",
        "Sec-Fetch-Mode: navigate",
        "-o",
        "/dev/null",
        &url,
    ];
    let first = curl(&args).await;
    assert!(first.status.success(), "{}", first.stderr);
    assert!(!first.stderr.contains("< HTTP/2 103"));
    let second = curl(&args).await;
    let at_103 = second.stderr.find("< HTTP/2 103").expect("a 103");
    let at_200 = second.stderr.find("< HTTP/2 200").expect("a 200");
    assert!(at_103 < at_200, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("< link: </a.css>; rel=preload; as=style")
    );
}

/// An upstream 103 reaches an HTTP/1.1 client (`early_hints.http1`) while the upstream is
/// still holding its final response: it is not kept until the response comes.
#[tokio::test]
async fn an_upstream_103_reaches_an_http1_client_before_the_final_response() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route(
            "/",
            Reply::page(&[])
                .early_hints(&["</u.css>; rel=preload; as=style"])
                .hold(gate.clone()),
        )
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |c| c.early_hints.http1 = true).await;
    let mut conn = support::raw::RawConn::open(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        .await;
    let hint = conn.read_head().await.expect("the forwarded 103");
    assert!(
        hint.head.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{}",
        hint.head
    );
    assert_eq!(
        hint.header("link"),
        Some("</u.css>; rel=preload; as=style"),
        "{}",
        hint.head
    );
    assert!(
        !gate.opened(),
        "the 103 came while the upstream was still holding its answer"
    );
    gate.open();
    // The next head on the connection, after the 103.
    let last = conn.read_head().await.expect("the final response");
    assert_eq!(last.status(), 200, "{}", last.head);
}

/// `early_hints.http1`: HTTP/1.1 clients get learned and upstream 103s too, written before the
/// final response; HTTP/1.0 clients and the default configuration get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_get_103s_only_when_enabled() {
    let up = Upstream::new()
        .route("/", Reply::page(&PAGE_LINKS))
        .route(
            "/hinted",
            Reply::page(&[]).early_hints(&["</u.css>; rel=preload; as=style"]),
        )
        .start()
        .await;
    let on = Proxy::start(up.addr(), |c| c.early_hints.http1 = true).await;
    let off = Proxy::start(up.addr(), |_| {}).await;
    let fetch = |port: u16, path: &'static str, version: &'static str| async move {
        let url = format!("http://127.0.0.1:{port}{path}");
        let nav = "Sec-Fetch-Mode: navigate";
        let out = curl(&["-s", "-v", version, "-H", nav, "-o", "/dev/null", &url]).await;
        assert!(out.status.success(), "{}", out.stderr);
        out.stderr
    };

    fetch(on.addr.port(), "/", "--http1.1").await;
    let learned = fetch(on.addr.port(), "/", "--http1.1").await;
    let at_103 = learned
        .find("< HTTP/1.1 103 Early Hints")
        .expect("a learned 103");
    assert!(
        at_103 < learned.find("< HTTP/1.1 200").expect("a 200"),
        "{learned}"
    );
    assert!(
        learned.contains("< link: </b.js>; rel=preload; as=script\r\n"),
        "{learned}"
    );

    let upstream = fetch(on.addr.port(), "/hinted", "--http1.1").await;
    assert!(
        upstream.contains("< HTTP/1.1 103 Early Hints"),
        "{upstream}"
    );
    assert!(
        upstream.contains("< link: </u.css>; rel=preload; as=style"),
        "{upstream}"
    );

    let old_client = fetch(on.addr.port(), "/", "--http1.0").await;
    assert!(
        !old_client.contains(" 103 "),
        "no 1xx to HTTP/1.0: {old_client}"
    );

    fetch(off.addr.port(), "/", "--http1.1").await;
    assert!(
        !fetch(off.addr.port(), "/", "--http1.1")
            .await
            .contains(" 103 ")
    );
    assert!(
        !fetch(off.addr.port(), "/hinted", "--http1.1")
            .await
            .contains(" 103 ")
    );

    let metrics = on.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"learned\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"upstream\"}"),
        1.0,
        "{metrics}"
    );
}

/// The backend's own 103 on the pages below: a preconnect to a font host, a cross-origin
/// preload, and a same-origin preload the final response repeats.
const BACKEND_103: [&str; 3] = [
    "<https://fonts.example>; rel=preconnect; crossorigin",
    "<https://cdn.example/x.js>; rel=preload; as=script",
    "</a.css>; rel=preload; as=style",
];

/// The final response's links: same-origin preloads (one `nopush`), an `http:` cross-origin
/// preload (never hinted), a preconnect to a CDN, and relations browsers ignore in a 103.
const FINAL_LINKS: [&str; 6] = [
    "</a.css>; rel=preload; as=style",
    "</b.js>; rel=preload; as=script; nopush",
    "<http://insecure.example/y.js>; rel=preload; as=script",
    "<https://cdn.example/z>; rel=preconnect",
    "</m.js>; rel=modulepreload",
    "</next.html>; rel=prefetch",
];

/// Issue 12 items 1–2: the learned 103 goes out at once with everything known for the route —
/// the final response's preloads and preconnects and what the backend's 103 carried last time —
/// while push stays same-origin; the backend's 103 on this request adds nothing, so it is not
/// forwarded (Chromium would ignore a second 103 anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_103_carries_everything_known_and_push_stays_same_origin() {
    let up = Upstream::new()
        .route("/", Reply::page(&FINAL_LINKS).early_hints(&BACKEND_103))
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut first = h2_connect(proxy.addr, &H2Options::no_push()).await;
    let learning = h2_get(&mut first, "/", NAVIGATE).await;
    assert_eq!(
        learning.informational.len(),
        1,
        "the backend's 103, forwarded"
    );
    assert_eq!(links_of(&learning, 0), BACKEND_103);

    let gate = Gate::new();
    up.set_route(
        "/",
        Reply::page(&FINAL_LINKS)
            .early_hints(&BACKEND_103)
            .hold(gate.clone()),
    );
    let (tap, task) = get_in_background(
        h2_connect(proxy.addr, &H2Options::no_push()).await,
        "/",
        NAVIGATE,
    );
    tap.wait_for("the learned 103", is_headers_on(1)).await;
    assert!(!gate.opened());
    gate.open();
    let (ex, _client) = bounded("the page", task).await.unwrap();
    assert_eq!(ex.informational.len(), 1, "{:?}", ex.informational);
    // The backend's 103 first (in its order), then what only the final response named.
    let everything = [
        "<https://fonts.example>; rel=preconnect; crossorigin",
        "<https://cdn.example/x.js>; rel=preload; as=script",
        "</a.css>; rel=preload; as=style",
        "</b.js>; rel=preload; as=script",
        "<https://cdn.example>; rel=preconnect",
    ];
    assert_eq!(links_of(&ex, 0), everything);

    // A push client: same-origin preloads pushed (not `nopush`), the rest hinted.
    up.set_route("/", Reply::page(&FINAL_LINKS).early_hints(&BACKEND_103));
    let mut pusher = h2_connect(proxy.addr, &H2Options::default()).await;
    let pushed = h2_get(&mut pusher, "/", NAVIGATE).await;
    assert_eq!(pushed.pushed_paths(), ["/a.css"]);
    assert_eq!(pushed.informational.len(), 1, "{:?}", pushed.informational);
    let not_pushed: Vec<&str> = everything
        .into_iter()
        .filter(|l| !l.starts_with("</a.css>"))
        .collect();
    assert_eq!(links_of(&pushed, 0), not_pushed);
    assert!(up.requests_for("/x.js").is_empty() && up.requests_for("/y.js").is_empty());
    let metrics = proxy.metrics().await;
    assert_eq!(
        sample(&metrics, "linkpush_early_hints_total{source=\"upstream\"}"),
        1.0,
        "only the first visit's 103 was forwarded: {metrics}"
    );
}

/// SPEC §5: a later 103 carries only links not hinted yet; none at all if nothing is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_103s_never_carry_the_same_link() {
    let up = Upstream::new()
        .route("/", Reply::page(&FINAL_LINKS))
        .fallback(Reply::ok("asset"))
        .start()
        .await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let mut client = h2_connect(proxy.addr, &H2Options::no_push()).await;
    h2_get(&mut client, "/", NAVIGATE).await;

    // The backend now sends two 103s: one repeating learned links with other attributes, and
    // one with a link never seen.
    up.set_route(
        "/",
        Reply::page(&FINAL_LINKS)
            .early_hints(&[
                "</a.css>; rel=preload",
                "<https://cdn.example/z/q>; rel=preconnect",
            ])
            .early_hints(&["</b.js>; rel=preload", "</new.js>; rel=preload; as=script"]),
    );
    let ex = h2_get(&mut client, "/", NAVIGATE).await;
    assert_eq!(ex.informational.len(), 2, "{:?}", ex.informational);
    assert_eq!(
        links_of(&ex, 0),
        [
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script",
            "<https://cdn.example>; rel=preconnect",
        ]
    );
    assert_eq!(links_of(&ex, 1), ["</new.js>; rel=preload; as=script"]);
    let all: Vec<String> = (0..2).flat_map(|i| links_of(&ex, i)).collect();
    for (i, link) in all.iter().enumerate() {
        let target = &link[..link.find('>').unwrap()];
        assert!(
            all[..i].iter().all(|l| !l.starts_with(target)),
            "{link} hinted twice: {all:?}"
        );
    }

    // Learned from that answer: next time the first 103 has /new.js too, and nothing follows.
    let next = h2_get(&mut client, "/", NAVIGATE).await;
    assert_eq!(next.informational.len(), 1, "{:?}", next.informational);
    assert!(links_of(&next, 0).contains(&"</new.js>; rel=preload; as=script".to_owned()));
}
