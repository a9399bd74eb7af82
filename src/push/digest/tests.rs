use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_800_000_000;

fn url(i: u64) -> String {
    format!("https://example.com/static/asset-{i:016x}.js")
}

/// Deterministic pseudo-random u64s (xorshift64*), so a measured rate is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn digest_of(urls: &[String], expires: u64) -> Digest {
    let mut d = Digest::default();
    for u in urls {
        d.insert(Key::of_url(u), expires);
    }
    d
}

#[test]
fn round_trip_keeps_every_key_and_its_expiry() {
    let urls: Vec<String> = (0..5).map(url).collect();
    let mut d = digest_of(&urls[..3], NOW + 3600);
    d.insert(Key::of_url(&urls[3]), NOW + 60);
    d.insert(Key::of_url(&urls[4]), NOW + 86_400);
    let encoded = d.encode(NOW).expect("fresh entries");
    assert_eq!(encoded.max_age, 86_400);
    let back = Digest::decode(&encoded.value, NOW).expect("decodes");
    assert_eq!(back.len(), 5);
    assert_eq!(back.expires(Key::of_url(&urls[0])), Some(NOW + 3600));
    assert_eq!(back.expires(Key::of_url(&urls[3])), Some(NOW + 60));
    assert_eq!(back.expires(Key::of_url(&urls[4])), Some(NOW + 86_400));
    assert!(!back.contains(Key::of_url(&url(99))));
}

#[test]
fn entries_expire_with_the_assets_freshness() {
    let mut d = Digest::default();
    d.insert(Key::of_url("https://a/x.css"), NOW + 60);
    d.insert(Key::of_url("https://a/y.js"), NOW + 600);
    let value = d.encode(NOW).expect("fresh").value;
    let at = |t| Digest::decode(&value, t).expect("decodes");
    assert!(at(NOW + 59).contains(Key::of_url("https://a/x.css")));
    assert!(!at(NOW + 60).contains(Key::of_url("https://a/x.css")));
    assert!(at(NOW + 60).contains(Key::of_url("https://a/y.js")));
    assert!(at(NOW + 600).is_empty());
    // Nothing fresh: no cookie.
    assert_eq!(d.encode(NOW + 600), None);
}

#[test]
fn close_lifetimes_share_a_bucket_stamped_with_the_earliest() {
    let mut d = Digest::default();
    d.insert(Key::of_url("https://a/1"), NOW + 1000);
    d.insert(Key::of_url("https://a/2"), NOW + 900);
    let encoded = d.encode(NOW).expect("fresh");
    let back = Digest::decode(&encoded.value, NOW).expect("decodes");
    assert_eq!(back.expires(Key::of_url("https://a/1")), Some(NOW + 900));
    assert_eq!(encoded.max_age, 900);
}

#[test]
fn the_soonest_to_expire_is_dropped_past_the_bound() {
    let mut d = Digest::default();
    for i in 0..MAX_ENTRIES as u64 {
        d.insert(Key::from_hash(i << 50), NOW + 100 + i);
    }
    assert!(
        !d.insert(Key::from_hash(63 << 58), NOW + 1),
        "sooner than all"
    );
    assert!(d.insert(Key::from_hash(63 << 58), NOW + 10_000));
    assert_eq!(d.len(), MAX_ENTRIES);
    assert!(!d.contains(Key::from_hash(0)), "the soonest went");
}

#[test]
fn set_cookie_attributes() {
    let encoded = Encoded {
        value: "AQ".to_owned(),
        max_age: 3600,
    };
    assert_eq!(
        set_cookie(&encoded, true),
        "lp_digest=AQ; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure"
    );
    assert_eq!(
        set_cookie(&encoded, false),
        "lp_digest=AQ; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax"
    );
}

#[test]
fn finds_the_cookie_among_others() {
    let fields: [&[u8]; 2] = [b"a=1; b=2", b"x=y;  lp_digest=\"AbC\" ; lp_digest=zz"];
    assert_eq!(find_cookie(fields), Some("AbC"));
    let none: [&[u8]; 1] = [b"lp_digestx=1; lp=2; =; ;"];
    assert_eq!(find_cookie(none), None);
}

