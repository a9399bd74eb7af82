//! The cache digest cookie (`push.cache_digest`, SPEC §4 rule 3): what a client was pushed and
//! until when it may still have it, so that a new connection does not push it again.
//!
//! Pure: hashing, encoding, decoding, and reading an asset's remaining freshness from its
//! response headers. No I/O and no clock: callers pass `now` in Unix seconds.
//!
//! The anchor is h2o's CASPer (lib/http2/casper.c): a Golomb-coded set of path hashes in a
//! cookie. What this format adds:
//! - Every entry expires. It is recorded only with the asset's remaining freshness lifetime
//!   (`max-age` minus `Age`, RFC 9111 §4.2), and a decoded entry past its expiry is dropped, so a
//!   stale asset is pushed again. CASPer's cookie says "cached" until 2030 for everything.
//! - The key is the whole URL (scheme, authority, path and query), and the false-positive rate
//!   is fixed by the format rather than configured: 64 entries at most, 14-bit keys.
//!
//! ## Format, version 1
//!
//! Cookie `lp_digest=<value>`, `<value>` the unpadded base64url (RFC 4648 §5) of:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` |
//! | 4 | `t0`: when the cookie was written, Unix seconds, big-endian |
//! | 1 | `B`: number of expiry buckets, 1 to [`MAX_BUCKETS`] |
//! | per bucket | LEB128 `lifetime` (seconds after `t0`, 1 to [`MAX_LIFETIME`]); one byte `n` (1 to [`MAX_ENTRIES`]); the bucket's `n` keys as a Golomb-Rice coded set, bits most significant first, padded with zero bits to a byte |
//!
//! Nothing follows the last bucket. A key is the top [`KEY_BITS`] bits of the first 8 bytes of
//! SHA-256 of the URL (big-endian), so keys lie in `[0, D)`, `D = 2^14`. A bucket's keys are
//! sorted and distinct; each is written as its gap from the previous key plus one (the first
//! from 0), with Rice parameter `r = floor(log2(D / n))`: the gap's quotient `gap >> r` in unary
//! (that many 0 bits, then a 1), then its low `r` bits. Every entry of a bucket expires at
//! `t0 + lifetime`.
//!
//! ## Size and false positives
//!
//! At most [`MAX_ENTRIES`] (64) entries in [`MAX_BUCKETS`] (8) buckets: entries whose remaining
//! lifetimes are within 1/8 of each other share a bucket stamped with the earliest of them (so a
//! claim is never longer than the asset's freshness, and at most 1/8 shorter); when more
//! buckets would be needed, the closest neighbours merge the same way. A full digest
//! costs about `log2(D/n) + 2` bits an entry: 5 entries make a 24-character value, 64 entries
//! about 115 characters.
//! Any value is at most [`MAX_VALUE_LEN`] characters (a proptest pins it). A URL that is not in
//! the digest is reported as cached with probability `n / D`: 0.39 % when full (0.37 % measured
//! over 100 000 URLs by the `false_positive_rate_at_full_size` test), 0.03 % for 5 entries. A false
//! positive costs one push (the client fetches the asset itself); there are no false negatives.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The cookie's name.
pub const COOKIE_NAME: &str = "lp_digest";
/// The format version written and accepted.
pub const VERSION: u8 = 1;
/// Bits of a key: keys lie in `[0, 2^KEY_BITS)`.
pub const KEY_BITS: u32 = 14;
/// Entries kept; beyond this the soonest to expire are dropped.
pub const MAX_ENTRIES: usize = 64;
/// Expiry buckets in one cookie.
pub const MAX_BUCKETS: usize = 8;
/// The longest claim, one year: a longer `max-age` is recorded as one year (browsers cap a
/// cookie's lifetime at 400 days anyway).
pub const MAX_LIFETIME: u64 = 365 * 24 * 3600;
/// The longest value written; a longer one is not decoded.
pub const MAX_VALUE_LEN: usize = 256;
/// How far in the future a cookie's `t0` may be (clock skew between proxies) before the cookie
/// is taken for one this server never wrote.
pub const MAX_SKEW: u64 = 300;

const DOMAIN: u32 = 1 << KEY_BITS;
/// Entries within 1/BUCKET_TOLERANCE of the longest lifetime of a bucket share it.
const BUCKET_TOLERANCE: u64 = 8;

