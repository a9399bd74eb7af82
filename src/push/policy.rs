//! What may be pushed or hinted: the pure part of the push decision.
//!
//! This module owns rules 1–2 of SPEC §4 (a link is a preload, and its target is same-origin
//! and clean) and the shape of the Link values linkpush writes into a 103 (SPEC §5). Rules 3–4
//! (the connection's LRU, the per-response budget) and the client's push setting need
//! connection state and are applied by the caller, which also counts `Nopush`,
//! `ClientDisabled` and `Limit` skips and the LRU's `Duplicate`s.
//!
//! Enforced here:
//! - RFC 8288 §3.3: only the first `rel` counts (see [`Link::rel_contains`]).
//! - RFC 8288 §3.2: `anchor` changes the link's context away from this response, so a link
//!   with an `anchor` is not about this page and is ignored (SPEC §4).
//! - RFC 9113 §8.4: only same-origin targets become pushes (see [`target::resolve_same_origin`]).
//! - RFC 8297 §2 and SPEC §5: a 103's Link values carry the target, one `rel` (`preload` or
//!   `preconnect`) and only the attributes browsers act on, so a browser does not drop the hint
//!   over an attribute it does not know (measured with Chromium for `nopush`). `nopush` forbids
//!   only push, so such links are still hinted. Chromium's docs/early-hints.md: "Chrome supports
//!   preload and preconnect in Early Hints", from any origin; `modulepreload`, `prefetch` and
//!   `dns-prefetch` are not handled there, so linkpush does not hint them.
//! - Hints never carry `data:`, `javascript:` or any non-http(s) target, never an `http:`
//!   cross-origin preload (SPEC §5: cross-origin preloads are `https:` only), and never a target
//!   longer than the Link parser's own bound ([`link::MAX_LINK_BYTES`]).

//! - RFC 9110 §5.5: every hint is a valid field value (visible ASCII, SP and HTAB only).

use http::HeaderValue;

use super::link::{self, Link, ParsedLinks};
use super::target::{self, RequestBase, TargetError};

/// Why a preload link was not pushed: the `reason` label of `linkpush_push_skipped_total`
/// and the log field, through [`SkipReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The link carries `nopush` (it is still hinted).
    Nopush,
    /// The target is not this server's origin (RFC 9113 §8.4).
    CrossOrigin,
    /// Already pushed on this connection, or listed twice in this response.
    Duplicate,
    /// The client disabled push (SETTINGS_ENABLE_PUSH = 0), has no room for another stream, or
    /// cannot take the promised request's header list (its SETTINGS_MAX_HEADER_LIST_SIZE).
    ClientDisabled,
    /// `max_pushes_per_response` was reached.
    Limit,
    /// The link-value or its target is malformed or not clean.
    Invalid,
    /// The promised asset's response may not be stored by the client (`no-store`, or a status
    /// that is not cacheable without explicit freshness): reset instead of pushed.
    NotCacheable,
    /// The client's cache digest cookie says it still has a fresh copy (`push.cache_digest`).
    Cached,
}

impl SkipReason {
    pub const ALL: [SkipReason; 8] = [
        SkipReason::Nopush,
        SkipReason::CrossOrigin,
        SkipReason::Duplicate,
        SkipReason::ClientDisabled,
        SkipReason::Limit,
        SkipReason::Invalid,
        SkipReason::NotCacheable,
        SkipReason::Cached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Nopush => "nopush",
            SkipReason::CrossOrigin => "cross_origin",
            SkipReason::Duplicate => "duplicate",
            SkipReason::ClientDisabled => "client_disabled",
            SkipReason::Limit => "limit",
            SkipReason::Invalid => "invalid",
            SkipReason::NotCacheable => "not_cacheable",
            SkipReason::Cached => "cached",
        }
    }
}

/// A same-origin preload link with a clean target: a candidate for push and for a 103.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// The resolved same-origin path-and-query, starting with `/`.
    pub path: String,
    /// Hinted but never pushed (SPEC §5).
    pub nopush: bool,
    /// The clean Link value for a 103, e.g. `</app.css>; rel=preload; as=style; crossorigin`.
    pub hint: HeaderValue,
}

/// The relations a 103 written by linkpush may carry (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintRel {
    Preload,
    Preconnect,
}

