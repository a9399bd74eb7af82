//! Learned hints (SPEC §6): route → the links its last 2xx GET response announced (its final
//! Link fields and its 103s'), in an LRU shared by all connections, bounded in entries
//! (`learn.routes`) and in bytes (`learn.max_bytes`), each forgotten after `learn.ttl`.
//!
//! Only cleaned links are kept (SPEC §5): same-origin preloads that passed SPEC §4 rules 1–2,
//! and the clean 103 values of cross-origin `https:` preloads and preconnects, so a learned
//! entry can never make linkpush fetch anything but the upstream, and acts on no raw header
//! copy. The fields an entry was built from are kept only to be recognised, byte for byte, so
//! that the next identical response reuses it without parsing (the common case: a route's links
//! rarely change).
//!
//! What may be learned and under which key (RFC 9111 shared-cache rules, `learn.exclude`,
//! tracking parameters) is decided in `learn/rules.rs`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use lru::LruCache;

use crate::config::LearnConfig;
use crate::metrics::Metrics;
use crate::push::link;
use crate::push::policy::{self, Preload, SkipReason};
use crate::push::target::RequestBase;

mod rules;
pub use rules::{LearnSkip, learnable, route_key};

/// What one response's Link fields said, cleaned, and shared by every request that acts on it.
#[derive(Debug, Default, Clone)]
pub struct RouteLinks {
    /// The Link fields these links were built from.
    fields: FieldsSeen,
    /// Same-origin preloads (pushable unless `nopush`, always hintable).
    pub preloads: Vec<Preload>,
    /// Every clean 103 value in link order: the preloads' (sharing their bytes), cross-origin
    /// `https:` preloads and preconnects.
    pub hints: Vec<HeaderValue>,
    /// Why the final response's links were not push candidates, counted per response.
    pub skipped: Vec<SkipReason>,
}

/// The links of a response without Link fields, shared: one process-wide entry instead of an
/// allocation and a parse per response.
pub fn no_links() -> Links {
    static NONE: OnceLock<Links> = OnceLock::new();
    NONE.get_or_init(|| {
        Arc::new(RouteLinks {
            fields: FieldsSeen::of(&[], []),
            ..RouteLinks::default()
        })
    })
    .clone()
}

impl RouteLinks {
    /// Parses and classifies Link field values against the request URL.
    pub fn classify<'a>(
        values: impl IntoIterator<Item = &'a HeaderValue>,
        base: &RequestBase<'_>,
    ) -> Self {
        let values: Vec<&HeaderValue> = values.into_iter().collect();
        let parsed = link::parse_fields(values.iter().map(|v| v.as_bytes()));
        let classified = policy::classify(&parsed, base);
        RouteLinks {
            fields: FieldsSeen::of(&[], values),
            preloads: classified.preloads,
            hints: classified.hints,
            skipped: classified.skipped,
        }
    }

    /// Everything a response announced: the links of its 103s first (what the backend wanted
    /// the client to have earliest), then the final ones (these) they do not already name, so
    /// that next time the first 103 carries all of it (SPEC §5). `skipped` stays the final
    /// response's, which is what push counts.
    pub fn with_early(self, early: &RouteLinks, fields: FieldsSeen) -> Self {
        let mut preloads = early.preloads.clone();
        for p in self.preloads {
            if !preloads.iter().any(|q| q.path == p.path) {
                preloads.push(p);
            }
        }
        let early_keys: Vec<&[u8]> = early
            .hints
            .iter()
            .map(|h| policy::hint_key(h.as_bytes()))
            .collect();
        let mut hints = early.hints.clone();
        for h in self.hints {
            if !early_keys.contains(&policy::hint_key(h.as_bytes())) {
                hints.push(h);
            }
        }
        RouteLinks {
            fields,
            preloads,
            hints,
            skipped: self.skipped,
        }
    }

    /// Whether these links were built from exactly these Link fields: a response's 103s'
    /// (`early`) and its final ones.
    pub fn same_fields<'a>(
        &self,
        early: &[HeaderValue],
        final_fields: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> bool {
        self.fields.is(early, final_fields)
    }

    pub fn is_empty(&self) -> bool {
        self.preloads.is_empty() && self.hints.is_empty()
    }

    /// What this entry costs the store, as accounted against `learn.max_bytes`: the strings it
    /// holds plus a fixed overhead per link and per route for the vectors, `Arc` and LRU node.
    fn accounted_bytes(&self, key: &str) -> usize {
        const PER_ROUTE: usize = 192;
        const PER_LINK: usize = 64;
        // A preload's hint shares its bytes with the same value in `hints`: counted once.
        let preloads: usize = self.preloads.iter().map(|p| p.path.len() + PER_LINK).sum();
        let hints: usize = self.hints.iter().map(|h| h.len() + PER_LINK).sum();
        PER_ROUTE + key.len() + preloads + hints + self.fields.0.len()
    }
}

