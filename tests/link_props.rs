//! Property tests for the Link parser, target resolution and the push/hint classification:
//! bounds on arbitrary bytes, parse(serialize(links)) == links, every preload clean and every
//! hint a valid field value, and resolution idempotent on its own output.

use http::HeaderValue;
use linkpush::learn;
use linkpush::push::link::{self, Link, MAX_LINK_BYTES, MAX_LINKS, ParsedLinks};
use linkpush::push::policy;
use linkpush::push::target::{self, RequestBase};
use proptest::prelude::*;

const BASES: [RequestBase<'static>; 3] = [
    RequestBase {
        scheme: "https",
        authority: "example.com",
        path_and_query: "/shop/cart/index.html?x=1",
    },
    RequestBase {
        scheme: "http",
        authority: "example.com:8080",
        path_and_query: "/",
    },
    RequestBase {
        scheme: "https",
        authority: "[2001:db8::1]",
        path_and_query: "/a/b;p?q",
    },
];

/// Bytes drawn mostly from the characters that matter to the grammar, so that arbitrary input
/// often gets deep into the parser.
fn header_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting =
        prop::sample::select(b"<>\";,= \t\\/.%2eEfF?#:@apreloadnopushrelanchorhttps".to_vec());
    prop::collection::vec(prop_oneof![4 => interesting, 1 => any::<u8>()], 0..400)
}

/// Link-ish fields whose targets come from an alphabet of traversal and origin tricks.
fn hostile_link_fields() -> impl Strategy<Value = Vec<String>> {
    let target = "(\\.|\\.\\.|/|//|%2e|%2E|%2f|%5c|%00|%|\\\\|a|:|@|\\?|#|;|,|example\\.com|evil\\.example|:443|:8080|https:|http:|data:|javascript:|\\[::1\\]){0,12}";
    let attrs = "(; ?(rel=preload|rel=preconnect|rel=\"preload x\"|nopush|anchor=\"#a\"|as=style|crossorigin|media=\"a,b\"|type=a/b|integrity=\"\\\\\\\"\")){0,4}";
    prop::collection::vec((target, attrs), 0..6).prop_map(|links| {
        links
            .into_iter()
            .map(|(t, a)| format!("<{t}>; rel=preload{a}"))
            .collect()
    })
}

fn assert_bounds(parsed: &ParsedLinks) {
    assert!(parsed.links.len() + parsed.invalid <= MAX_LINKS);
    for l in &parsed.links {
        assert!(l.target.len() <= MAX_LINK_BYTES);
        assert!(
            l.target.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{l:?}"
        );
        for (name, _) in &l.params {
            assert!(!name.is_empty());
            assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{l:?}");
        }
    }
}

fn is_clean_path(path: &str) -> bool {
    let path_only = path.split('?').next().unwrap_or_default();
    let dot_segment = |s: &str| {
        let decoded = s.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    };
    path.starts_with('/')
        && !path.starts_with("//")
        && !path_only.split('/').any(dot_segment)
        && !path.contains('#')
        && !path.contains('\\')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b))
        && !path_only.to_ascii_lowercase().contains("%2f")
        && !path_only.to_ascii_lowercase().contains("%5c")
        && !path.contains("%00")
}

/// SPEC §5: a clean value, one rel a browser acts on, no `nopush`, no target longer than the
/// parser's bound, never a non-http(s) target.
fn assert_valid_hint(hint: &HeaderValue) {
    let hint = hint
        .to_str()
        .unwrap_or_else(|_| panic!("invalid hint {hint:?}"));
    assert!(hint.starts_with('<'), "{hint:?}");
    assert!(
        hint.contains(">; rel=preload") || hint.contains(">; rel=preconnect"),
        "{hint:?}"
    );
    assert!(!hint.contains("nopush"), "{hint:?}");
    let target = &hint[1..hint.find('>').unwrap()];
    assert!(target.len() <= link::MAX_LINK_BYTES, "{hint:?}");
    let lower = target.to_ascii_lowercase();
    assert!(
        !lower.starts_with("data:") && !lower.starts_with("javascript:"),
        "{hint:?}"
    );
}

