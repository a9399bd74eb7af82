//! The `Link` response header parser (RFC 8288 §3).
//!
//! This module owns one thing: turning the raw bytes of a response's `Link` fields into
//! [`Link`] values. It is pure (no I/O, no allocation beyond its output) and never panics,
//! whatever the upstream sends. What a link *means* for push and hints is decided in
//! [`super::policy`]; where a target points is decided in [`super::target`].
//!
//! Enforced here:
//! - RFC 9110 §5.3: several `Link` fields are one comma-separated list, and §5.6.1: empty list
//!   elements are accepted and ignored.
//! - RFC 8288 §3: `link-value = "<" URI-Reference ">" *( OWS ";" OWS link-param )`, with
//!   `link-param = token BWS [ "=" BWS ( token / quoted-string ) ]`; commas and semicolons
//!   inside `<…>` and inside quoted-strings do not split.
//! - RFC 9110 §5.6.4: quoted-string with the `\` quoted-pair escape.
//! - RFC 8288 §3.3: only the first `rel` parameter counts; §2.1.1: relation types are compared
//!   ASCII case-insensitively.
//! - RFC 8187 `name*` ext-values are kept as their raw value, not decoded (nothing we emit needs
//!   them).
//! - SPEC §8: at most [`MAX_LINKS`] link-values are examined per response and a link-value longer
//!   than [`MAX_LINK_BYTES`] is skipped as invalid. The whole parse is linear in the input: the
//!   list is split in one pass and each element is parsed in one more pass over its own bytes.
//!
//! Leniency, chosen to match what browsers accept from real backends: a parameter value without
//! quotes may contain any visible character except `;`, `,` and `"` (so `type=font/woff2` works
//! although `/` is not a token character); an empty parameter (`;;`, a trailing `;`) is
//! skipped; `name=` with nothing after it has the empty value; OWS just inside `<` and `>` is
//! trimmed. A link-value that still does not fit the grammar is counted as invalid and parsing
//! resumes at the next top-level comma.

/// Link-values examined per response, valid and invalid together (SPEC §8); the rest are ignored.
pub const MAX_LINKS: usize = 64;

/// A single link-value longer than this (after trimming OWS) is skipped as invalid (SPEC §8).
pub const MAX_LINK_BYTES: usize = 2048;

/// One parsed link-value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI-Reference between `<` and `>`, verbatim (visible ASCII only).
    pub target: String,
    /// Parameters in order. Names are ASCII-lowercased; values are unquoted and unescaped;
    /// `None` is a parameter without a value (`nopush`, `crossorigin`).
    pub params: Vec<(String, Option<String>)>,
}

impl Link {
    /// The value of the first parameter called `name` (ASCII case-insensitive): `None` when the
    /// parameter is absent, `Some(None)` when it is present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Whether a parameter called `name` is present, with or without a value.
    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// Whether the link's relation types include `relation_type`.
    pub fn rel_contains(&self, relation_type: &str) -> bool {
        // RFC 8288 §3.3: occurrences of `rel` after the first MUST be ignored by parsers.
        let Some(Some(rel)) = self.param("rel") else {
            return false;
        };
        // RFC 8288 §3.3: `rel` holds one or more space-separated relation types;
        // §2.1.1: they are compared ASCII case-insensitively.
        rel.split([' ', '\t'])
            .filter(|t| !t.is_empty())
            .any(|t| t.eq_ignore_ascii_case(relation_type))
    }
}

/// The links of one response, and how many link-values were malformed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedLinks {
    pub links: Vec<Link>,
    /// Link-values that were examined but did not parse (or were too long).
    pub invalid: usize,
}

/// Parses the values of every `Link` field of one response, in order.
///
/// Several Link fields and comma-separated lists form one list (RFC 9110 §5.3).
/// At most [`MAX_LINKS`] link-values are examined in total; parsing stops after that.
pub fn parse_fields<'a, I: IntoIterator<Item = &'a [u8]>>(fields: I) -> ParsedLinks {
    let mut out = ParsedLinks::default();
    for field in fields {
        let mut rest = field;
        while !rest.is_empty() {
            // SPEC §8: only the first MAX_LINKS link-values are examined.
            if out.links.len() + out.invalid >= MAX_LINKS {
                return out;
            }
            let (element, next) = split_element(rest);
            rest = next;
            let element = trim_ows(element);
            if element.is_empty() {
                // RFC 9110 §5.6.1: empty list elements do not count as members.
                continue;
            }
            if element.len() > MAX_LINK_BYTES {
                out.invalid += 1;
                continue;
            }
            match parse_link_value(element) {
                Some(link) => out.links.push(link),
                None => out.invalid += 1,
            }
        }
    }
    out
}

