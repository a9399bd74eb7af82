//! Fuzz the Link parser and the push/hint classification with arbitrary response headers.
//!
//! The input is split on `\n` into Link field values. Invariants: no panic, at most MAX_LINKS
//! links examined, every preload path is clean and absolute, every hint is a valid field value.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use linkpush::push::link::{self, MAX_LINK_BYTES, MAX_LINKS};
use linkpush::push::policy;
use linkpush::push::target::{self, RequestBase};

const BASES: [RequestBase<'static>; 2] = [
    RequestBase {
        scheme: "https",
        authority: "example.com",
        path_and_query: "/shop/cart/index.html?x=1",
    },
    RequestBase {
        scheme: "http",
        authority: "[2001:db8::1]:8080",
        path_and_query: "/a;p?q",
    },
];

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

fn assert_hint(hint: &str) {
    let value = HeaderValue::from_str(hint);
    assert!(
        value.as_ref().is_ok_and(|v| v.to_str().is_ok()),
        "hint is not a valid header value: {hint:?}"
    );
    assert!(!hint.contains("nopush"), "{hint:?}");
}

fuzz_target!(|data: &[u8]| {
    let parsed = link::parse_fields(data.split(|&b| b == b'\n'));
    assert!(parsed.links.len() + parsed.invalid <= MAX_LINKS);
    for l in &parsed.links {
        assert!(l.target.len() <= MAX_LINK_BYTES);
    }

    for base in &BASES {
        let classified = policy::classify(&parsed, base);
        for p in &classified.preloads {
            let path = p.path.split('?').next().unwrap_or_default();
            assert!(p.path.starts_with('/') && !p.path.starts_with("//"), "{p:?}");
            assert!(!path.split('/').any(is_dot_segment), "{p:?}");
            assert!(!p.path.contains('#') && !p.path.contains('\\'), "{p:?}");
            assert!(!path.to_ascii_lowercase().contains("%2f"), "{p:?}");
            assert_eq!(
                target::resolve_same_origin(&p.path, base).as_deref(),
                Ok(p.path.as_str()),
                "not idempotent"
            );
            assert_hint(&p.hint);
        }
        for h in &classified.foreign_hints {
            assert!(h.starts_with("<http://") || h.starts_with("<https://"), "{h:?}");
            assert_hint(h);
        }
    }
});