/// A URL's 64-bit hash: the first 8 bytes of its SHA-256, big-endian. Stable across processes
/// and versions, because the cookie outlives both.
pub fn url_hash(url: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// A URL's key in the digest: the top [`KEY_BITS`] bits of its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(u16);

impl Key {
    pub fn from_hash(hash: u64) -> Key {
        // Fits: 64 - KEY_BITS leaves KEY_BITS bits.
        Key((hash >> (64 - KEY_BITS)) as u16)
    }

    pub fn of_url(url: &str) -> Key {
        Key::from_hash(url_hash(url))
    }
}

/// What a client may still have cached: keys with the Unix second at which each expires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    /// Distinct keys, at most [`MAX_ENTRIES`].
    entries: Vec<(Key, u64)>,
}

/// Why a cookie value was not understood. The cookie comes from the client: its only effect
/// is that the client gets pushes as if it had sent none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("longer than {MAX_VALUE_LEN} characters")]
    TooLong,
    #[error("not unpadded base64url")]
    Base64,
    #[error("unknown version {0}")]
    Version(u8),
    #[error("truncated")]
    Truncated,
    #[error("a count, lifetime or key out of range")]
    OutOfRange,
    #[error("written in the future")]
    FromFuture,
    #[error("bytes after the last bucket")]
    Trailing,
}

/// An encoded digest, ready for a `Set-Cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub value: String,
    /// Seconds until the longest-lived entry expires: the cookie's `Max-Age`.
    pub max_age: u64,
}

impl Digest {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the client may still have the URL with this key (entries are dropped on decode
    /// once expired, and [`Digest::encode`] drops them at its `now`).
    pub fn contains(&self, key: Key) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// When the entry for `key` expires, if there is one.
    pub fn expires(&self, key: Key) -> Option<u64> {
        self.entries
            .iter()
            .find_map(|(k, e)| (*k == key).then_some(*e))
    }

    /// Records that the client may have `key` until `expires`. Returns whether this changed the
    /// digest (a new key, or a later expiry). Past [`MAX_ENTRIES`], the entry that expires
    /// soonest is dropped: it is the least worth remembering.
    pub fn insert(&mut self, key: Key, expires: u64) -> bool {
        if let Some(entry) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            if expires > entry.1 {
                entry.1 = expires;
                return true;
            }
            return false;
        }
        self.entries.push((key, expires));
        if self.entries.len() > MAX_ENTRIES
            && let Some(soonest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].1)
        {
            self.entries.swap_remove(soonest);
            return self.contains(key);
        }
        true
    }

    /// The cookie value at `now`, or `None` when nothing is still fresh.
    pub fn encode(&self, now: u64) -> Option<Encoded> {
        let buckets = buckets(&self.entries, now);
        let max_age = buckets.first()?.lifetime;
        // `now` past 2106 would not fit the 4-byte t0; write nothing rather than a wrong time.
        let t0 = u32::try_from(now).ok()?;
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.extend_from_slice(&t0.to_be_bytes());
        // At most MAX_BUCKETS (8).
        out.push(buckets.len() as u8);
        for bucket in &buckets {
            leb128(&mut out, bucket.lifetime);
            // At most MAX_ENTRIES (64).
            out.push(bucket.keys.len() as u8);
            let mut bits = BitWriter::new(&mut out);
            let r = rice_parameter(bucket.keys.len());
            let mut next_min = 0u32;
            for key in &bucket.keys {
                let gap = u32::from(key.0) - next_min;
                for _ in 0..(gap >> r) {
                    bits.push(false);
                }
                bits.push(true);
                for i in (0..r).rev() {
                    bits.push((gap >> i) & 1 == 1);
                }
                next_min = u32::from(key.0) + 1;
            }
            bits.finish();
        }
        Some(Encoded {
            value: URL_SAFE_NO_PAD.encode(&out),
            max_age,
        })
    }

    /// Decodes a cookie value, keeping only the entries still fresh at `now`.
    pub fn decode(value: &str, now: u64) -> Result<Digest, DigestError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(DigestError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| DigestError::Base64)?;
        let mut input = Reader {
            bytes: &bytes,
            pos: 0,
        };
        let version = input.byte()?;
        if version != VERSION {
            return Err(DigestError::Version(version));
        }
        let mut t0 = [0u8; 4];
        for b in &mut t0 {
            *b = input.byte()?;
        }
        let t0 = u64::from(u32::from_be_bytes(t0));
        if t0 > now.saturating_add(MAX_SKEW) {
            return Err(DigestError::FromFuture);
        }
        let bucket_count = usize::from(input.byte()?);
        if bucket_count == 0 || bucket_count > MAX_BUCKETS {
            return Err(DigestError::OutOfRange);
        }
        let mut digest = Digest::default();
        let mut total = 0usize;
        for _ in 0..bucket_count {
            let lifetime = input.leb128()?;
            if lifetime == 0 || lifetime > MAX_LIFETIME {
                return Err(DigestError::OutOfRange);
            }
            let n = usize::from(input.byte()?);
            total += n;
            if n == 0 || total > MAX_ENTRIES {
                return Err(DigestError::OutOfRange);
            }
            let expires = t0 + lifetime;
            let r = rice_parameter(n);
            let mut bits = BitReader::new(&mut input);
            let mut next_min = 0u32;
            for _ in 0..n {
                // The unary quotient can never exceed what keeps the key under D: this bounds
                // the loop whatever the bytes say.
                let mut quotient = 0u32;
                while !bits.next()? {
                    quotient += 1;
                    if quotient > (DOMAIN >> r) {
                        return Err(DigestError::OutOfRange);
                    }
                }
                let mut low = 0u32;
                for _ in 0..r {
                    low = (low << 1) | u32::from(bits.next()?);
                }
                let key = next_min + ((quotient << r) | low);
                if key >= DOMAIN {
                    return Err(DigestError::OutOfRange);
                }
                if expires > now {
                    // Below D = 2^14: fits in u16.
                    digest.insert(Key(key as u16), expires);
                }
                next_min = key + 1;
            }
        }
        if input.pos != bytes.len() {
            return Err(DigestError::Trailing);
        }
        Ok(digest)
    }
}

