//! Where a link points: reference resolution and the same-origin, clean-path check.
//!
//! This module owns the decision whether a link target may become a pushed request. It is pure.
//!
//! Enforced here:
//! - RFC 3986 §5.2.2 (strict) reference resolution against the request URL, with §5.2.3 merge
//!   and §5.2.4 remove_dot_segments; §5.3 recomposition. The reference is split as in
//!   Appendix B, and a scheme must fit §3.1.
//! - RFC 9113 §8.4: a server can only push responses it is authoritative for, so a target is
//!   pushed only when its scheme and authority are the request's (RFC 6454 origin: scheme,
//!   host, port; RFC 3986 §6.2.2.1 and §6.2.3: scheme and host compare case-insensitively and a
//!   default port equals no port). A reference with userinfo is never the same origin.
//! - The path must be clean, because the upstream behind us may decode it in ways RFC 3986 does
//!   not (CVE-2021-41773 class path traversal): after remove_dot_segments it starts with `/`
//!   but not `//`, it holds only RFC 3986 `pchar`s (and `?` in the query), every `%` starts a
//!   valid escape, and no segment decodes to `.` or `..` and no `%2F`, `%5C` or `%00` appears
//!   in the path (`%00` not in the query either). The fragment is dropped (RFC 9110 §4.2.4: it
//!   is not sent).

/// The URL of the request whose response carries the links.
#[derive(Debug, Clone, Copy)]
pub struct RequestBase<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The request's `:authority` (or `Host`).
    pub authority: &'a str,
    /// The request's `:path`: path and query.
    pub path_and_query: &'a str,
}

/// Why a target cannot be pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Another scheme, host, port or userinfo: we are not authoritative (RFC 9113 §8.4).
    CrossOrigin,
    /// Not a URI-Reference, or the resolved path or query is not clean.
    Invalid,
}

/// Resolves `reference` against the request URL (RFC 3986 §5.2.2, remove_dot_segments §5.2.4),
/// then accepts it only if same scheme+authority (RFC 9113 §8.4: the server must be
/// authoritative) and the path is clean. Returns the path-and-query (starts with '/', fragment
/// dropped).
pub fn resolve_same_origin(reference: &str, base: &RequestBase<'_>) -> Result<String, TargetError> {
    let parts = split(reference).ok_or(TargetError::Invalid)?;
    if let Some(scheme) = parts.scheme {
        // `data:`, `javascript:`, `file:`, `mailto:`… are other origins and never fetched.
        if !scheme.eq_ignore_ascii_case(base.scheme) {
            return Err(TargetError::CrossOrigin);
        }
        if parts.authority.is_none() {
            // RFC 9110 §4.2.1, §4.2.2: an http(s) URI without a host is invalid (`http:g`).
            return Err(TargetError::Invalid);
        }
    }
    if let Some(authority) = parts.authority {
        // RFC 9113 §8.4: push only what this server is authoritative for.
        let theirs = Authority::parse(authority).ok_or(TargetError::Invalid)?;
        if theirs.has_userinfo {
            return Err(TargetError::CrossOrigin);
        }
        let ours = Authority::parse(base.authority).ok_or(TargetError::CrossOrigin)?;
        if !theirs.same_as(&ours, base.scheme) {
            return Err(TargetError::CrossOrigin);
        }
    }
    let resolved = resolve_parts(&parts, base);
    clean_path_and_query(&resolved.path, resolved.query.as_deref()).ok_or(TargetError::Invalid)
}

/// For cross-origin links that are still worth hinting in a forwarded 103: the resolved
/// absolute URL, if it is a clean http(s) URL (no userinfo, a plain host, a numeric port,
/// a clean path; fragment dropped).
pub fn resolve_absolute(reference: &str, base: &RequestBase<'_>) -> Option<String> {
    let (resolved, authority) = resolve_http(reference, base)?;
    let path_and_query = clean_path_and_query(&resolved.path, resolved.query.as_deref())?;
    let clean = Resolved {
        authority: Some(authority),
        path: path_and_query,
        query: None,
        fragment: None,
        scheme: resolved.scheme,
    };
    Some(clean.to_uri_string())
}

/// For `rel=preconnect` hints: the origin (RFC 6454: scheme, host, port) of an http(s)
/// target in normal form, `scheme://host[:port]` (default port omitted). No userinfo; the
/// path, query and fragment are irrelevant to a connection and dropped.
pub fn resolve_origin(reference: &str, base: &RequestBase<'_>) -> Option<String> {
    let (resolved, authority) = resolve_http(reference, base)?;
    Some(format!("{}://{authority}", resolved.scheme))
}

