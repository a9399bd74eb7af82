//! The state around the cache digest cookie (`push.cache_digest`, SPEC §4 rule 3; the format is
//! in `push::digest`): the clock it counts in, the process-wide memo of pushed assets'
//! freshness, what one connection promised, and the `Set-Cookie` a page response carries.
//!
//! Why the page's cookie is built from a memo: the `Set-Cookie` rides on the page's HEADERS,
//! which go out right after its PUSH_PROMISEs and before the pushed assets are fetched (SPEC §4:
//! the response is never held back for them). So an entry's lifetime is the remaining
//! freshness the most recent fetch of the same URL reported, by any connection
//! ([`Freshness`]), counted from the moment the URL was promised on this connection: that is
//! before the client received it, so a claim ends no later than the client's copy goes stale.
//! A URL this process never fetched has no known lifetime: it is left out and recorded by the
//! next page on the connection that carries pushes. Learned pushes are promised before the
//! upstream request is even sent, so on a page that makes the backend think, their fetches
//! have usually told their lifetime before the page's HEADERS go out.
//!
//! What is recorded is what was promised, not what the client kept: a client that reset a
//! promise (it had the asset) or a push that failed upstream still gets an entry. The cost of
//! being wrong is one push not made, and the client fetches the asset itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use lru::LruCache;

use crate::push::digest::{self, Digest, Key};

/// URLs whose freshness is remembered, process-wide (about 40 bytes each).
const MEMO_CAPACITY: usize = 4096;

/// Wall-clock Unix seconds, the digest's time base (the cookie outlives the process, so a
/// monotonic clock would not do). Tests move it forward instead of sleeping.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicU64,
}

impl Clock {
    pub fn now(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        system.saturating_add(self.offset.load(Ordering::Relaxed))
    }

    /// Moves this clock forward by `by` (whole seconds).
    pub fn advance(&self, by: Duration) {
        self.offset.fetch_add(by.as_secs(), Ordering::Relaxed);
    }
}

/// Pushed assets' remaining freshness, by URL hash, as their most recent fetch reported it.
pub struct Freshness {
    pub clock: Clock,
    lifetimes: Mutex<LruCache<u64, u64>>,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            clock: Clock::default(),
            lifetimes: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(MEMO_CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }
}

impl Freshness {
    /// What a pushed asset's response said about its freshness; `None` (no `max-age`,
    /// `no-store`, …) forgets what an earlier fetch said.
    pub fn record(&self, url_hash: u64, headers: &http::HeaderMap) {
        let lifetime = digest::remaining_freshness(
            headers
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .map(HeaderValue::as_bytes),
            headers.get(http::header::AGE).map(HeaderValue::as_bytes),
        );
        let mut memo = self.lifetimes.lock().unwrap_or_else(|p| p.into_inner());
        match lifetime {
            Some(l) => {
                memo.put(url_hash, l);
            }
            None => {
                memo.pop(&url_hash);
            }
        }
    }

    fn lifetime(&self, url_hash: u64) -> Option<u64> {
        let memo = self.lifetimes.lock().unwrap_or_else(|p| p.into_inner());
        memo.peek(&url_hash).copied()
    }
}

/// The client's digest cookie among the request's `Cookie` fields, decoded. A cookie that does
/// not decode is as good as none: it could only ever remove pushes for this client.
pub fn incoming(headers: &http::HeaderMap, clock: &Clock) -> Option<Digest> {
    let value = digest::find_cookie(
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    )?;
    Digest::decode(value, clock.now())
        .inspect_err(|err| tracing::debug!(error = %err, "cache digest cookie ignored"))
        .ok()
}

/// What one connection promised: origin (`scheme://authority`), URL hash, and when.
#[derive(Default)]
pub struct ConnPushes {
    promised: Mutex<Vec<(String, u64, u64)>>,
}

impl ConnPushes {
    pub fn promised(&self, origin: &str, url_hash: u64, at: u64) {
        let mut promised = self.promised.lock().unwrap_or_else(|p| p.into_inner());
        promised.retain(|(_, h, _)| *h != url_hash);
        // As many as a cookie can hold; the oldest promise goes first.
        if promised.len() >= digest::MAX_ENTRIES {
            promised.remove(0);
        }
        promised.push((origin.to_owned(), url_hash, at));
    }

    /// The `Set-Cookie` for a response on `origin` whose links were considered for push: the
    /// client's still-fresh entries plus what this connection promised on the origin with a
    /// known lifetime. `None` when that adds nothing to what the client sent.
    pub fn cookie(
        &self,
        freshness: &Freshness,
        origin: &str,
        incoming: Option<&Digest>,
        secure: bool,
    ) -> Option<HeaderValue> {
        let now = freshness.clock.now();
        let mut digest = incoming.cloned().unwrap_or_default();
        let mut changed = false;
        let promised = self.promised.lock().unwrap_or_else(|p| p.into_inner());
        for (_, url_hash, at) in promised.iter().filter(|(o, _, _)| o == origin) {
            let Some(lifetime) = freshness.lifetime(*url_hash) else {
                continue;
            };
            let expires = at.saturating_add(lifetime);
            if expires > now {
                changed |= digest.insert(Key::from_hash(*url_hash), expires);
            }
        }
        drop(promised);
        if !changed {
            return None;
        }
        let encoded = digest.encode(now)?;
        HeaderValue::from_str(&digest::set_cookie(&encoded, secure)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(cache_control).expect("valid"),
        );
        h
    }

    #[test]
    fn cookie_holds_promised_urls_with_a_known_lifetime_until_they_expire() {
        let freshness = Freshness::default();
        let conn = ConnPushes::default();
        let (css, js, other) = (
            digest::url_hash("https://a/app.css"),
            digest::url_hash("https://a/app.js"),
            digest::url_hash("https://b/x.js"),
        );
        let now = freshness.clock.now();
        conn.promised("https://a", css, now);
        conn.promised("https://a", js, now);
        conn.promised("https://b", other, now);
        // Nothing fetched yet: no lifetime known, no cookie.
        assert_eq!(conn.cookie(&freshness, "https://a", None, true), None);
        freshness.record(css, &headers("max-age=60"));
        freshness.record(js, &headers("no-store"));
        freshness.record(other, &headers("max-age=60"));
        let cookie = conn
            .cookie(&freshness, "https://a", None, true)
            .expect("css is known");
        let cookie = cookie.to_str().expect("ascii");
        assert!(cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"));
        let value = digest::find_cookie([cookie.split(';').next().unwrap_or("").as_bytes()])
            .expect("named");
        let sent = Digest::decode(value, now).expect("decodes");
        assert_eq!(
            sent.len(),
            1,
            "css only: js is no-store, x.js another origin"
        );
        assert!(sent.contains(Key::from_hash(css)));
        // The client sends it back: nothing new, no cookie.
        assert_eq!(
            conn.cookie(&freshness, "https://a", Some(&sent), true),
            None
        );
        freshness.clock.advance(Duration::from_secs(60));
        assert_eq!(conn.cookie(&freshness, "https://a", None, true), None);
    }
}