/// The value of the digest cookie among a request's `Cookie` fields (RFC 6265 §4.2.1: `name=value`
/// pairs separated by `; `; HTTP/2 may split them over several fields, RFC 9113 §8.2.3). The
/// first one wins, as in a browser's cookie order the longest path comes first.
pub fn find_cookie<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> Option<&'a str> {
    fields
        .into_iter()
        .filter_map(|field| std::str::from_utf8(field).ok())
        .flat_map(|field| field.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| {
                let value = value.trim();
                // RFC 6265 §4.1.1: a cookie-value may be wrapped in DQUOTEs.
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
        })
}

/// The `Set-Cookie` value for an encoded digest.
///
/// `HttpOnly` (no script needs it), `SameSite=Lax` (sent on top-level navigations to this site,
/// which are the requests that carry pushes), `Path=/` (every page of the origin), no `Domain`
/// (host-only: first-party), and `Max-Age` the longest remaining entry, so the cookie goes away
/// with its last entry. `Secure` whenever the connection is TLS; over h2c it is left off,
/// because a client must ignore a `Secure` cookie set over a non-secure scheme (RFC 6265bis
/// §5.7), which would turn the feature off for cleartext clients, and the cookie only names
/// hashes of this site's own asset URLs, which the cleartext page already shows.
pub fn set_cookie(encoded: &Encoded, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{}",
        encoded.value,
        encoded.max_age,
        if secure { "; Secure" } else { "" }
    )
}

/// How many more seconds the client may use a response without revalidating it (RFC 9111
/// §4.2: freshness lifetime minus current age), or `None` when it must not be recorded.
///
/// Only `max-age` counts (the private cache of a client ignores `s-maxage`, RFC 9111
/// §5.2.2.10; `Expires` would need the client's clock). Not recorded: `no-store` (nothing is
/// stored), `no-cache` (every use is revalidated: pushing it again saves that round trip),
/// several `max-age` directives (RFC 9111 §4.2.1 lets a cache treat the response as stale), a
/// malformed `max-age` or `Age`, and a lifetime already spent.
pub fn remaining_freshness<'a>(
    cache_control: impl IntoIterator<Item = &'a [u8]>,
    age: Option<&[u8]>,
) -> Option<u64> {
    let mut max_age = None;
    for field in cache_control {
        let field = std::str::from_utf8(field).ok()?;
        for directive in split_directives(field) {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                if max_age.is_some() {
                    return None;
                }
                let value = value?;
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                max_age = Some(delta_seconds(value)?);
            }
        }
    }
    let age = match age {
        Some(a) => delta_seconds(std::str::from_utf8(a).ok()?.trim())?,
        None => 0,
    };
    let remaining = max_age?.saturating_sub(age).min(MAX_LIFETIME);
    (remaining > 0).then_some(remaining)
}