/// The Link fields of a response's 103s and of its final response, in order, as one copy: each
/// value's length (u32, little-endian) and bytes, the 103s' first, then [`FieldsSeen::FINAL`].
/// Compared with the next response's fields in one pass, exactly, no hash: a keyed SipHash
/// digest of a page's five Link fields was ~1,400 instructions per request, the comparison is
/// ~300 (callgrind, `/index.html`).
#[derive(Debug, Default, Clone)]
pub struct FieldsSeen(Box<[u8]>);

impl FieldsSeen {
    /// Where the final response's fields start: no value is this long (a head is at most
    /// 64 KiB, so every length fits a u32 too).
    const FINAL: [u8; 4] = u32::MAX.to_le_bytes();

    pub fn of<'a>(
        early: &[HeaderValue],
        final_fields: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Self {
        fn put(out: &mut Vec<u8>, v: &[u8]) {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        let mut out = Vec::new();
        for v in early {
            put(&mut out, v.as_bytes());
        }
        out.extend_from_slice(&Self::FINAL);
        for v in final_fields {
            put(&mut out, v.as_bytes());
        }
        FieldsSeen(out.into_boxed_slice())
    }

    /// Whether these are exactly `early`'s and `final_fields`' values, in that order.
    pub fn is<'a>(
        &self,
        early: &[HeaderValue],
        final_fields: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> bool {
        fn take(rest: &mut &[u8], prefix: &[u8]) -> bool {
            match rest.strip_prefix(prefix) {
                Some(tail) => {
                    *rest = tail;
                    true
                }
                None => false,
            }
        }
        fn take_value(rest: &mut &[u8], v: &[u8]) -> bool {
            take(rest, &(v.len() as u32).to_le_bytes()) && take(rest, v)
        }
        let mut rest: &[u8] = &self.0;
        early.iter().all(|v| take_value(&mut rest, v.as_bytes()))
            && take(&mut rest, &Self::FINAL)
            && final_fields
                .into_iter()
                .all(|v| take_value(&mut rest, v.as_bytes()))
            && rest.is_empty()
    }
}

/// The links of one route, shared with every request that acts on them.
pub type Links = Arc<RouteLinks>;

/// Where the store reads the time: injected so that TTL tests need no sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The time of the turn (`crate::clock`): a TTL of seconds is not moved by microseconds.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        crate::clock::now()
    }
}

/// A clock that moves only when told: the time it was made plus what [`ManualClock::advance`]
/// added. Clones share the offset.
#[derive(Clone)]
pub struct ManualClock {
    start: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

pub struct LearnStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
    metrics: Metrics,
}

struct Inner {
    routes: LruCache<String, Entry>,
    /// Sum of the entries' accounted bytes.
    bytes: usize,
    clock: Arc<dyn Clock>,
}

struct Entry {
    links: Links,
    learned_at: Instant,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, route: &str) {
        if let Some(old) = self.routes.pop(route) {
            self.bytes -= old.bytes;
        }
    }
}

impl LearnStore {
    pub fn new(config: &LearnConfig, metrics: Metrics) -> Self {
        Self::with_bounds(config.routes, config.max_bytes, config.ttl, metrics)
    }

    pub fn with_bounds(
        routes: NonZeroUsize,
        max_bytes: u64,
        ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        metrics.learned_bytes(0);
        LearnStore {
            inner: Mutex::new(Inner {
                routes: LruCache::new(routes),
                bytes: 0,
                clock: Arc::new(SystemClock),
            }),
            ttl,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            metrics,
        }
    }