/// Splits off the first list element at the first comma that is outside the `<…>` target and
/// outside any quoted-string. An unterminated target or quoted-string runs to the end of the
/// field. One pass, so hostile input (`<<<<…`, `""""…`) costs linear time.
fn split_element(input: &[u8]) -> (&[u8], &[u8]) {
    let mut i = skip_ows(input, 0);
    // Only a `<` that opens the element starts a target; a later `<` is an ordinary byte.
    let mut in_target = input.get(i) == Some(&b'<');
    if in_target {
        i += 1;
    }
    let mut in_quote = false;
    while let Some(&b) = input.get(i) {
        if in_target {
            in_target = b != b'>';
        } else if in_quote {
            match b {
                // RFC 9110 §5.6.4: a quoted-pair escapes the next byte, even `"`.
                b'\\' => i += 1,
                b'"' => in_quote = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quote = true,
                b',' => return (&input[..i], &input[i + 1..]),
                _ => {}
            }
        }
        i += 1;
    }
    (input, &[])
}

/// Parses one trimmed, non-empty link-value; `None` when it does not fit RFC 8288 §3.
fn parse_link_value(element: &[u8]) -> Option<Link> {
    // Control characters are never valid in a field value (RFC 9110 §5.5); HTAB is OWS.
    if element.iter().any(|&b| is_control(b)) {
        return None;
    }
    let mut c = Cursor {
        bytes: element,
        pos: 0,
    };
    if !c.eat(b'<') {
        return None;
    }
    let close = element.iter().position(|&b| b == b'>')?;
    let target = trim_ows(element.get(c.pos..close)?);
    // RFC 3986 §2: a URI-Reference is ASCII without spaces or controls; anything else is not
    // a target we could resolve or repeat in a hint.
    if !target.iter().all(|&b| is_visible_ascii(b)) {
        return None;
    }
    c.pos = close + 1;

    let mut params = Vec::new();
    loop {
        c.skip_ows();
        if c.at_end() {
            break;
        }
        if !c.eat(b';') {
            return None;
        }
        c.skip_ows();
        if c.at_end() || c.peek() == Some(b';') {
            continue;
        }
        let name = c.take_while(is_tchar);
        if name.is_empty() {
            return None;
        }
        // RFC 8288 §3: BWS around "=".
        c.skip_ows();
        let value = if c.eat(b'=') {
            c.skip_ows();
            Some(match c.peek() {
                Some(b'"') => c.quoted_string()?,
                _ => lossy(c.take_while(is_unquoted_value_byte)),
            })
        } else {
            None
        };
        params.push((ascii_lowercase(name), value));
    }
    Some(Link {
        target: lossy(target),
        params,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_ows(&mut self) {
        self.pos = skip_ows(self.bytes, self.pos);
    }

    fn take_while(&mut self, pred: fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        self.bytes.get(start..self.pos).unwrap_or_default()
    }

    /// RFC 9110 §5.6.4: `DQUOTE *( qdtext / quoted-pair ) DQUOTE`, returned unescaped.
    fn quoted_string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut value = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(lossy(&value));
                }
                b'\\' => {
                    let escaped = *self.bytes.get(self.pos + 1)?;
                    value.push(escaped);
                    self.pos += 2;
                }
                b => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

fn skip_ows(bytes: &[u8], mut pos: usize) -> usize {
    while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = skip_ows(bytes, 0);
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a parameter value written without quotes: browsers take more than `token` here.
fn is_unquoted_value_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f && b != b';' && b != b',' && b != b'"'
}

fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn ascii_lowercase(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// Values are ASCII except for RFC 9110 obs-text, which is kept as best we can.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &[&str]) -> ParsedLinks {
        parse_fields(fields.iter().map(|f| f.as_bytes()))
    }

    fn p(name: &str, value: Option<&str>) -> (String, Option<String>) {
        (name.to_owned(), value.map(str::to_owned))
    }

    fn link(target: &str, params: &[(&str, Option<&str>)]) -> Link {
        Link {
            target: target.to_owned(),
            params: params.iter().map(|&(n, v)| p(n, v)).collect(),
        }
    }

    #[test]
    fn rfc8288_3_5_examples() {
        let cases: &[(&str, Vec<Link>)] = &[
            (
                r#"<http://example.com/TheBook/chapter2>; rel="previous"; title="previous chapter""#,
                vec![link(
                    "http://example.com/TheBook/chapter2",
                    &[
                        ("rel", Some("previous")),
                        ("title", Some("previous chapter")),
                    ],
                )],
            ),
            (
                r#"</>; rel="http://example.net/foo""#,
                vec![link("/", &[("rel", Some("http://example.net/foo"))])],
            ),
            (
                r##"</terms>; rel="copyright"; anchor="#foo""##,
                vec![link(
                    "/terms",
                    &[("rel", Some("copyright")), ("anchor", Some("#foo"))],
                )],
            ),
            (
                "</TheBook/chapter2>; rel=\"previous\"; title*=UTF-8'de'letztes%20Kapitel, \
                 </TheBook/chapter4>; rel=\"next\"; title*=UTF-8'de'n%c3%a4chstes%20Kapitel",
                vec![
                    link(
                        "/TheBook/chapter2",
                        &[
                            ("rel", Some("previous")),
                            ("title*", Some("UTF-8'de'letztes%20Kapitel")),
                        ],
                    ),
                    link(
                        "/TheBook/chapter4",
                        &[
                            ("rel", Some("next")),
                            ("title*", Some("UTF-8'de'n%c3%a4chstes%20Kapitel")),
                        ],
                    ),
                ],
            ),
            (
                r#"<http://example.org/>; rel="start http://example.net/relation/other""#,
                vec![link(
                    "http://example.org/",
                    &[("rel", Some("start http://example.net/relation/other"))],
                )],
            ),
            (
                r#"<https://example.org/>; rel="start", <https://example.org/index>; rel="index""#,
                vec![
                    link("https://example.org/", &[("rel", Some("start"))]),
                    link("https://example.org/index", &[("rel", Some("index"))]),
                ],
            ),
        ];
        for (header, want) in cases {
            let got = parse(&[header]);
            assert_eq!(got.invalid, 0, "{header}");
            assert_eq!(&got.links, want, "{header}");
        }
    }

    #[test]
    fn rfc8288_multi_type_rel() {
        let got =
            parse(&[r#"<http://example.org/>; rel="start http://example.net/relation/other""#]);
        let l = &got.links[0];
        assert!(l.rel_contains("start"));
        assert!(l.rel_contains("http://example.net/relation/other"));
        assert!(!l.rel_contains("other"));
    }

    #[test]
    fn several_fields_are_one_list() {
        let got = parse(&["</a.css>; rel=preload", "</b.js>; rel=preload, </c.png>"]);
        let targets: Vec<_> = got.links.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets, ["/a.css", "/b.js", "/c.png"]);
        assert_eq!(got.invalid, 0);
    }

    #[test]
    fn commas_and_semicolons_inside_target_and_quotes_do_not_split() {
        let got =
            parse(&[r#"</a,b;c.css>; rel="preload"; title="x, y; \"z\" \\", </d>; rel=preload"#]);
        assert_eq!(got.invalid, 0);
        assert_eq!(
            got.links,
            vec![
                link(
                    "/a,b;c.css",
                    &[("rel", Some("preload")), ("title", Some(r#"x, y; "z" \"#))]
                ),
                link("/d", &[("rel", Some("preload"))]),
            ]
        );
    }

    #[test]
    fn ows_everywhere_and_empty_elements() {
        let got = parse(&[" ,\t< /a.css >\t;  rel = preload ;as\t=\tstyle ; crossorigin ,, ,"]);
        assert_eq!(got.invalid, 0);
        assert_eq!(
            got.links,
            vec![link(
                "/a.css",
                &[
                    ("rel", Some("preload")),
                    ("as", Some("style")),
                    ("crossorigin", None)
                ]
            )]
        );
    }

    #[test]
    fn names_are_lowercased_values_kept() {
        let got = parse(&["</a>; REL=PRELOAD; As=Style; NoPush"]);
        let l = &got.links[0];
        assert_eq!(
            l.params,
            vec![
                p("rel", Some("PRELOAD")),
                p("as", Some("Style")),
                p("nopush", None)
            ]
        );
        assert!(l.rel_contains("preload"));
        assert!(l.has_param("nopush"));
        assert!(l.has_param("NOPUSH"));
        assert_eq!(l.param("as"), Some(Some("Style")));
        assert_eq!(l.param("nopush"), Some(None));
        assert_eq!(l.param("media"), None);
    }

    #[test]
    fn quoted_multi_value_rel() {
        let l = &parse(&[r#"</a>; rel="preload prefetch""#]).links[0];
        assert!(l.rel_contains("preload"));
        assert!(l.rel_contains("PREFETCH"));
        assert!(!l.rel_contains("pre"));
    }

    #[test]
    fn second_rel_is_ignored() {
        let l = &parse(&["</a>; rel=stylesheet; rel=preload"]).links[0];
        assert!(l.rel_contains("stylesheet"));
        assert!(!l.rel_contains("preload"));
        let l = &parse(&["</a>; rel; rel=preload"]).links[0];
        assert!(!l.rel_contains("preload"));
    }

    #[test]
    fn lenient_values() {
        let got = parse(&["</f.woff2>; rel=preload; type=font/woff2; title=; as=font;"]);
        assert_eq!(got.invalid, 0);
        assert_eq!(
            got.links[0].params,
            vec![
                p("rel", Some("preload")),
                p("type", Some("font/woff2")),
                p("title", Some("")),
                p("as", Some("font")),
            ]
        );
    }

    #[test]
    fn malformed_values_are_invalid_and_parsing_resumes() {
        let cases = [
            "/a.css; rel=preload",           // no brackets
            "</a.css> rel=preload",          // missing ';'
            "</a.css>; rel=pre load",        // space in a token
            "</a.css>; =preload",            // empty name
            "</a.css>; r@l=preload",         // bad name
            "</a.css>; rel=\"preload\"x",    // junk after quoted-string
            "</a b.css>; rel=preload",       // space in target
            "</caf\u{e9}.css>; rel=preload", // non-ASCII in target
            "</a.css>; rel=preload\u{1}",    // control character
            "x</a.css>",                     // junk before '<'
        ];
        for bad in cases {
            let got = parse(&[&format!("{bad}, </ok>; rel=preload")]);
            assert_eq!(got.invalid, 1, "{bad:?}");
            assert_eq!(
                got.links,
                vec![link("/ok", &[("rel", Some("preload"))])],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unterminated_target_and_quote_consume_the_field() {
        let got = parse(&["</a.css; rel=preload, </b>; rel=preload", "</c>"]);
        assert_eq!(got.invalid, 1);
        assert_eq!(got.links, vec![link("/c", &[])]);

        let got = parse(&["</a>; title=\"oops, </b>; rel=preload", "</c>"]);
        assert_eq!(got.invalid, 1);
        assert_eq!(got.links, vec![link("/c", &[])]);

        let got = parse(&["</a>; title=\"trailing escape\\"]);
        assert_eq!(got.invalid, 1);
        assert!(got.links.is_empty());
    }

    #[test]
    fn long_link_value_is_invalid() {
        let long = format!("</{}>; rel=preload", "a".repeat(9 * 1024));
        let got = parse(&[&format!("{long}, </ok>")]);
        assert_eq!(got.invalid, 1);
        assert_eq!(got.links, vec![link("/ok", &[])]);

        let exact = format!("</{}>", "a".repeat(MAX_LINK_BYTES - 3));
        assert_eq!(exact.len(), MAX_LINK_BYTES);
        assert_eq!(parse(&[&exact]).links.len(), 1);
    }

    #[test]
    fn only_max_links_are_examined() {
        let many: Vec<String> = (0..200)
            .map(|i| format!("</{i}.js>; rel=preload"))
            .collect();
        let got = parse(&[&many.join(", ")]);
        assert_eq!(got.links.len(), MAX_LINKS);
        assert_eq!(got.links[63].target, "/63.js");

        // Invalid values count towards the limit, across fields.
        let fields: Vec<String> = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    "bad".to_owned()
                } else {
                    format!("</{i}>")
                }
            })
            .collect();
        let got = parse_fields(fields.iter().map(|f| f.as_bytes()));
        assert_eq!(got.links.len() + got.invalid, MAX_LINKS);
        assert_eq!((got.links.len(), got.invalid), (32, 32));
    }

    #[test]
    fn hostile_input_is_linear_and_bounded() {
        for unit in ["<", "\"", "\\", ",", ";", "<\"", "\"<,", "</a>;x=\""] {
            let field = unit.repeat(100 * 1024 / unit.len());
            let got = parse(&[&field]);
            assert!(got.links.len() + got.invalid <= MAX_LINKS, "{unit:?}");
        }
        assert_eq!(parse(&[&"<".repeat(100_000)]).invalid, 1);
        assert_eq!(parse(&[&"\"".repeat(100_000)]).invalid, 1);
        assert_eq!(parse(&[&",".repeat(100_000)]), ParsedLinks::default());
    }

    #[test]
    fn empty_target_and_no_params() {
        let got = parse(&["<>", "<>;"]);
        assert_eq!(got.links, vec![link("", &[]), link("", &[])]);
    }

    #[test]
    fn non_utf8_quoted_value_is_kept_lossily() {
        let got = parse_fields([&b"</a>; title=\"caf\xe9\"; rel=preload"[..]]);
        assert_eq!(got.invalid, 0);
        assert_eq!(got.links[0].param("title"), Some(Some("caf\u{fffd}")));
        assert!(got.links[0].rel_contains("preload"));
    }
}