/// RFC 9111 §1.2.2: a non-negative integer of seconds; a value too large for the recipient is
/// taken as 2^31.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(1 << 31).min(1 << 31))
}

/// Splits a Cache-Control field on commas outside quoted strings (a `no-cache="a, b"` value
/// holds commas).
fn split_directives(field: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    field
        .split(move |c: char| {
            if escaped {
                escaped = false;
            } else if quoted && c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = !quoted;
            } else if c == ',' && !quoted {
                return true;
            }
            false
        })
        .filter(|d| !d.trim().is_empty())
}

struct Bucket {
    lifetime: u64,
    keys: Vec<Key>,
}

/// Groups the entries still fresh at `now` into at most [`MAX_BUCKETS`] buckets, longest
/// lifetime first, each stamped with its shortest member's lifetime (a claim is never longer
/// than the entry's own). Keys sorted within each bucket.
fn buckets(entries: &[(Key, u64)], now: u64) -> Vec<Bucket> {
    let mut live: Vec<(u64, Key)> = entries
        .iter()
        .filter(|(_, expires)| *expires > now)
        .map(|(key, expires)| ((expires - now).min(MAX_LIFETIME), *key))
        .collect();
    live.sort_unstable_by(|a, b| b.cmp(a));
    // (longest lifetime in the bucket, bucket)
    let mut out: Vec<(u64, Bucket)> = Vec::new();
    for (lifetime, key) in live {
        match out.last_mut() {
            Some((top, bucket)) if lifetime >= *top - *top / BUCKET_TOLERANCE => {
                bucket.lifetime = lifetime;
                bucket.keys.push(key);
            }
            _ => out.push((
                lifetime,
                Bucket {
                    lifetime,
                    keys: vec![key],
                },
            )),
        }
    }
    while out.len() > MAX_BUCKETS {
        // Merge the neighbours that lose the least: the highest ratio of the next bucket's
        // stamp to this bucket's top lifetime (compared by cross-multiplication).
        let Some(i) = (0..out.len() - 1).max_by(|&a, &b| {
            let ra = u128::from(out[a + 1].1.lifetime) * u128::from(out[b].0);
            let rb = u128::from(out[b + 1].1.lifetime) * u128::from(out[a].0);
            ra.cmp(&rb)
        }) else {
            break;
        };
        let (_, next) = out.remove(i + 1);
        out[i].1.lifetime = next.lifetime;
        out[i].1.keys.extend(next.keys);
    }
    out.into_iter()
        .map(|(_, mut bucket)| {
            bucket.keys.sort_unstable();
            bucket
        })
        .collect()
}

/// The Rice parameter for `n` keys spread over D: `floor(log2(D / n))`, the mean gap's size.
fn rice_parameter(n: usize) -> u32 {
    let mean_gap = (DOMAIN as usize / n.max(1)).max(1);
    mean_gap.ilog2()
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DigestError> {
        let b = *self.bytes.get(self.pos).ok_or(DigestError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// At most 4 bytes: every valid lifetime is below 2^28.
    fn leb128(&mut self) -> Result<u64, DigestError> {
        let mut value = 0u64;
        for shift in (0..28).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DigestError::OutOfRange)
    }
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    current: u8,
    used: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            current: 0,
            used: 0,
        }
    }

    fn push(&mut self, bit: bool) {
        self.current |= u8::from(bit) << (7 - self.used);
        self.used += 1;
        if self.used == 8 {
            self.out.push(self.current);
            self.current = 0;
            self.used = 0;
        }
    }

    /// Pads the last byte with zero bits.
    fn finish(self) {
        if self.used > 0 {
            self.out.push(self.current);
        }
    }
}

/// Reads bits from a [`Reader`]; the partly read byte is consumed whole (padding).
struct BitReader<'r, 'a> {
    input: &'r mut Reader<'a>,
    current: u8,
    left: u32,
}

impl<'r, 'a> BitReader<'r, 'a> {
    fn new(input: &'r mut Reader<'a>) -> Self {
        BitReader {
            input,
            current: 0,
            left: 0,
        }
    }

    fn next(&mut self) -> Result<bool, DigestError> {
        if self.left == 0 {
            self.current = self.input.byte()?;
            self.left = 8;
        }
        self.left -= 1;
        Ok((self.current >> self.left) & 1 == 1)
    }
}

#[cfg(test)]
mod tests;
