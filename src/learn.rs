//! Learned hints (SPEC §6): route → the preload links its last 2xx GET response carried, in an
//! LRU of `learn.routes` entries shared by all connections, each forgotten after `learn.ttl`.
//!
//! Only links that passed SPEC §4 rules 1–2 (preload, same origin, clean path) are acted on, so
//! a learned entry can never reach anything but the upstream. An entry also keeps the Link
//! fields it was classified from: the next response with the same fields reuses it instead of
//! parsing them again (the common case: a route's links rarely change).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use lru::LruCache;

use crate::push::link;
use crate::push::policy::{self, Preload, SkipReason};
use crate::push::target::RequestBase;

/// What one response's Link fields said, classified once and shared by every request that
/// acts on it.
#[derive(Debug, Default)]
pub struct RouteLinks {
    /// The Link field values as received, each followed by a newline.
    raw: Vec<u8>,
    /// Same-origin preloads (pushable unless `nopush`, always hintable).
    pub preloads: Vec<Preload>,
    /// The clean 103 value of each of `preloads`, in the same order.
    pub hints: Vec<HeaderValue>,
    /// Clean 103 values for cross-origin preloads (hinted when forwarding an upstream 103).
    pub foreign: Vec<HeaderValue>,
    /// Why links were not candidates (cross-origin, invalid), counted per response.
    pub skipped: Vec<SkipReason>,
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
        let to_values = |hints: Vec<String>| -> Vec<HeaderValue> {
            hints
                .into_iter()
                .filter_map(|h| HeaderValue::from_str(&h).ok())
                .collect()
        };
        let hints = to_values(classified.preloads.iter().map(|p| p.hint.clone()).collect());
        RouteLinks {
            raw: raw_fields(values),
            preloads: classified.preloads,
            hints,
            foreign: to_values(classified.foreign_hints),
            skipped: classified.skipped,
        }
    }

    /// Whether these links came from exactly these Link field values.
    pub fn same_fields<'a>(&self, values: impl IntoIterator<Item = &'a HeaderValue>) -> bool {
        let mut at = 0;
        for v in values {
            let v = v.as_bytes();
            let end = at + v.len();
            if self.raw.get(at..end) != Some(v) || self.raw.get(end) != Some(&b'\n') {
                return false;
            }
            at = end + 1;
        }
        at == self.raw.len()
    }
}

fn raw_fields(values: Vec<&HeaderValue>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(values.iter().map(|v| v.len() + 1).sum());
    for v in values {
        raw.extend_from_slice(v.as_bytes());
        raw.push(b'\n');
    }
    raw
}

/// The links of one route, shared with every request that acts on them.
pub type Links = Arc<RouteLinks>;

pub struct LearnStore {
    routes: Mutex<LruCache<String, Entry>>,
    ttl: Duration,
}

struct Entry {
    links: Links,
    learned_at: Instant,
}

impl LearnStore {
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        LearnStore {
            routes: Mutex::new(LruCache::new(capacity)),
            ttl,
        }
    }

    /// The key of a route: authority (lower-cased) and path with query.
    pub fn route_key(authority: &str, path_and_query: &str) -> String {
        let mut key = String::with_capacity(authority.len() + path_and_query.len());
        key.push_str(&authority.to_ascii_lowercase());
        key.push_str(path_and_query);
        key
    }

    /// The route's links, unless unknown or older than the TTL (then forgotten now).
    pub fn get(&self, route: &str) -> Option<Links> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        match routes.get(route) {
            None => return None,
            Some(entry) if entry.learned_at.elapsed() < self.ttl => {
                return Some(entry.links.clone());
            }
            Some(_) => {}
        }
        routes.pop(route);
        None
    }

    /// Replaces what is known of the route by the final response's links; a response with
    /// none makes the route forgotten, so links it no longer carries are not acted on again.
    pub fn learn(&self, route: String, links: Links) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if links.preloads.is_empty() {
            routes.pop(&route);
            return;
        }
        if let Some(entry) = routes.get_mut(&route) {
            entry.links = links;
            entry.learned_at = Instant::now();
            return;
        }
        routes.put(
            route,
            Entry {
                links,
                learned_at: Instant::now(),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).len()
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

    fn links(fields: &[&'static str]) -> Links {
        let values: Vec<HeaderValue> = fields.iter().map(|f| HeaderValue::from_static(f)).collect();
        Arc::new(RouteLinks::classify(&values, &BASE))
    }

    #[test]
    fn classifies_once_and_recognises_the_same_fields() {
        let a = HeaderValue::from_static("</a.css>; rel=preload; as=style; nopush");
        let b = HeaderValue::from_static("<https://cdn/x>; rel=preload, </b.js>; rel=preload");
        let l = RouteLinks::classify([&a, &b], &BASE);
        assert_eq!(l.preloads.len(), 2);
        assert_eq!(l.hints[0], "</a.css>; rel=preload; as=style");
        assert_eq!(l.foreign.len(), 1);
        assert_eq!(l.skipped, vec![SkipReason::CrossOrigin]);
        assert!(l.same_fields([&a, &b]));
        assert!(!l.same_fields([&b, &a]));
        assert!(!l.same_fields([&a]));
        assert!(!l.same_fields([&a, &b, &a]));
        let empty = RouteLinks::classify([], &BASE);
        assert!(empty.same_fields([]));
    }

    #[test]
    fn remembers_replaces_and_forgets() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        store.learn("h/".into(), links(&["</a.css>; rel=preload"]));
        assert_eq!(store.get("h/").unwrap().preloads[0].path, "/a.css");
        store.learn("h/".into(), links(&["</b.css>; rel=preload"]));
        assert_eq!(store.get("h/").unwrap().preloads.len(), 1);
        assert_eq!(store.get("h/").unwrap().preloads[0].path, "/b.css");
        store.learn("h/".into(), links(&[]));
        assert!(store.get("h/").is_none());
    }

    #[test]
    fn capacity_evicts_least_recent() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        store.learn("h/1".into(), links(&["</1>; rel=preload"]));
        store.learn("h/2".into(), links(&["</2>; rel=preload"]));
        assert!(store.get("h/1").is_some());
        store.learn("h/3".into(), links(&["</3>; rel=preload"]));
        assert!(store.get("h/2").is_none(), "least recently used is evicted");
        assert!(store.get("h/1").is_some());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn ttl_expires() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_millis(0));
        store.learn("h/".into(), links(&["</a>; rel=preload"]));
        assert!(store.get("h/").is_none());
        assert!(store.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn route_key_lowercases_authority_only() {
        assert_eq!(
            LearnStore::route_key("Example.COM", "/A?b=C"),
            "example.com/A?b=C"
        );
    }
}
