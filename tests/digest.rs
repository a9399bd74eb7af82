//! `push.cache_digest` end to end (SPEC §4 rule 3): the page that carried pushes sets a cookie
//! recording them with their freshness; a repeat visit on a new connection that sends it back
//! gets no pushes for what is still fresh, and gets them again once their max-age has passed
//! (the proxy's digest clock is moved forward, no sleeping). `nghttp` checks the same as an
//! independent client.

mod support;

use std::time::Duration;

use linkpush::push::digest::{self, Digest, Key};
use support::client::*;
use support::proxy::*;
use support::upstream::*;

/// A page with four preloads: two assets fresh for 60 s and an hour, one `no-store`, one
/// without any freshness (neither may be recorded).
fn site() -> Upstream {
    Upstream::new()
        .route(
            "/",
            ["/short.css", "/long.js", "/nostore.png", "/plain.svg"]
                .iter()
                .fold(Reply::html("<html>page</html>"), |r, p| {
                    r.link(&format!("<{p}>; rel=preload; as=fetch"))
                }),
        )
        .route(
            "/short.css",
            Reply::ok(vec![b'c'; 20_000]).header("cache-control", "public, max-age=60"),
        )
        .route(
            "/long.js",
            Reply::ok(vec![b'j'; 80_000]).header("cache-control", "max-age=3600"),
        )
        .route(
            "/nostore.png",
            Reply::ok(vec![b'p'; 1_000]).header("cache-control", "no-store, max-age=600"),
        )
        .route("/plain.svg", Reply::ok(vec![b's'; 1_000]))
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort();
    v
}

fn pushed_bytes(ex: &Exchange) -> usize {
    ex.pushes.iter().map(|p| p.body.len()).sum()
}

/// The `lp_digest=…` pair of a Set-Cookie, ready to send back as a Cookie field.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("a name=value pair")
        .to_owned()
}

