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
//! - RFC 8297 §2 and SPEC §5: a 103's Link values carry the target, `rel=preload` and only the
//!   attributes browsers act on, so a browser does not drop the hint over an attribute it does
//!   not know (measured with Chromium for `nopush`). `nopush` forbids only push, so such links
//!   are still hinted.
//! - RFC 9110 §5.5: every hint is a valid field value (visible ASCII, SP and HTAB only).

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
    /// The client disabled push (SETTINGS_ENABLE_PUSH = 0) or has no room for another stream.
    ClientDisabled,
    /// `max_pushes_per_response` was reached.
    Limit,
    /// The link-value or its target is malformed or not clean.
    Invalid,
    /// The client's cache digest cookie says it still has a fresh copy (`push.cache_digest`).
    Cached,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::Nopush,
        SkipReason::CrossOrigin,
        SkipReason::Duplicate,
        SkipReason::ClientDisabled,
        SkipReason::Limit,
        SkipReason::Invalid,
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
    pub hint: String,
}

/// The preload links of one response, sorted into what may be pushed and what was skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Same-origin `rel=preload` links, deduplicated by path (first wins), in order.
    pub preloads: Vec<Preload>,
    /// Clean hints for cross-origin `rel=preload` links, with an absolute URL target,
    /// deduplicated by URL (first wins), in order.
    pub foreign_hints: Vec<String>,
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

/// Applies SPEC §4 rules 1–2 to the links of one response.
///
/// Links whose first `rel` lacks `preload`, and links with an `anchor`, are not preloads of
/// this response and are ignored without being counted.
pub fn classify(parsed: &ParsedLinks, base: &RequestBase<'_>) -> Classified {
    let mut out = Classified::default();
    out.skipped
        .extend(std::iter::repeat_n(SkipReason::Invalid, parsed.invalid));
    let mut foreign_urls: Vec<String> = Vec::new();
    for link in &parsed.links {
        // RFC 8288 §3.3: only the first rel counts; RFC 8288 §3.2: an anchor moves the
        // link's context elsewhere.
        if !link.rel_contains("preload") || link.has_param("anchor") {
            continue;
        }
        match target::resolve_same_origin(&link.target, base) {
            Ok(path) => {
                if out.preloads.iter().any(|p| p.path == path) {
                    out.skipped.push(SkipReason::Duplicate);
                    continue;
                }
                out.preloads.push(Preload {
                    hint: hint_value(link, &path),
                    nopush: link.has_param("nopush"),
                    path,
                });
            }
            Err(TargetError::CrossOrigin) => {
                // RFC 9113 §8.4: never pushed; a browser may still fetch it early from a 103.
                out.skipped.push(SkipReason::CrossOrigin);
                let url = target::resolve_absolute(&link.target, base);
                if let Some(url) = url.filter(|u| !foreign_urls.contains(u)) {
                    out.foreign_hints.push(hint_value(link, &url));
                    foreign_urls.push(url);
                }
            }
            Err(TargetError::Invalid) => out.skipped.push(SkipReason::Invalid),
        }
    }
    out
}

/// Builds the clean 103 value from a link and the target string to write.
///
/// `<target>; rel=preload`, then the first occurrence of each attribute a browser acts on, in
/// the link's order. Never `nopush`, never another `rel`. Bytes of `target` that could not
/// stand inside `<…>` in a field value are percent-encoded; an attribute whose value cannot be
/// written as a token or quoted-string (a control character, non-ASCII) is dropped.
pub fn hint_value(link: &Link, target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 48);
    out.push('<');
    for b in target.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'<' && b != b'>' {
            out.push(char::from(b));
        } else {
            push_percent_encoded(&mut out, b);
        }
    }
    out.push_str(">; rel=preload");

    let mut seen = [false; HINT_ATTRIBUTES.len()];
    for (name, value) in &link.params {
        let Some(i) = HINT_ATTRIBUTES
            .iter()
            .position(|a| a.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        // The first occurrence decides, as for rel (RFC 8288 §3.3 and §3.4.1).
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let attribute = HINT_ATTRIBUTES[i];
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
        c.preloads.iter().map(|p| p.hint.as_str()).collect()
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
        assert!(c.foreign_hints.is_empty());
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
            c.foreign_hints,
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
            hint_value(&link, "/a b<c>\u{e9}"),
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
        for h in hints(&c)
            .into_iter()
            .chain(c.foreign_hints.iter().map(String::as_str))
        {
            let v = http::HeaderValue::from_str(h).expect("valid header value");
            assert!(v.to_str().is_ok(), "{h:?}");
        }
    }
}