impl HintRel {
    pub fn as_str(self) -> &'static str {
        match self {
            HintRel::Preload => "preload",
            HintRel::Preconnect => "preconnect",
        }
    }

    /// The attributes a browser acts on for this relation, in their canonical spelling.
    fn attributes(self) -> &'static [&'static str] {
        match self {
            HintRel::Preload => &HINT_ATTRIBUTES,
            // A preconnect only opens a connection; `crossorigin` picks its credentials mode
            // (HTML's "obtain a connection" keys connections on it).
            HintRel::Preconnect => &["crossorigin"],
        }
    }
}

/// The preload links of one response, sorted into what may be pushed and what was skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Same-origin `rel=preload` links, deduplicated by path (first wins), in order.
    pub preloads: Vec<Preload>,
    /// Every clean 103 value, in link order, deduplicated by [`hint_key`] (first wins): the
    /// hints of `preloads` (sharing their bytes), cross-origin `https:` preloads (absolute URL
    /// target) and `rel=preconnect` links to any http(s) origin (the origin as target).
    pub hints: Vec<HeaderValue>,
    /// One `Invalid` per link-value that did not parse, then, in link order, one `CrossOrigin`
    /// per cross-origin preload, one `Invalid` per preload whose target is unresolvable or not
    /// clean, and one `Duplicate` per preload whose path an earlier preload already has.
    pub skipped: Vec<SkipReason>,
}

/// Attributes a browser acts on in a preload hint (SPEC §5), in their canonical spelling.
const HINT_ATTRIBUTES: [&str; 9] = [
    "as",
    "crossorigin",
    "type",
    "media",
    "fetchpriority",
    "integrity",
    "referrerpolicy",
    "imagesrcset",
    "imagesizes",
];

/// Applies SPEC §4 rules 1–2 to the links of one response, and collects what only a 103 may
/// carry (SPEC §5).
///
/// Links whose first `rel` has neither `preload` nor `preconnect`, and links with an
/// `anchor`, are not about this response's subresources and are ignored without being counted.
pub fn classify(parsed: &ParsedLinks, base: &RequestBase<'_>) -> Classified {
    let mut out = Classified::default();
    // Targets of the hints that are never pushed, to keep each once. Same-origin preloads are
    // kept once by path, and their targets (`/…`) can never equal an absolute URL or origin.
    let mut seen: Vec<(HintRel, String)> = Vec::new();
    out.skipped
        .extend(std::iter::repeat_n(SkipReason::Invalid, parsed.invalid));
    for link in &parsed.links {
        // RFC 8288 §3.2: an anchor moves the link's context elsewhere.
        if link.has_param("anchor") {
            continue;
        }
        // RFC 8288 §3.3: only the first rel counts (`rel_contains`).
        if link.rel_contains("preload") {
            classify_preload(link, base, &mut out, &mut seen);
        } else if link.rel_contains("preconnect")
            && let Some(origin) = target::resolve_origin(&link.target, base)
        {
            out.push_hint_only(link, origin, HintRel::Preconnect, &mut seen);
        }
    }
    out
}

fn classify_preload(
    link: &Link,
    base: &RequestBase<'_>,
    out: &mut Classified,
    seen: &mut Vec<(HintRel, String)>,
) {
    match target::resolve_same_origin(&link.target, base) {
        // The parser's bound holds for what we write too: resolution can lengthen a target.
        Ok(path) if path.len() > link::MAX_LINK_BYTES => out.skipped.push(SkipReason::Invalid),
        Ok(path) => {
            if out.preloads.iter().any(|p| p.path == path) {
                out.skipped.push(SkipReason::Duplicate);
                return;
            }
            let Some(hint) = header_value(hint_value(link, &path, HintRel::Preload)) else {
                out.skipped.push(SkipReason::Invalid);
                return;
            };
            out.hints.push(hint.clone());
            out.preloads.push(Preload {
                hint,
                nopush: link.has_param("nopush"),
                path,
            });
        }
        Err(TargetError::CrossOrigin) => {
            // RFC 9113 §8.4: never pushed; a browser may still fetch it early from a 103, over
            // https only (SPEC §5).
            out.skipped.push(SkipReason::CrossOrigin);
            if let Some(url) =
                target::resolve_absolute(&link.target, base).filter(|u| u.starts_with("https://"))
            {
                out.push_hint_only(link, url, HintRel::Preload, seen);
            }
        }
        Err(TargetError::Invalid) => out.skipped.push(SkipReason::Invalid),
    }
}