async fn visit(proxy: &Proxy, tls: bool, cookie: Option<&str>) -> Exchange {
    let opts = H2Options {
        tls,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let ex = h2_get(&mut client, "/", &headers).await;
    assert_eq!(ex.status, 200);
    for p in &ex.pushes {
        assert!(p.completed(), "{p:?}");
    }
    ex
}

fn cached_skips(metrics: &str) -> f64 {
    sample(metrics, "linkpush_push_skipped_total{reason=\"cached\"}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_visit_skips_fresh_pushes_until_their_max_age_passes() {
    let up = site().start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let server = proxy.server.as_ref().expect("running");
    let all = vec!["/long.js", "/nostore.png", "/plain.svg", "/short.css"];

    // Someone else's visit: the proxy learns the assets' freshness from their fetches.
    let warm = visit(&proxy, false, None).await;
    assert_eq!(sorted(warm.pushed_paths()), all);

    // First visit on a new connection: everything pushed, and the page records it.
    let first = visit(&proxy, false, None).await;
    assert_eq!(sorted(first.pushed_paths()), all);
    let set_cookie = first
        .header("set-cookie")
        .expect("the page sets the digest");
    assert!(set_cookie.starts_with("lp_digest="), "{set_cookie}");
    assert!(
        set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "h2c: no Secure: {set_cookie}"
    );
    let max_age: u64 = set_cookie
        .split("; Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|v| v.parse().ok())
        .expect("Max-Age");
    assert!(
        (3590..=3600).contains(&max_age),
        "the longest entry: {max_age}"
    );
    let cookie = cookie_pair(set_cookie);
    let origin = "http://localhost";
    let recorded = Digest::decode(
        digest::find_cookie([cookie.as_bytes()]).expect("named"),
        linkpush_now(),
    )
    .expect("decodes");
    assert_eq!(
        recorded.len(),
        2,
        "no-store and no max-age are not recorded"
    );
    for path in ["/short.css", "/long.js"] {
        assert!(recorded.contains(Key::of_url(&format!("{origin}{path}"))));
    }

    // Repeat visit, new connection, cookie sent back: only what the digest lacks is pushed.
    let repeat = visit(&proxy, false, Some(&cookie)).await;
    assert_eq!(
        sorted(repeat.pushed_paths()),
        vec!["/nostore.png", "/plain.svg"]
    );
    assert_eq!(repeat.header("set-cookie"), None, "nothing new to record");
    // A learned 103 would name only links neither pushed nor cached: there are none, so no 103.
    assert!(
        repeat.informational.is_empty(),
        "{:?}",
        repeat.informational
    );
    let metrics = proxy
        .metrics_when("two cached skips", |m| cached_skips(m) == 2.0)
        .await;
    assert!(metrics.contains("linkpush_push_skipped_total{reason=\"cached\"} 2\n"));
    println!(
        "repeat visit on a new connection: {} bytes pushed without the digest, {} with it",
        pushed_bytes(&first),
        pushed_bytes(&repeat)
    );
    assert_eq!(pushed_bytes(&first), 102_000);
    assert_eq!(pushed_bytes(&repeat), 2_000);

    // 61 s later the stylesheet is stale: pushed again, and the new cookie keeps the script.
    server.advance_digest_clock(Duration::from_secs(61));
    let later = visit(&proxy, false, Some(&cookie)).await;
    assert_eq!(
        sorted(later.pushed_paths()),
        vec!["/nostore.png", "/plain.svg", "/short.css"]
    );
    let renewed = cookie_pair(later.header("set-cookie").expect("css recorded again"));
    let renewed = Digest::decode(
        digest::find_cookie([renewed.as_bytes()]).expect("named"),
        linkpush_now() + 61,
    )
    .expect("decodes");
    assert_eq!(renewed.len(), 2);
    assert!(renewed.contains(Key::of_url(&format!("{origin}/short.css"))));

    // An hour later nothing in the old cookie is fresh: everything is pushed.
    server.advance_digest_clock(Duration::from_secs(3600));
    let stale = visit(&proxy, false, Some(&cookie)).await;
    assert_eq!(sorted(stale.pushed_paths()), all);
    let metrics = proxy
        .metrics_when("three cached skips", |m| cached_skips(m) == 3.0)
        .await;
    assert!(metrics.contains("linkpush_push_skipped_total{reason=\"cached\"} 3\n"));
}

/// The proxy's digest clock before any advance: the system clock (the test runs well within
/// the shortest max-age, 60 s).
fn linkpush_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_proxy_records_on_the_next_page_of_the_connection_and_over_tls_marks_it_secure() {
    let up = site().start().await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let opts = H2Options {
        tls: true,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    let first = h2_get(&mut client, "/", &[]).await;
    assert_eq!(first.pushes.len(), 4);
    for p in &first.pushes {
        assert!(p.completed(), "{p:?}");
    }
    // The first page's HEADERS went out right after its promises, before (almost always) any
    // fetch told the assets' max-age. The next page on the connection pushes nothing new but
    // records what the fetches told.
    let second = h2_get(&mut client, "/", &[]).await;
    assert!(second.pushes.is_empty());
    let set_cookie = second.header("set-cookie").expect("recorded now");
    assert!(
        set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{set_cookie}"
    );
    let cookie = cookie_pair(set_cookie);
    let repeat = visit(&proxy, true, Some(&cookie)).await;
    assert_eq!(
        sorted(repeat.pushed_paths()),
        vec!["/nostore.png", "/plain.svg"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_foreign_cookies_change_nothing_and_the_switch_turns_it_off() {
    let up = site().start().await;
    let proxy = Proxy::start(up.addr(), |_| {}).await;
    let all = vec!["/long.js", "/nostore.png", "/plain.svg", "/short.css"];
    for cookie in [
        "lp_digest=",
        "lp_digest=%%%",
        "lp_digest=AQAAAAAB_____________w",
        &format!("lp_digest={}", "A".repeat(5000)),
        "a=b; lp_digest=\"\"",
    ] {
        let ex = visit(&proxy, false, Some(cookie)).await;
        assert_eq!(sorted(ex.pushed_paths()), all, "{cookie}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(cached_skips(&metrics), 0.0);

    // push.cache_digest = false: a valid cookie is ignored and none is set.
    let warm = visit(&proxy, false, None).await;
    assert_eq!(warm.pushes.len(), 4);
    let second = visit(&proxy, false, None).await;
    let cookie = cookie_pair(second.header("set-cookie").expect("digest on by default"));
    let off = Proxy::start(up.addr(), |c| c.push.cache_digest = false).await;
    let warm = visit(&off, false, None).await;
    assert_eq!(warm.pushes.len(), 4);
    let ex = visit(&off, false, Some(&cookie)).await;
    assert_eq!(sorted(ex.pushed_paths()), all);
    assert_eq!(ex.header("set-cookie"), None);
}

/// nghttp, an independent HTTP/2 client, sends the cookie back on a new connection: no
/// PUSH_PROMISE for the fresh assets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_repeat_visit_with_the_cookie_gets_no_promises_for_fresh_assets() {
    let up = site().start().await;
    let proxy = Proxy::start_tls(up.addr(), |_| {}).await;
    let url = format!("https://127.0.0.1:{}/", proxy.addr.port());
    let warm = nghttp(&["-nv", &url]).await;
    assert!(warm.status.success(), "{}", warm.stderr);
    assert_eq!(warm.promised_paths().len(), 4);
    let first = nghttp(&["-nv", &url]).await;
    let set_cookie = first
        .frames
        .iter()
        .find(|f| f.kind == "HEADERS" && f.stream_id % 2 == 1)
        .and_then(|f| f.header("set-cookie"))
        .expect("the page sets the digest")
        .to_owned();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    let cookie = format!("cookie: {}", cookie_pair(&set_cookie));
    let repeat = nghttp(&["-nv", "-H", &cookie, &url]).await;
    assert!(repeat.status.success(), "{}", repeat.stderr);
    assert_eq!(
        sorted(repeat.promised_paths()),
        vec!["/nostore.png", "/plain.svg"]
    );
}