#[test]
fn freshness_from_cache_control_and_age() {
    let f = |cc: &[&str], age: Option<&str>| {
        remaining_freshness(cc.iter().map(|s| s.as_bytes()), age.map(str::as_bytes))
    };
    assert_eq!(f(&["public, max-age=3600"], None), Some(3600));
    assert_eq!(f(&["max-age=\"60\""], None), Some(60));
    assert_eq!(f(&["MAX-AGE=60, immutable"], Some("10")), Some(50));
    assert_eq!(f(&["max-age=60"], Some("60")), None, "already stale");
    assert_eq!(f(&["max-age=60, no-store"], None), None);
    assert_eq!(f(&["no-cache=\"set-cookie, x\", max-age=60"], None), None);
    assert_eq!(f(&["private, max-age=60"], None), Some(60));
    assert_eq!(f(&["s-maxage=60"], None), None, "shared caches only");
    assert_eq!(f(&["max-age=60", "max-age=120"], None), None, "conflict");
    assert_eq!(f(&["max-age=-1"], None), None);
    assert_eq!(f(&["max-age=60"], Some("x")), None);
    assert_eq!(f(&[], None), None);
    assert_eq!(
        f(&["max-age=99999999999999999999999"], None),
        Some(MAX_LIFETIME)
    );
}

#[test]
fn hostile_values_are_errors() {
    let cases: &[(&str, DigestError)] = &[
        ("", DigestError::Truncated),
        ("!!", DigestError::Base64),
        ("AQ==", DigestError::Base64),
        ("Ag", DigestError::Version(2)),
        ("AQ", DigestError::Truncated),
    ];
    for (value, err) in cases {
        assert_eq!(Digest::decode(value, NOW).as_ref(), Err(err), "{value:?}");
    }
    assert_eq!(
        Digest::decode(&"A".repeat(MAX_VALUE_LEN + 1), NOW),
        Err(DigestError::TooLong)
    );
    let mut d = Digest::default();
    d.insert(Key::of_url("https://a/"), NOW + 10_000);
    let value = d.encode(NOW + MAX_SKEW + 1).expect("fresh").value;
    assert_eq!(Digest::decode(&value, NOW), Err(DigestError::FromFuture));
    // A unary run that would leave the key domain.
    let mut bytes = vec![VERSION, 0, 0, 0, 0, 1, 10, 1];
    bytes.extend([0u8; 8]);
    let value = URL_SAFE_NO_PAD.encode(&bytes);
    assert_eq!(Digest::decode(&value, NOW), Err(DigestError::OutOfRange));
}

/// The figure for the report: the false-positive rate of a full digest, measured over 100 000
/// URLs that are not in it. Expected `MAX_ENTRIES / 2^KEY_BITS` = 0.39 %.
#[test]
fn false_positive_rate_at_full_size() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let stored: Vec<String> = (0..MAX_ENTRIES).map(|_| url(rng.next())).collect();
    let d = digest_of(&stored, NOW + 3600);
    let encoded = d.encode(NOW).expect("fresh");
    let back = Digest::decode(&encoded.value, NOW).expect("decodes");
    assert!(stored.iter().all(|u| back.contains(Key::of_url(u))));
    const PROBES: usize = 100_000;
    let hits = (0..PROBES)
        .filter(|_| back.contains(Key::of_url(&url(rng.next()))))
        .count();
    let rate = hits as f64 / PROBES as f64;
    let small = digest_of(&stored[..5], NOW + 3600)
        .encode(NOW)
        .expect("fresh");
    println!(
        "cache digest: {} entries -> {}-char value, false positives {hits}/{PROBES} = {:.3}% \
         (expected {:.3}%); 5 entries -> {}-char value",
        MAX_ENTRIES,
        encoded.value.len(),
        rate * 100.0,
        MAX_ENTRIES as f64 / f64::from(DOMAIN) * 100.0,
        small.value.len(),
    );
    assert!(rate < 0.01, "false-positive rate {rate}");
    assert!(hits > 0, "a 14-bit digest cannot be exact over 100k probes");
}