impl Classified {
    /// A hint for a link that is never pushed, unless one with the same rel and target is
    /// already there (the same [`hint_key`]).
    fn push_hint_only(
        &mut self,
        link: &Link,
        target: String,
        rel: HintRel,
        seen: &mut Vec<(HintRel, String)>,
    ) {
        if target.len() > link::MAX_LINK_BYTES
            || seen.iter().any(|(r, t)| *r == rel && *t == target)
        {
            return;
        }
        if let Some(hint) = header_value(hint_value(link, &target, rel)) {
            self.hints.push(hint);
            seen.push((rel, target));
        }
    }
}

/// Every hint built by [`hint_value`] is a valid field value (RFC 9110 §5.5); `None` only if
/// that ever stops being true, so a bug drops a hint instead of panicking.
fn header_value(hint: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&hint).ok()
}

/// What a hint announces: its `<target>; rel=…`, without attributes. Two hints with the same
/// key announce the same fetch or connection, so a response's 103s carry each key once.
pub fn hint_key(hint: &[u8]) -> &[u8] {
    // Targets written by `hint_value` never contain `>` (it is percent-encoded), so the first
    // `>` ends the target; the rel token ends at the next `;`.
    let Some(close) = hint.iter().position(|&b| b == b'>') else {
        return hint;
    };
    let rest = &hint[close..];
    let rel_end = rest
        .iter()
        .skip(2)
        .position(|&b| b == b';')
        .map_or(hint.len(), |i| close + 2 + i);
    &hint[..rel_end]
}

/// Builds the clean 103 value from a link, the target string to write and its relation.
///
/// `<target>; rel=…`, then the first occurrence of each attribute a browser acts on for that
/// relation, in the link's order. Never `nopush`, never another `rel`. Bytes of `target` that
/// could not stand inside `<…>` in a field value are percent-encoded; an attribute whose value
/// cannot be written as a token or quoted-string (a control character, non-ASCII) is dropped.
pub fn hint_value(link: &Link, target: &str, rel: HintRel) -> String {
    let mut out = String::with_capacity(target.len() + 48);
    out.push('<');
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'<' && b != b'>';
    if target.bytes().all(plain) {
        // The common case: resolved targets are already clean.
        out.push_str(target);
    } else {
        for b in target.bytes() {
            if plain(b) {
                out.push(char::from(b));
            } else {
                push_percent_encoded(&mut out, b);
            }
        }
    }
    out.push_str(">; rel=");
    out.push_str(rel.as_str());

    let attributes = rel.attributes();
    let mut seen = [false; HINT_ATTRIBUTES.len()];
    for (name, value) in &link.params {
        let Some(i) = attributes.iter().position(|a| a.eq_ignore_ascii_case(name)) else {
            continue;
        };
        // The first occurrence decides, as for rel (RFC 8288 §3.3 and §3.4.1).
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let attribute = attributes[i];
        match value.as_deref() {
            None => {
                out.push_str("; ");
                out.push_str(attribute);
            }
            Some(v) if !v.is_empty() && v.bytes().all(link::is_tchar) => {
                out.push_str("; ");
                out.push_str(attribute);
                out.push('=');
                out.push_str(v);
            }
            // RFC 9110 §5.6.4: qdtext and quoted-pair cover HTAB, SP and VCHAR.
            Some(v) if v.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) => {
                out.push_str("; ");
                out.push_str(attribute);
                out.push_str("=\"");
                for c in v.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Some(_) => {}
        }
    }
    out
}