    /// Replaces the clock (tests: a [`ManualClock`]). Entries keep the times they were learned at.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.lock().clock = clock;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The route's links, unless unknown or older than the TTL (then forgotten now).
    pub fn get(&self, route: &str) -> Option<Links> {
        let mut inner = self.lock();
        let now = inner.clock.now();
        match inner.routes.get(route) {
            None => return None,
            Some(entry) if now.saturating_duration_since(entry.learned_at) < self.ttl => {
                return Some(entry.links.clone());
            }
            Some(_) => {}
        }
        inner.remove(route);
        self.metrics.learned_bytes(inner.bytes);
        None
    }

    /// Replaces what is known of the route by the final response's links; a response with
    /// none makes the route forgotten, so links it no longer carries are not acted on again.
    /// Least recently used routes make room, in entries and in bytes; a route too large for
    /// the whole store is not stored (counted as `too_large`, and the old entry forgotten).
    pub fn learn(&self, route: String, links: Links) {
        let mut inner = self.lock();
        // The same entry learned again (the response's fields matched it, the common case):
        // only its age starts over. Callgrind: removing and re-inserting it, with its
        // accounting, was ~600 instructions per page response.
        let now = inner.clock.now();
        if let Some(entry) = inner.routes.get_mut(&route)
            && Arc::ptr_eq(&entry.links, &links)
        {
            entry.learned_at = now;
            return;
        }
        let bytes = links.accounted_bytes(&route);
        inner.remove(&route);
        if links.is_empty() || bytes > self.max_bytes {
            if !links.is_empty() {
                self.metrics.learn_skipped(LearnSkip::TooLarge);
            }
            self.metrics.learned_bytes(inner.bytes);
            return;
        }
        while inner.bytes + bytes > self.max_bytes {
            match inner.routes.pop_lru() {
                Some((_, old)) => inner.bytes -= old.bytes,
                None => break,
            }
        }
        let evicted = inner.routes.push(
            route,
            Entry {
                links,
                learned_at: now,
                bytes,
            },
        );
        inner.bytes += bytes;
        if let Some((_, old)) = evicted {
            inner.bytes -= old.bytes;
        }
        self.metrics.learned_bytes(inner.bytes);
    }