proptest! {
    #[test]
    fn no_false_negatives(
        ids in proptest::collection::vec(any::<u64>(), 1..MAX_ENTRIES),
        lifetimes in proptest::collection::vec(1..MAX_LIFETIME, 1..MAX_ENTRIES),
    ) {
        let mut d = Digest::default();
        for (i, id) in ids.iter().enumerate() {
            d.insert(Key::of_url(&url(*id)), NOW + lifetimes[i % lifetimes.len()]);
        }
        let encoded = d.encode(NOW).expect("fresh");
        let back = Digest::decode(&encoded.value, NOW).expect("decodes");
        for id in &ids {
            let key = Key::of_url(&url(*id));
            prop_assert!(back.contains(key));
            // Never claimed longer than recorded.
            prop_assert!(back.expires(key) <= d.expires(key));
        }
        prop_assert_eq!(back.len(), d.len());
    }

    #[test]
    fn any_digest_is_bounded_and_round_trips(
        entries in proptest::collection::vec((any::<u64>(), 0..2 * MAX_LIFETIME), 0..200),
    ) {
        let mut d = Digest::default();
        for (hash, lifetime) in &entries {
            d.insert(Key::from_hash(*hash), NOW + lifetime);
        }
        prop_assert!(d.len() <= MAX_ENTRIES);
        if let Some(encoded) = d.encode(NOW) {
            prop_assert!(encoded.value.len() <= MAX_VALUE_LEN, "{}", encoded.value.len());
            prop_assert!(encoded.max_age >= 1 && encoded.max_age <= MAX_LIFETIME);
            let back = Digest::decode(&encoded.value, NOW).expect("decodes");
            let live = d.entries.iter().filter(|(_, e)| *e > NOW).count();
            prop_assert_eq!(back.len(), live);
            // Re-encoding what was decoded keeps every key and never lengthens a claim.
            let again = back.encode(NOW).expect("fresh");
            let again = Digest::decode(&again.value, NOW).expect("decodes");
            prop_assert_eq!(again.len(), back.len());
            for (key, expires) in &back.entries {
                prop_assert!(again.expires(*key).is_some_and(|e| e <= *expires));
            }
        } else {
            prop_assert!(d.is_empty() || entries.iter().all(|(_, l)| *l == 0));
        }
    }

    /// Keys spread as far apart as possible make the longest Golomb codes.
    #[test]
    fn adversarial_spacing_stays_bounded(n in 1usize..=MAX_ENTRIES, buckets in 1usize..=MAX_BUCKETS) {
        let mut d = Digest::default();
        for i in 0..n {
            let key = (i as u64 * u64::from(DOMAIN) / n as u64) << (64 - KEY_BITS);
            // Lifetimes far apart, so the entries spread over `buckets` buckets.
            let lifetime = 1u64 << (4 * (i % buckets) + 1);
            d.insert(Key::from_hash(key | 0xffff), NOW + lifetime);
        }
        let encoded = d.encode(NOW).expect("fresh");
        prop_assert!(encoded.value.len() <= MAX_VALUE_LEN, "{}", encoded.value.len());
    }

    #[test]
    fn hostile_base64_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), now in any::<u64>()) {
        let _ = Digest::decode(&URL_SAFE_NO_PAD.encode(&bytes), now);
        let mut framed = vec![VERSION, 0x6b, 0x49, 0xd2, 0x00];
        framed.extend(&bytes);
        let _ = Digest::decode(&URL_SAFE_NO_PAD.encode(&framed), NOW);
    }

    #[test]
    fn hostile_text_never_panics(text in "\\PC{0,300}", now in any::<u64>()) {
        let _ = Digest::decode(&text, now);
        let _ = find_cookie([text.as_bytes()]);
        let _ = remaining_freshness([text.as_bytes()], Some(text.as_bytes()));
    }
}