/// The reference resolved against the request URL if it is an http(s) URL without userinfo:
/// with its scheme lower-cased, and its authority in normal form (RFC 3986 §6.2.2.1, §6.2.3).
fn resolve_http(reference: &str, base: &RequestBase<'_>) -> Option<(Resolved, String)> {
    let mut resolved = resolve(reference, base)?;
    resolved.scheme.make_ascii_lowercase();
    if resolved.scheme != "http" && resolved.scheme != "https" {
        return None;
    }
    let authority = Authority::parse(resolved.authority.as_deref()?)?;
    if authority.has_userinfo {
        return None;
    }
    let authority = authority.normalized(&resolved.scheme);
    Some((resolved, authority))
}

/// A URI reference split into its five components (RFC 3986 Appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    pub(crate) scheme: Option<&'a str>,
    pub(crate) authority: Option<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) fragment: Option<&'a str>,
}

/// A resolved target URI (RFC 3986 §5.2.2 `T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) scheme: String,
    pub(crate) authority: Option<String>,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) fragment: Option<String>,
}

impl Resolved {
    /// RFC 3986 §5.3 component recomposition.
    pub(crate) fn to_uri_string(&self) -> String {
        let mut out = format!("{}:", self.scheme);
        if let Some(authority) = &self.authority {
            out.push_str("//");
            out.push_str(authority);
        }
        out.push_str(&self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        if let Some(fragment) = &self.fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    }
}

/// Splits a URI-Reference (RFC 3986 Appendix B). `None` when it contains anything but visible
/// ASCII, or its first segment has a `:` that is not a valid scheme (RFC 3986 §3.1, §4.2).
pub(crate) fn split(reference: &str) -> Option<Parts<'_>> {
    if !reference.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    let mut rest = reference;
    let (fragment, query);
    (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut scheme = None;
    if let Some(colon) = rest.find(':')
        && !rest[..colon].contains('/')
    {
        let candidate = &rest[..colon];
        // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
        // §4.2: a relative-path reference cannot have a ':' in its first segment.
        let mut bytes = candidate.bytes();
        let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !valid {
            return None;
        }
        scheme = Some(candidate);
        rest = &rest[colon + 1..];
    }
    let mut authority = None;
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        authority = Some(&after[..end]);
        rest = &after[end..];
    }
    Some(Parts {
        scheme,
        authority,
        path: rest,
        query,
        fragment,
    })
}

/// RFC 3986 §5.2.2 strict reference resolution against the request URL.
pub(crate) fn resolve(reference: &str, base: &RequestBase<'_>) -> Option<Resolved> {
    Some(resolve_parts(&split(reference)?, base))
}

fn resolve_parts(r: &Parts<'_>, base: &RequestBase<'_>) -> Resolved {
    let base_pq = base
        .path_and_query
        .split_once('#')
        .map_or(base.path_and_query, |(pq, _)| pq);
    let (base_path, base_query) = match base_pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base_pq, None),
    };
    let (scheme, authority, path, query);
    if let Some(s) = r.scheme {
        scheme = s.to_owned();
        authority = r.authority.map(str::to_owned);
        path = remove_dot_segments(r.path);
        query = r.query;
    } else {
        scheme = base.scheme.to_owned();
        if let Some(a) = r.authority {
            authority = Some(a.to_owned());
            path = remove_dot_segments(r.path);
            query = r.query;
        } else {
            authority = Some(base.authority.to_owned());
            if r.path.is_empty() {
                path = base_path.to_owned();
                query = r.query.or(base_query);
            } else {
                path = if r.path.starts_with('/') {
                    remove_dot_segments(r.path)
                } else {
                    remove_dot_segments(&merge(base_path, r.path))
                };
                query = r.query;
            }
        }
    }
    Resolved {
        scheme,
        authority,
        path,
        query: query.map(str::to_owned),
        fragment: r.fragment.map(str::to_owned),
    }
}

/// RFC 3986 §5.2.3, for a base that always has an authority.
fn merge(base_path: &str, reference_path: &str) -> String {
    if base_path.is_empty() {
        return format!("/{reference_path}");
    }
    let dir = base_path.rfind('/').map_or("", |i| &base_path[..=i]);
    format!("{dir}{reference_path}")
}