    /// The bytes the store accounts for, always at most `learn.max_bytes`.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: RequestBase<'static> = RequestBase {
        scheme: "https",
        authority: "h",
        path_and_query: "/",
    };

    /// Lists of Link values, few and short so that two lists are often alike.
    fn values() -> impl proptest::strategy::Strategy<Value = Vec<HeaderValue>> {
        use proptest::prelude::*;
        proptest::collection::vec("[ab]{0,2}", 0..4).prop_map(|v| {
            v.iter()
                .map(|s| HeaderValue::from_str(s).expect("a header value"))
                .collect()
        })
    }

    proptest::proptest! {
        /// Fields are recognised exactly when the 103s' and the final response's values are
        /// the same, in the same order, split in the same place.
        #[test]
        fn fields_are_seen_again_exactly_when_they_are_the_same(
            early in values(),
            fin in values(),
            early2 in values(),
            fin2 in values(),
        ) {
            let seen = FieldsSeen::of(&early, &fin);
            proptest::prop_assert!(seen.is(&early, &fin));
            proptest::prop_assert_eq!(
                seen.is(&early2, &fin2),
                early == early2 && fin == fin2
            );
        }
    }

    fn links(fields: &[&'static str]) -> Links {
        let values: Vec<HeaderValue> = fields.iter().map(|f| HeaderValue::from_static(f)).collect();
        Arc::new(RouteLinks::classify(&values, &BASE))
    }

    fn store(routes: usize, max_bytes: u64, ttl: Duration) -> LearnStore {
        LearnStore::with_bounds(
            NonZeroUsize::new(routes).unwrap(),
            max_bytes,
            ttl,
            Metrics::new(),
        )
    }

    fn hints(l: &RouteLinks) -> Vec<&str> {
        l.hints.iter().map(|h| h.to_str().unwrap()).collect()
    }

    #[test]
    fn classifies_once_and_recognises_the_same_fields() {
        let a = HeaderValue::from_static("</a.css>; rel=preload; as=style; nopush");
        let b = HeaderValue::from_static(
            "<https://cdn/x>; rel=preload, </b.js>; rel=preload, <https://f>; rel=preconnect",
        );
        let l = RouteLinks::classify([&a, &b], &BASE);
        assert_eq!(l.preloads.len(), 2);
        assert_eq!(
            hints(&l),
            [
                "</a.css>; rel=preload; as=style",
                "<https://cdn/x>; rel=preload",
                "</b.js>; rel=preload",
                "<https://f>; rel=preconnect",
            ]
        );
        assert_eq!(l.skipped, vec![SkipReason::CrossOrigin]);
        assert!(l.same_fields(&[], [&a, &b]));
        assert!(!l.same_fields(&[], [&b, &a]));
        assert!(!l.same_fields(&[], [&a]));
        assert!(!l.same_fields(&[], [&a, &b, &a]));
        assert!(!l.same_fields(std::slice::from_ref(&a), [&b]));
        let empty = RouteLinks::classify([], &BASE);
        assert!(empty.same_fields(&[], []));
        assert!(!empty.same_fields(&[], [&a]));
    }

    #[test]
    fn early_links_join_the_final_ones_once() {
        let early = [HeaderValue::from_static(
            "</a.css>; rel=preload, </e.js>; rel=preload, <https://cdn/x>; rel=preconnect",
        )];
        let fin = [HeaderValue::from_static(
            "</a.css>; rel=preload; as=style, <https://cdn/x/y>; rel=preconnect",
        )];
        let l = RouteLinks::classify(&fin, &BASE).with_early(
            &RouteLinks::classify(&early, &BASE),
            FieldsSeen::of(&early, &fin),
        );
        assert_eq!(
            hints(&l),
            [
                "</a.css>; rel=preload",
                "</e.js>; rel=preload",
                "<https://cdn>; rel=preconnect",
            ],
            "the 103's links first, then the final response's others"
        );
        assert!(l.same_fields(&early, &fin));
        assert!(
            !l.same_fields(&[], early.iter().chain(&fin)),
            "where the 103s' fields end"
        );
    }

    #[test]
    fn remembers_replaces_and_forgets() {
        let store = store(2, 1 << 20, Duration::from_secs(60));
        store.learn("h/".into(), links(&["</a.css>; rel=preload"]));
        assert_eq!(store.get("h/").unwrap().preloads[0].path, "/a.css");
        store.learn("h/".into(), links(&["</b.css>; rel=preload"]));
        assert_eq!(store.get("h/").unwrap().preloads.len(), 1);
        assert_eq!(store.get("h/").unwrap().preloads[0].path, "/b.css");
        store.learn("h/".into(), links(&["<https://cdn>; rel=preconnect"]));
        assert!(
            store.get("h/").unwrap().preloads.is_empty(),
            "hint-only is kept"
        );
        store.learn("h/".into(), links(&[]));
        assert!(store.get("h/").is_none());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn capacity_evicts_least_recent() {
        let store = store(2, 1 << 20, Duration::from_secs(60));
        store.learn("h/1".into(), links(&["</1>; rel=preload"]));
        store.learn("h/2".into(), links(&["</2>; rel=preload"]));
        assert!(store.get("h/1").is_some());
        store.learn("h/3".into(), links(&["</3>; rel=preload"]));
        assert!(store.get("h/2").is_none(), "least recently used is evicted");
        assert!(store.get("h/1").is_some());
        assert_eq!(store.len(), 2);
        let one = links(&["</1>; rel=preload"]).accounted_bytes("h/1");
        assert_eq!(store.bytes(), 2 * one, "evicted bytes are given back");
    }

    #[test]
    fn bytes_evict_least_recent_and_oversized_routes_are_not_stored() {
        let one = links(&["</1>; rel=preload"]).accounted_bytes("h/1");
        let store = store(100, (one * 2) as u64, Duration::from_secs(60));
        store.learn("h/1".into(), links(&["</1>; rel=preload"]));
        store.learn("h/2".into(), links(&["</2>; rel=preload"]));
        assert_eq!(store.bytes(), 2 * one);
        store.learn("h/3".into(), links(&["</3>; rel=preload"]));
        assert!(store.get("h/1").is_none(), "made room in bytes");
        assert_eq!(store.len(), 2);
        assert!(store.bytes() <= 2 * one);

        let big = links(&["</a-very-long-name-that-does-not-fit-anywhere.css>; rel=preload"; 1]);
        let tiny = store_with_bytes(one as u64);
        tiny.learn("h/1".into(), links(&["</1>; rel=preload"]));
        tiny.learn("h/1".into(), big);
        assert!(tiny.get("h/1").is_none(), "the old entry is forgotten");
        assert_eq!(tiny.bytes(), 0);
        assert!(
            tiny.metrics
                .render()
                .lines()
                .any(|l| l == "linkpush_learn_skipped_total{reason=\"too_large\"} 1")
        );
    }

    /// Issue 11 item 8: 2,000 routes whose responses carry 60 KB Link fields (64 links of
    /// ~940 bytes, the parser's limit) stay within the default `learn.max_bytes`, by evicting
    /// whole least-recently-used routes; the gauge follows.
    #[test]
    fn two_thousand_routes_with_60_kb_link_fields_stay_within_max_bytes() {
        let field: Vec<String> = (0..64)
            .map(|i| {
                format!(
                    "</assets/{i:02}/{}.js>; rel=preload; as=script",
                    "x".repeat(900)
                )
            })
            .collect();
        let field = HeaderValue::from_str(&field.join(", ")).unwrap();
        assert!((59_000..61_440).contains(&field.len()), "{}", field.len());
        let links = RouteLinks::classify([&field], &BASE);
        assert_eq!(links.preloads.len(), 64);
        let bound = 32 * 1024 * 1024;
        let store = store(10_000, bound, Duration::from_secs(600));
        for i in 0..2_000 {
            store.learn(format!("h/route/{i}"), Arc::new(links.clone()));
            assert!(
                store.bytes() <= bound as usize,
                "after route {i}: {}",
                store.bytes()
            );
        }
        let per_route = links.accounted_bytes("h/route/1999");
        assert!(per_route > 60_000, "every link is counted: {per_route}");
        assert_eq!(
            store.len(),
            bound as usize / per_route,
            "as many whole routes as fit"
        );
        assert!(store.get("h/route/1999").is_some());
        assert!(store.get("h/route/0").is_none());
        let gauge = format!("linkpush_learned_bytes {}", store.bytes());
        assert!(
            store.metrics.render().lines().any(|l| l == gauge),
            "{gauge}"
        );
    }

    fn store_with_bytes(max: u64) -> LearnStore {
        store(10, max, Duration::from_secs(60))
    }

    #[test]
    fn ttl_expires_on_the_injected_clock() {
        let store = store(2, 1 << 20, Duration::from_secs(600));
        let clock = ManualClock::default();
        store.set_clock(Arc::new(clock.clone()));
        store.learn("h/".into(), links(&["</a>; rel=preload"]));
        clock.advance(Duration::from_secs(599));
        assert!(store.get("h/").is_some());
        clock.advance(Duration::from_secs(1));
        assert!(store.get("h/").is_none());
        assert!(store.is_empty(), "expired entries are dropped on lookup");
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn the_same_entry_learned_again_starts_its_age_over_and_counts_once() {
        let store = store(2, 1 << 20, Duration::from_secs(600));
        let clock = ManualClock::default();
        store.set_clock(Arc::new(clock.clone()));
        let entry = links(&["</a>; rel=preload"]);
        store.learn("h/".into(), entry.clone());
        let bytes = store.bytes();
        clock.advance(Duration::from_secs(500));
        store.learn("h/".into(), store.get("h/").unwrap());
        assert_eq!((store.len(), store.bytes()), (1, bytes));
        clock.advance(Duration::from_secs(500));
        assert!(
            store.get("h/").is_some_and(|l| Arc::ptr_eq(&l, &entry)),
            "600 s after it was first learned, 500 s after it was learned again"
        );
        // An equal entry that is not the same one replaces it, counted once too.
        store.learn("h/".into(), links(&["</a>; rel=preload"]));
        assert_eq!((store.len(), store.bytes()), (1, bytes));
        assert!(!Arc::ptr_eq(&store.get("h/").unwrap(), &entry));
    }
}