fn push_percent_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: RequestBase<'static> = RequestBase {
        scheme: "https",
        authority: "example.com",
        path_and_query: "/shop/index.html?x=1",
    };

    fn classify_str(fields: &[&str]) -> Classified {
        classify(
            &link::parse_fields(fields.iter().map(|f| f.as_bytes())),
            &SITE,
        )
    }

    fn paths(c: &Classified) -> Vec<&str> {
        c.preloads.iter().map(|p| p.path.as_str()).collect()
    }

    fn hints(c: &Classified) -> Vec<&str> {
        c.preloads
            .iter()
            .map(|p| p.hint.to_str().unwrap())
            .collect()
    }

    /// Every hint, in order.
    fn all_hints(c: &Classified) -> Vec<&str> {
        c.hints.iter().map(|h| h.to_str().unwrap()).collect()
    }

    #[test]
    fn skip_reason_labels() {
        let labels: Vec<_> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "nopush",
                "cross_origin",
                "duplicate",
                "client_disabled",
                "limit",
                "invalid",
                "not_cacheable",
                "cached"
            ]
        );
    }

    #[test]
    fn typical_page() {
        let c = classify_str(&[
            "</app.css>; rel=preload; as=style, </app.js>; rel=preload; as=script",
            "<fonts/a.woff2>; rel=preload; as=font; type=font/woff2; crossorigin",
        ]);
        assert_eq!(paths(&c), ["/app.css", "/app.js", "/shop/fonts/a.woff2"]);
        assert_eq!(
            hints(&c),
            [
                "</app.css>; rel=preload; as=style",
                "</app.js>; rel=preload; as=script",
                "</shop/fonts/a.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
            ]
        );
        assert!(c.preloads.iter().all(|p| !p.nopush));
        assert!(c.skipped.is_empty());
        assert_eq!(all_hints(&c), hints(&c), "every hint is a preload's");
    }

    #[test]
    fn only_preload_rel_without_anchor_is_considered() {
        let c = classify_str(&[
            "</a>; rel=stylesheet",
            "</b>",
            "</c>; rel=preload; anchor=\"/other\"",
            "</d>; rel=stylesheet; rel=preload",
            "</e>; rel=\"prefetch PreLoad\"",
            "</f>; REL=PRELOAD",
            "</g>; rel",
        ]);
        assert_eq!(paths(&c), ["/e", "/f"]);
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn nopush_is_still_hinted_without_nopush() {
        let c = classify_str(&["</a.css>; rel=preload; nopush; as=style"]);
        assert_eq!(c.preloads.len(), 1);
        assert!(c.preloads[0].nopush);
        assert_eq!(c.preloads[0].hint, "</a.css>; rel=preload; as=style");
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn duplicates_first_wins() {
        let c = classify_str(&[
            "</a.css>; rel=preload; as=style; nopush",
            "<https://example.com/a.css#x>; rel=preload",
            "</x/../a.css>; rel=preload; as=font",
            "</b.css>; rel=preload",
        ]);
        assert_eq!(paths(&c), ["/a.css", "/b.css"]);
        assert!(c.preloads[0].nopush);
        assert_eq!(c.skipped, [SkipReason::Duplicate, SkipReason::Duplicate]);
    }

    #[test]
    fn cross_origin_and_invalid_targets() {
        let c = classify_str(&[
            "<https://cdn.example/lib.js>; rel=preload; as=script; crossorigin=anonymous",
            "<//cdn.example/lib.js>; rel=preload",
            "<https://example.com:8443/x>; rel=preload",
            "<data:text/css,body{}>; rel=preload; as=style",
            "<javascript:alert(1)>; rel=preload",
            "<file:///etc/passwd>; rel=preload",
            "</%2e%2e/secret>; rel=preload",
            "</a%2fb>; rel=preload",
            "<\\\\evil>; rel=preload",
            "</../../etc/passwd>; rel=preload",
            "garbage",
        ]);
        assert_eq!(paths(&c), ["/etc/passwd"]);
        assert_eq!(
            all_hints(&c)[..2],
            [
                "<https://cdn.example/lib.js>; rel=preload; as=script; crossorigin=anonymous",
                "<https://example.com:8443/x>; rel=preload",
            ]
        );
        use SkipReason::{CrossOrigin, Invalid};
        assert_eq!(
            c.skipped,
            [
                Invalid,
                CrossOrigin,
                CrossOrigin,
                CrossOrigin,
                CrossOrigin,
                CrossOrigin,
                CrossOrigin,
                Invalid,
                Invalid,
                Invalid,
            ]
        );
    }

    #[test]
    fn parse_failures_count_as_invalid() {
        let long = format!("</{}>; rel=preload", "a".repeat(9 * 1024));
        let c = classify_str(&[&long, "</ok>; rel=preload", "</unterminated; rel=preload"]);
        assert_eq!(paths(&c), ["/ok"]);
        assert_eq!(c.skipped, [SkipReason::Invalid, SkipReason::Invalid]);
    }

    #[test]
    fn hint_keeps_only_browser_attributes_in_order() {
        let c = classify_str(&[
            "</i.png>; rel=\"preload prefetch\"; nopush; title=x; as=image; AS=script; \
             imagesrcset=\"i.png 1x, i2.png 2x\"; imagesizes=\"50vw\"; media=\"(min-width: 600px)\"; \
             fetchpriority=high; integrity=\"sha384-ab+c/d=\"; referrerpolicy=no-referrer; \
             crossorigin; type=image/png; rel=preload; foo",
        ]);
        assert_eq!(
            c.preloads[0].hint,
            "</i.png>; rel=preload; as=image; imagesrcset=\"i.png 1x, i2.png 2x\"; \
             imagesizes=50vw; media=\"(min-width: 600px)\"; fetchpriority=high; \
             integrity=\"sha384-ab+c/d=\"; referrerpolicy=no-referrer; crossorigin; \
             type=\"image/png\""
        );
    }

    #[test]
    fn hint_quotes_and_escapes_and_drops_unwritable_values() {
        let link = Link {
            target: "/ignored".to_owned(),
            params: vec![
                ("media".to_owned(), Some("a \"b\" \\c".to_owned())),
                ("as".to_owned(), Some(String::new())),
                ("type".to_owned(), Some("caf\u{e9}".to_owned())),
                ("integrity".to_owned(), Some("x\u{1}y".to_owned())),
                ("crossorigin".to_owned(), Some("use-credentials".to_owned())),
            ],
        };
        assert_eq!(
            hint_value(&link, "/a b<c>\u{e9}", HintRel::Preload),
            "</a%20b%3Cc%3E%C3%A9>; rel=preload; media=\"a \\\"b\\\" \\\\c\"; as=\"\"; \
             crossorigin=use-credentials"
        );
    }

    #[test]
    fn hints_are_valid_header_values() {
        let c = classify_str(&[
            "</a>; rel=preload; media=\"\t tab\"; as=\"caf\u{e9}\"",
            "<https://cdn.example/b>; rel=preload; integrity=\"\\\"\"",
        ]);
        for h in all_hints(&c) {
            let v = http::HeaderValue::from_str(h).expect("valid header value");
            assert!(v.to_str().is_ok(), "{h:?}");
        }
    }

    #[test]
    fn preconnects_and_https_cross_origin_preloads_are_hinted_only() {
        let c = classify_str(&[
            "<https://fonts.example/css?x>; rel=preconnect; crossorigin; as=font; nopush",
            "<http://cdn.example>; rel=preconnect",
            "<HTTPS://FONTS.EXAMPLE:443/>; rel=preconnect; crossorigin",
            "<http://cdn.example/a.js>; rel=preload; as=script",
            "<https://cdn.example/a.js>; rel=preload; as=script",
            "<data:text/plain,x>; rel=preconnect",
            "<javascript:alert(1)>; rel=preconnect",
            "<https://user@cdn.example/>; rel=preconnect",
            "</same.js>; rel=modulepreload",
            "</next>; rel=prefetch",
            "<https://cdn.example/b.js>; rel=preload; anchor=\"/x\"",
        ]);
        assert!(c.preloads.is_empty());
        assert_eq!(
            all_hints(&c),
            [
                "<https://fonts.example>; rel=preconnect; crossorigin",
                "<http://cdn.example>; rel=preconnect",
                "<https://cdn.example/a.js>; rel=preload; as=script",
            ]
        );
        // Cross-origin preloads are push skips, hinted or not; preconnects are not preloads.
        assert_eq!(
            c.skipped,
            [SkipReason::CrossOrigin, SkipReason::CrossOrigin]
        );
    }

    #[test]
    fn targets_longer_than_the_parser_bound_are_not_hinted() {
        let base = RequestBase {
            scheme: "https",
            authority: "example.com",
            path_and_query: Box::leak(format!("/{}/", "d".repeat(1500)).into_boxed_str()),
        };
        let long = format!("<{}>; rel=preload", "e".repeat(1000));
        let parsed = link::parse_fields([long.as_bytes(), b"<x>; rel=preload".as_slice()]);
        let c = classify(&parsed, &base);
        assert_eq!(c.preloads.len(), 1, "the short one");
        assert_eq!(c.skipped, [SkipReason::Invalid]);
    }

    #[test]
    fn hint_keys_ignore_attributes() {
        let key = |s: &'static str| hint_key(s.as_bytes());
        assert_eq!(key("</a>; rel=preload; as=style"), b"</a>; rel=preload");
        assert_eq!(key("</a>; rel=preload"), b"</a>; rel=preload");
        assert_ne!(key("</a>; rel=preconnect"), key("</a>; rel=preload"));
        assert_ne!(key("</a;b>; rel=preload"), key("</a>; rel=preload"));
        assert_eq!(key("garbage"), b"garbage");
    }
}
