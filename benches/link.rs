//! Micro-benchmarks of the pure push path: Link headers parsed per second, and links
//! classified (resolved, checked, hinted) per second. Throughput is reported in links.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkpush::push::link::{self, MAX_LINKS};
use linkpush::push::policy;
use linkpush::push::target::RequestBase;

const BASE: RequestBase<'static> = RequestBase {
    scheme: "https",
    authority: "shop.example",
    path_and_query: "/products/42?ref=home",
};

/// What a framework typically emits for one page: a few preloads, in two fields.
const TYPICAL: [&str; 2] = [
    "</static/app.3f9a1c.css>; rel=preload; as=style, \
     </static/app.8b2e4d.js>; rel=preload; as=script, \
     </static/vendor.1c2d3e.js>; rel=preload; as=script; nopush",
    "</fonts/inter-var.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin, \
     <https://cdn.example/img/hero.avif>; rel=preload; as=image; fetchpriority=high",
];

fn bench_link(c: &mut Criterion) {
    let typical_links = link::parse_fields(TYPICAL.iter().map(|f| f.as_bytes()))
        .links
        .len();

    // The worst a response can make us do: MAX_LINKS long-ish, relative, same-origin preloads.
    let many: String = (0..MAX_LINKS)
        .map(|i| format!("<../assets/{i:03}/chunk.{i:08x}.js?v=1>; rel=\"preload\"; as=script"))
        .collect::<Vec<_>>()
        .join(", ");

    let mut group = c.benchmark_group("link");

    group.throughput(Throughput::Elements(typical_links as u64));
    group.bench_function("parse/typical", |b| {
        b.iter(|| link::parse_fields(black_box(TYPICAL).iter().map(|f| f.as_bytes())))
    });
    let parsed = link::parse_fields(TYPICAL.iter().map(|f| f.as_bytes()));
    group.bench_function("classify/typical", |b| {
        b.iter(|| policy::classify(black_box(&parsed), black_box(&BASE)))
    });

    group.throughput(Throughput::Elements(MAX_LINKS as u64));
    group.bench_function("parse/64_links", |b| {
        b.iter(|| link::parse_fields([black_box(many.as_bytes())]))
    });
    let parsed_many = link::parse_fields([many.as_bytes()]);
    group.bench_function("classify/64_links", |b| {
        b.iter(|| policy::classify(black_box(&parsed_many), black_box(&BASE)))
    });

    // Hostile: 100 KB that never closes its target must cost one linear scan.
    let hostile = "<".repeat(100 * 1024);
    group.throughput(Throughput::Bytes(hostile.len() as u64));
    group.bench_function("parse/hostile_100k", |b| {
        b.iter(|| link::parse_fields([black_box(hostile.as_bytes())]))
    });

    group.finish();
}

/// The learned-hints LRU (SPEC §6): a lookup on every GET, a replace on every 2xx answer.
fn bench_learn(c: &mut Criterion) {
    use linkpush::learn::LearnStore;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    let routes = 10_000;
    let store = LearnStore::with_bounds(
        NonZeroUsize::new(routes).unwrap(),
        32 << 20,
        Duration::from_secs(600),
        linkpush::metrics::Metrics::new(),
    );
    let fields: Vec<http::HeaderValue> = TYPICAL
        .iter()
        .map(|f| http::HeaderValue::from_static(f))
        .collect();
    let links = std::sync::Arc::new(linkpush::learn::RouteLinks::classify(&fields, &BASE));
    let keys: Vec<String> = (0..routes)
        .map(|i| linkpush::learn::route_key("shop.example", &format!("/products/{i}"), &[]))
        .collect();
    for k in &keys {
        store.learn(k.clone(), links.clone());
    }
    let mut group = c.benchmark_group("learn");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("get/hit", |b| {
        b.iter(|| {
            i = (i + 7919) % routes;
            black_box(store.get(black_box(&keys[i])))
        })
    });
    group.bench_function("get/miss", |b| {
        b.iter(|| black_box(store.get(black_box("shop.example/nope"))))
    });
    group.bench_function("same_fields", |b| {
        b.iter(|| black_box(links.same_fields(&[], black_box(&fields))))
    });
    group.bench_function("learn/unchanged", |b| {
        b.iter(|| {
            i = (i + 7919) % routes;
            store.learn(keys[i].clone(), links.clone())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_link, bench_learn);
criterion_main!(benches);
