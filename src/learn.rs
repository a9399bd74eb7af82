//! Learned hints (SPEC §6): route → the preload links its last 2xx GET response carried, in an
//! LRU of `learn.routes` entries shared by all connections, each forgotten after `learn.ttl`.
//!
//! Only links that passed SPEC §4 rules 1–2 (preload, same origin, clean path) are stored, so
//! acting on a learned entry can never reach anything but the upstream.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::push::policy::Preload;

/// The links of one route, shared with every request that acts on them.
pub type Links = Arc<[Preload]>;

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
        let expired = match routes.get(route) {
            None => return None,
            Some(entry) if entry.learned_at.elapsed() < self.ttl => {
                return Some(entry.links.clone());
            }
            Some(_) => true,
        };
        if expired {
            routes.pop(route);
        }
        None
    }

    /// Replaces what is known of the route by the final response's links; a response with
    /// none makes the route forgotten, so links it no longer carries are not acted on again.
    pub fn learn(&self, route: String, links: Vec<Preload>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if links.is_empty() {
            routes.pop(&route);
            return;
        }
        if let Some(entry) = routes.get_mut(&route) {
            if *entry.links == *links {
                entry.learned_at = Instant::now();
                return;
            }
        }
        routes.put(
            route,
            Entry {
                links: links.into(),
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

    fn preload(path: &str) -> Preload {
        Preload {
            path: path.into(),
            nopush: false,
            hint: format!("<{path}>; rel=preload"),
        }
    }

    #[test]
    fn remembers_replaces_and_forgets() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        store.learn("h/".into(), vec![preload("/a.css")]);
        assert_eq!(store.get("h/").unwrap()[0].path, "/a.css");
        store.learn("h/".into(), vec![preload("/b.css")]);
        assert_eq!(store.get("h/").unwrap().len(), 1);
        assert_eq!(store.get("h/").unwrap()[0].path, "/b.css");
        store.learn("h/".into(), vec![]);
        assert!(store.get("h/").is_none());
    }

    #[test]
    fn capacity_evicts_least_recent() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        store.learn("h/1".into(), vec![preload("/1")]);
        store.learn("h/2".into(), vec![preload("/2")]);
        assert!(store.get("h/1").is_some());
        store.learn("h/3".into(), vec![preload("/3")]);
        assert!(store.get("h/2").is_none(), "least recently used is evicted");
        assert!(store.get("h/1").is_some());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn ttl_expires() {
        let store = LearnStore::new(NonZeroUsize::new(2).unwrap(), Duration::from_millis(0));
        store.learn("h/".into(), vec![preload("/a")]);
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