fn assert_classified(parsed: &ParsedLinks, base: &RequestBase<'_>) {
    let c = policy::classify(parsed, base);
    for (i, p) in c.preloads.iter().enumerate() {
        assert!(c.hints.contains(&p.hint), "every preload is hinted: {p:?}");
        assert!(is_clean_path(&p.path), "{p:?}");
        assert_valid_hint(&p.hint);
        assert!(c.preloads[..i].iter().all(|q| q.path != p.path), "{p:?}");
        assert_eq!(
            target::resolve_same_origin(&p.path, base).as_deref(),
            Ok(p.path.as_str())
        );
    }
    for (i, h) in c.hints.iter().enumerate() {
        assert_valid_hint(h);
        let text = h.to_str().unwrap();
        // Same-origin preloads are the preloads' own hints; cross-origin preloads only over
        // https; preconnects to any http(s) origin.
        if text.starts_with("</") {
            assert!(c.preloads.iter().any(|p| p.hint == h), "{h:?}");
        } else if text.contains(">; rel=preload") {
            assert!(text.starts_with("<https://"), "{h:?}");
        } else {
            assert!(
                text.starts_with("<http://") || text.starts_with("<https://"),
                "{h:?}"
            );
            // The origin only: nothing after the authority.
            let target = &text[1..text.find('>').unwrap()];
            let authority = target.split_once("//").unwrap().1;
            assert!(!authority.contains(['/', '?', '#']), "{h:?}");
        }
        let key = policy::hint_key(h.as_bytes());
        assert!(
            c.hints[..i]
                .iter()
                .all(|o| policy::hint_key(o.as_bytes()) != key),
            "{h:?} twice"
        );
    }
    let preload_links = parsed
        .links
        .iter()
        .filter(|l| l.rel_contains("preload") && !l.has_param("anchor"))
        .count();
    assert_eq!(
        c.preloads.len() + c.skipped.len(),
        preload_links + parsed.invalid
    );
}

// ---- generated links that must survive serialization ----

#[derive(Debug, Clone)]
enum Value {
    None,
    Token(String),
    Quoted { value: String, escape_all: bool },
}

#[derive(Debug, Clone)]
struct GenParam {
    name: String,
    value: Value,
    ows: [String; 4],
}

#[derive(Debug, Clone)]
struct GenLink {
    target: String,
    params: Vec<GenParam>,
    ows: [String; 2],
}

fn ows() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(Value::Token),
        ("[ -~\t]{0,20}", any::<bool>())
            .prop_map(|(value, escape_all)| Value::Quoted { value, escape_all }),
    ]
}

fn gen_param() -> impl Strategy<Value = GenParam> {
    (
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}",
        value(),
        [ows(), ows(), ows(), ows()],
    )
        .prop_map(|(name, value, ows)| GenParam { name, value, ows })
}

fn gen_link() -> impl Strategy<Value = GenLink> {
    (
        // Any visible ASCII but '>', so commas, semicolons and quotes inside the target too.
        "[!-=?-~]{0,40}",
        prop::collection::vec(gen_param(), 0..6),
        [ows(), ows()],
    )
        .prop_map(|(target, params, ows)| GenLink {
            target,
            params,
            ows,
        })
}