/// RFC 3986 §5.2.4. Linear: each step consumes input, and each removed output segment was
/// written once.
pub(crate) fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest; // A
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest; // A
        } else if input.starts_with("/./") {
            input = &input[2..]; // B
        } else if input == "/." {
            input = "/"; // B
        } else if input.starts_with("/../") {
            input = &input[3..]; // C
            pop_segment(&mut output);
        } else if input == "/.." {
            input = "/"; // C
            pop_segment(&mut output);
        } else if input == "." || input == ".." {
            input = ""; // D
        } else {
            // E: move the first segment, with its leading '/', to the output.
            let from = usize::from(input.starts_with('/'));
            let end = input[from..].find('/').map_or(input.len(), |i| i + from);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

fn pop_segment(output: &mut String) {
    let keep = output.rfind('/').unwrap_or(0);
    output.truncate(keep);
}

/// Checks a resolved path and query and returns `path[?query]`; `None` when not clean.
fn clean_path_and_query(path: &str, query: Option<&str>) -> Option<String> {
    // RFC 9110 §4.2.3: an empty path with an authority is "/".
    let path = if path.is_empty() { "/" } else { path };
    // A path starting with "//" would be read as a network-path reference by the next hop.
    if !path.starts_with('/') || path.starts_with("//") {
        return None;
    }
    check_escapes(path, true)?;
    // No segment may be, or decode to, "." or "..": the upstream may decode before it
    // resolves (CVE-2021-41773).
    if path.split('/').any(is_dot_segment) {
        return None;
    }
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(path);
    if let Some(query) = query {
        check_escapes(query, false)?;
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// Every byte is a `pchar` or `/` (and `?` in a query, RFC 3986 §3.4); every `%` starts a valid
/// escape; in a path no escape encodes `/`, `\` or NUL; in a query no escape encodes NUL.
fn check_escapes(s: &str, is_path: bool) -> Option<()> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            let decoded = hi * 16 + lo;
            if decoded == 0 || (is_path && (decoded == b'/' || decoded == b'\\')) {
                return None;
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/".contains(&b)
            || (!is_path && b == b'?');
        if !allowed {
            return None;
        }
        i += 1;
    }
    Some(())
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Whether a segment is `.` or `..` once `%2E` escapes are decoded.
fn is_dot_segment(segment: &str) -> bool {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b".") {
            rest = r;
        } else if rest
            .get(..3)
            .is_some_and(|e| e.eq_ignore_ascii_case(b"%2e"))
        {
            rest = rest.get(3..).unwrap_or_default();
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// An authority split for comparison (RFC 3986 §3.2).
struct Authority<'a> {
    has_userinfo: bool,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// `None` when the host is empty or not a plain name or IP literal, or the port is not a
    /// number below 65536.
    fn parse(authority: &'a str) -> Option<Self> {
        let (has_userinfo, host_port) = match authority.rsplit_once('@') {
            Some((_, hp)) => (true, hp),
            None => (false, authority),
        };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let close = v6.find(']')?;
            let literal = &v6[..close];
            if literal.is_empty()
                || !literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return None,
            };
            (&host_port[..close + 2], port)
        } else {
            match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if host.is_empty()
            || !(host.starts_with('[')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)))
        {
            return None;
        }
        // RFC 3986 §3.2.3: port = *DIGIT; an empty port is the same as none (§6.2.3).
        let port = match port {
            None | Some("") => None,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
            Some(_) => return None,
        };
        Some(Authority {
            has_userinfo,
            host,
            port,
        })
    }

    /// RFC 3986 §6.2.2.1 and §6.2.3: host case-insensitive, a default port equals no port.
    fn same_as(&self, other: &Authority<'_>, scheme: &str) -> bool {
        let default = default_port(scheme);
        self.host.eq_ignore_ascii_case(other.host)
            && self.port.or(default) == other.port.or(default)
    }

    /// RFC 3986 §6.2.2.1 and §6.2.3 normal form: lowercase host, no empty or default port.
    fn normalized(&self, scheme: &str) -> String {
        let mut out = self.host.to_ascii_lowercase();
        if let Some(port) = self.port.filter(|&p| Some(p) != default_port(scheme)) {
            out.push(':');
            out.push_str(&port.to_string());
        }
        out
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_BASE: RequestBase<'static> = RequestBase {
        scheme: "http",
        authority: "a",
        path_and_query: "/b/c/d;p?q",
    };

    const SITE: RequestBase<'static> = RequestBase {
        scheme: "https",
        authority: "example.com",
        path_and_query: "/shop/cart?id=1",
    };

    fn resolved(reference: &str) -> String {
        resolve(reference, &RFC_BASE)
            .map(|r| r.to_uri_string())
            .unwrap_or_else(|| panic!("{reference:?} did not resolve"))
    }

    #[test]
    fn rfc3986_5_4_1_normal_examples() {
        let cases = [
            ("g:h", "g:h"),
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q#s"),
            ("g#s", "http://a/b/c/g#s"),
            ("g?y#s", "http://a/b/c/g?y#s"),
            (";x", "http://a/b/c/;x"),
            ("g;x", "http://a/b/c/g;x"),
            ("g;x?y#s", "http://a/b/c/g;x?y#s"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../", "http://a/"),
            ("../../g", "http://a/g"),
        ];
        for (reference, want) in cases {
            assert_eq!(resolved(reference), want, "{reference:?}");
        }
    }

    #[test]
    fn rfc3986_5_4_2_abnormal_examples() {
        let cases = [
            ("../../../g", "http://a/g"),
            ("../../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            (".g", "http://a/b/c/.g"),
            ("g..", "http://a/b/c/g.."),
            ("..g", "http://a/b/c/..g"),
            ("./../g", "http://a/b/g"),
            ("./g/.", "http://a/b/c/g/"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
            ("g;x=1/../y", "http://a/b/c/y"),
            ("g?y/./x", "http://a/b/c/g?y/./x"),
            ("g?y/../x", "http://a/b/c/g?y/../x"),
            ("g#s/./x", "http://a/b/c/g#s/./x"),
            ("g#s/../x", "http://a/b/c/g#s/../x"),
            // RFC 3986 §5.4.2: "for strict parsers".
            ("http:g", "http:g"),
        ];
        for (reference, want) in cases {
            assert_eq!(resolved(reference), want, "{reference:?}");
        }
    }

    #[test]
    fn rfc3986_5_2_4_remove_dot_segments_examples() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
        assert_eq!(remove_dot_segments("/..//x"), "//x");
        assert_eq!(remove_dot_segments(""), "");
    }

    #[test]
    fn rfc_examples_through_the_same_origin_check() {
        let cases = [
            ("g", Ok("/b/c/g")),
            ("../../g", Ok("/g")),
            ("?y", Ok("/b/c/d;p?y")),
            ("#s", Ok("/b/c/d;p?q")),
            ("", Ok("/b/c/d;p?q")),
            ("g?y/../x", Ok("/b/c/g?y/../x")),
            ("//g", Err(TargetError::CrossOrigin)),
            ("g:h", Err(TargetError::CrossOrigin)),
            ("http:g", Err(TargetError::Invalid)),
            ("http://a/x", Ok("/x")),
            ("HTTP://A:80/x", Ok("/x")),
            ("//a:/x", Ok("/x")),
        ];
        for (reference, want) in cases {
            let got = resolve_same_origin(reference, &RFC_BASE);
            assert_eq!(got.as_deref(), want.as_deref(), "{reference:?}");
        }
    }

    #[test]
    fn same_origin_targets() {
        let cases = [
            ("/app.css", "/app.css"),
            ("app.css", "/shop/app.css"),
            ("../img/a.png?v=2#frag", "/img/a.png?v=2"),
            ("https://example.com/x", "/x"),
            ("https://EXAMPLE.com:443/x", "/x"),
            ("HTTPS://example.com:/x", "/x"),
            ("//example.com/x", "/x"),
            ("https://example.com", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/../c/./d", "/a/c/d"),
            ("/a//b", "/a//b"),
            ("/s?next=%2Fhome&q=a/b?c", "/s?next=%2Fhome&q=a/b?c"),
            ("/caf%C3%A9.css", "/caf%C3%A9.css"),
            ("/a;v=1,2/x.js", "/a;v=1,2/x.js"),
            ("/...", "/..."),
        ];
        for (reference, want) in cases {
            assert_eq!(
                resolve_same_origin(reference, &SITE).as_deref(),
                Ok(want),
                "{reference:?}"
            );
        }
    }

    #[test]
    fn other_origins_are_cross_origin() {
        let cases = [
            "https://evil.example/x",
            "//evil.example/x",
            "https://example.com:8443/x",
            "https://example.com.evil.example/x",
            "http://example.com/x",
            "https://user@example.com/x",
            "https://user:pass@example.com/x",
            "//@example.com/x",
            "data:text/css,body{}",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "file:///etc/passwd",
            "mailto:a@example.com",
            "ftp://example.com/x",
        ];
        for reference in cases {
            assert_eq!(
                resolve_same_origin(reference, &SITE),
                Err(TargetError::CrossOrigin),
                "{reference:?}"
            );
        }
        let plain = RequestBase {
            scheme: "http",
            authority: "example.com:8080",
            path_and_query: "/",
        };
        assert_eq!(
            resolve_same_origin("http://example.com:8080/x", &plain).as_deref(),
            Ok("/x")
        );
        assert_eq!(
            resolve_same_origin("http://example.com/x", &plain),
            Err(TargetError::CrossOrigin)
        );
        let default_port = RequestBase {
            scheme: "http",
            authority: "Example.com:80",
            path_and_query: "/",
        };
        assert_eq!(
            resolve_same_origin("http://example.com/x", &default_port).as_deref(),
            Ok("/x")
        );
    }

    #[test]
    fn unclean_paths_are_invalid() {
        let cases = [
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/a/%2E/b",
            "/a/.%2e/b",
            "/a/%2e./b",
            "/a/%2e",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%5Cb",
            "/a%00b",
            "/a?x=%00",
            "/a%zz",
            "/a%2",
            "/a?b=%",
            "/a\\b",
            "\\\\evil",
            "/\\evil",
            "/a b",
            "/a\"b",
            "/a<b>",
            "/a{b}",
            "/a|b",
            "/a^b",
            "/a`b",
            "/a[b]",
            "//",
            "/..//evil.example/x",
            "https://example.com//evil.example/x",
            ":x",
            "1http://example.com/x",
            "https://exa mple.com/x",
            "https://example.com:99999/x",
            "https://example.com:8x/x",
            "//[::1/x",
            "https:/x",
            "/caf\u{e9}",
        ];
        for reference in cases {
            assert_eq!(
                resolve_same_origin(reference, &SITE),
                Err(TargetError::Invalid),
                "{reference:?}"
            );
        }
    }

    #[test]
    fn base_path_dot_segments_are_not_trusted() {
        let odd = RequestBase {
            scheme: "https",
            authority: "example.com",
            path_and_query: "/a/../b",
        };
        // RFC 3986 §5.2.2 keeps the base path for an empty reference; it is not clean.
        assert_eq!(resolve_same_origin("", &odd), Err(TargetError::Invalid));
        // The merged path "/a/../x" goes through remove_dot_segments.
        assert_eq!(resolve_same_origin("x", &odd).as_deref(), Ok("/x"));
    }

    #[test]
    fn absolute_urls_for_foreign_hints() {
        let cases = [
            (
                "https://cdn.example/app.css#x",
                Some("https://cdn.example/app.css"),
            ),
            (
                "//cdn.example/a/../app.js",
                Some("https://cdn.example/app.js"),
            ),
            ("HTTP://CDN.example:8080", Some("http://cdn.example:8080/")),
            ("https://cdn.example:443/x", Some("https://cdn.example/x")),
            ("https://cdn.example:/x", Some("https://cdn.example/x")),
            ("http://cdn.example:443/x", Some("http://cdn.example:443/x")),
            (
                "https://[2001:db8::1]:8443/x",
                Some("https://[2001:db8::1]:8443/x"),
            ),
            ("/local.css", Some("https://example.com/local.css")),
            ("https://u:p@cdn.example/x", None),
            ("https://cdn.example/%2e%2e/x", None),
            ("data:text/css,x", None),
            ("javascript:alert(1)", None),
            ("file:///etc/passwd", None),
            ("ftp://cdn.example/x", None),
            ("https:///x", None),
        ];
        for (reference, want) in cases {
            assert_eq!(
                resolve_absolute(reference, &SITE).as_deref(),
                want,
                "{reference:?}"
            );
        }
    }

    #[test]
    fn origins_for_preconnect() {
        for (reference, expected) in [
            ("https://CDN.example:443/x?y#z", Some("https://cdn.example")),
            ("http://cdn.example:8080", Some("http://cdn.example:8080")),
            ("//fonts.example/", Some("https://fonts.example")),
            ("/same", Some("https://example.com")),
            ("https://user@cdn.example/", None),
            ("data:text/plain,x", None),
            ("javascript:alert(1)", None),
            ("ftp://cdn.example/", None),
            ("https://", None),
        ] {
            assert_eq!(
                resolve_origin(reference, &SITE).as_deref(),
                expected,
                "{reference}"
            );
        }
    }
}