fn serialize(link: &GenLink) -> String {
    let mut out = format!("{}<{}>", link.ows[0], link.target);
    for p in &link.params {
        out.push_str(&format!("{};{}{}", p.ows[0], p.ows[1], p.name));
        match &p.value {
            Value::None => {}
            Value::Token(t) => out.push_str(&format!("{}={}{}", p.ows[2], p.ows[3], t)),
            Value::Quoted { value, escape_all } => {
                out.push_str(&format!("{}={}\"", p.ows[2], p.ows[3]));
                for c in value.chars() {
                    if *escape_all || c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push_str(&link.ows[1]);
    out
}

fn expected(link: &GenLink) -> Link {
    Link {
        target: link.target.clone(),
        params: link
            .params
            .iter()
            .map(|p| {
                let value = match &p.value {
                    Value::None => None,
                    Value::Token(t) => Some(t.clone()),
                    Value::Quoted { value, .. } => Some(value.clone()),
                };
                (p.name.to_ascii_lowercase(), value)
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_and_respects_bounds(fields in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..6)) {
        let parsed = link::parse_fields(fields.iter().map(Vec::as_slice));
        assert_bounds(&parsed);
        for base in &BASES {
            assert_classified(&parsed, base);
        }
    }

    #[test]
    fn header_ish_bytes_respect_bounds(fields in prop::collection::vec(header_ish_bytes(), 0..6)) {
        let parsed = link::parse_fields(fields.iter().map(Vec::as_slice));
        assert_bounds(&parsed);
    }

    #[test]
    fn serialized_links_parse_back(links in prop::collection::vec(gen_link(), 1..10), splits in prop::collection::vec(any::<bool>(), 10), sep_ows in [ows(), ows()]) {
        // Join the links into one or more fields: RFC 9110 §5.3 says it is the same list.
        let mut fields = vec![String::new()];
        for (i, l) in links.iter().enumerate() {
            let current = fields.last_mut().expect("never empty");
            if !current.is_empty() {
                current.push_str(&format!("{},{}", sep_ows[0], sep_ows[1]));
            }
            current.push_str(&serialize(l));
            if splits[i] {
                fields.push(String::new());
            }
        }
        let parsed = link::parse_fields(fields.iter().map(String::as_bytes));
        prop_assert_eq!(parsed.invalid, 0, "{:?}", fields);
        let want: Vec<Link> = links.iter().map(expected).collect();
        prop_assert_eq!(parsed.links, want, "{:?}", fields);
    }

    #[test]
    fn every_preload_is_clean_and_every_hint_valid(fields in prop::collection::vec(header_ish_bytes(), 0..4)) {
        let parsed = link::parse_fields(fields.iter().map(Vec::as_slice));
        for base in &BASES {
            assert_classified(&parsed, base);
        }
    }

    #[test]
    fn hostile_targets_classify_cleanly(fields in hostile_link_fields()) {
        let parsed = link::parse_fields(fields.iter().map(String::as_bytes));
        for base in &BASES {
            assert_classified(&parsed, base);
        }
    }

    #[test]
    fn resolution_is_idempotent(reference in "(\\.|\\.\\.|/|//|%2e|%41|%2f|a|b|:|@|\\?|#|;|=|example\\.com|:443|https:){0,14}", b in 0usize..3) {
        let base = &BASES[b];
        if let Ok(path) = target::resolve_same_origin(&reference, base) {
            prop_assert!(is_clean_path(&path), "{:?} -> {:?}", reference, path);
            prop_assert_eq!(target::resolve_same_origin(&path, base), Ok(path.clone()));
            // Whatever the request path, an absolute-path output means the same thing.
            for other in &BASES {
                if other.scheme == base.scheme && other.authority == base.authority {
                    prop_assert_eq!(target::resolve_same_origin(&path, other), Ok(path.clone()));
                }
            }
        }
        if let Some(url) = target::resolve_absolute(&reference, base) {
            prop_assert_eq!(target::resolve_absolute(&url, base), Some(url.clone()));
            prop_assert!(HeaderValue::from_str(&url).is_ok());
        }
    }

    /// Issue 12 item 4: tracking parameters never split a route; everything else is kept, in
    /// order; the key of a key's own path is the key.
    #[test]
    fn route_keys_drop_only_tracking_parameters(
        path in "/[a-z/]{0,8}",
        params in prop::collection::vec("(utm_[a-z]{1,3}|UTM_X|gclid|fbclid|ref|id|q|utmx|x_utm_a)(=[a-z0-9]{0,3})?", 0..6),
    ) {
        let ignore = ["ref".to_owned()];
        let pq = if params.is_empty() { path.clone() } else { format!("{path}?{}", params.join("&")) };
        let key = learn::route_key("Site.Example", &pq, &ignore);
        let tracking = |p: &str| {
            let name = p.split('=').next().unwrap().to_ascii_lowercase();
            name.starts_with("utm_") || ["gclid", "fbclid", "ref"].contains(&name.as_str())
        };
        let kept: Vec<&String> = params.iter().filter(|p| !tracking(p)).collect();
        let expected = if kept.is_empty() {
            format!("site.example{path}")
        } else {
            let kept: Vec<&str> = kept.iter().map(|p| p.as_str()).collect();
            format!("site.example{path}?{}", kept.join("&"))
        };
        prop_assert_eq!(&key, &expected);
        let own_path = &key["site.example".len()..];
        prop_assert_eq!(learn::route_key("site.example", own_path, &ignore), key.clone());
    }
}
