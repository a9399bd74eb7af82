//! One access-log line per request (SPEC §7), the same fields on both protocols, in the layout
//! tracing-subscriber's fmt layers give every other line (text, or one flat JSON object).
//!
//! In the binary the line is formatted here, into a per-thread buffer, and handed straight to
//! the log writer ([`crate::log_writer::access_sink`]); tracing only decides whether it is wanted
//! (`linkpush::access` at INFO under `log.level`). Going through tracing's field visitors cost
//! ~23,000 instructions per request (callgrind, `/small.txt`: 22% of all the proxy's work, +8 µs
//! of CPU per request in `benches/compare.sh`'s default round); this costs a few hundred.
//! Without a sink (linkpush used as a library, or tests with their own subscriber) the line is
//! an ordinary `tracing::info!` event with the same fields.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::Duration;

use super::{EarlyHints, RequestInfo};

pub const TARGET: &str = "linkpush::access";

/// A duration in milliseconds rounded to 0.1 ms: `52.1`, not `52.093545999999996`. (The
/// nearest double to a tenth prints as that tenth.)
pub(super) fn millis(d: Duration) -> f64 {
    tenths(d) as f64 / 10.0
}

/// A duration in tenths of a millisecond, rounded half up in integer arithmetic: exact at the
/// halves, and no float `round` for each of the access line's two durations.
fn tenths(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(10_000)
        .saturating_add(u64::from(d.subsec_nanos() + 50_000) / 100_000)
}

pub struct AccessLog<'a> {
    pub protocol: &'static str,
    /// The client's address (`ClientContext::address`).
    pub client: &'a str,
    pub request: &'a RequestInfo,
    pub status: u16,
    /// Response body bytes handed to the connection, also when the response was cut short.
    pub bytes: u64,
    /// From sending the upstream request to its response head (or failure); `None` when no
    /// upstream request was sent.
    pub upstream: Option<Duration>,
    pub pushed: &'a [String],
    /// How many of `pushed` were pushed from learned links, before the upstream answered.
    pub pushed_learned: usize,
    /// The 103s sent: their links and sources.
    pub hints: &'a EarlyHints,
    /// `ProxyError::kind` (or a body-phase kind: `upstream_body`, `client_gone`, …).
    pub error: Option<&'static str>,
}

thread_local! {
    static LINE: RefCell<Line> = RefCell::new(Line::default());
}

/// A thread's line buffer and the date-and-time part of its last timestamp (formatted once a
/// second).
#[derive(Default)]
struct Line {
    out: String,
    second: u64,
    stamp: String,
}

/// A field's key as it is written before its value: ` key=` in text (as tracing's fmt layer
/// writes fields), `,"key":` in JSON (one flat object). Both spellings are made at compile
/// time, so a key is one copy (three `push`es per key were ~800 instructions per line).
struct Key {
    text: &'static str,
    json: &'static str,
}

macro_rules! key {
    ($name:literal) => {
        &Key {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}

/// Appends fields to a line. Its methods are inlined into `format`, where each key is a
/// constant: the copies of the keys become plain stores (callgrind: ~300 instructions per line
/// less than calls to them).
struct Fields<'a> {
    out: &'a mut String,
    json: bool,
}

impl Fields<'_> {
    #[inline(always)]
    fn key(&mut self, key: &Key) {
        self.out
            .push_str(if self.json { key.json } else { key.text });
    }

    /// Quoted in text (tracing's `Debug` of a `&str`), a JSON string.
    #[inline(always)]
    fn str(&mut self, key: &Key, value: &str) {
        self.key(key);
        if self.json {
            json_string(self.out, value);
        } else {
            text_string(self.out, value);
        }
    }

    /// Unquoted in text (tracing's `%` fields), a JSON string: written by `write` in place,
    /// escaped afterwards only in the rare case that it needs it.
    #[inline(always)]
    fn bare(&mut self, key: &Key, write: impl FnOnce(&mut String)) {
        self.key(key);
        if !self.json {
            return write(self.out);
        }
        let start = self.out.len();
        write(self.out);
        if plain(&self.out.as_bytes()[start..]) {
            self.out.insert(start, '"');
            self.out.push('"');
        } else {
            let value = self.out.split_off(start);
            json_string(self.out, &value);
        }
    }

    /// A number in both.
    #[inline(always)]
    fn num(&mut self, key: &Key, value: &str) {
        self.key(key);
        self.out.push_str(value);
    }

    #[inline(always)]
    fn tenths(&mut self, key: &Key, d: Duration, num: &mut itoa::Buffer) {
        self.key(key);
        push_tenths(self.out, d, num);
    }
}

impl AccessLog<'_> {
    /// Whether the current `log.level` wants access lines, asked of tracing's filters.
    pub fn wanted() -> bool {
        tracing::enabled!(target: TARGET, tracing::Level::INFO)
    }

    pub fn emit(&self) {
        let Some(sink) = crate::log_writer::access_sink() else {
            if Self::wanted() {
                self.emit_event();
            }
            return;
        };
        // Decided when the level was set (see `AccessSink::enabled`), not per request.
        if !sink.enabled() {
            return;
        }
        LINE.with_borrow_mut(|line| {
            self.format(line, sink.json(), crate::clock::unix_time());
            sink.write(line.out.as_bytes());
        });
    }

    /// The line into `line.out`, written in place with no allocation per request: `itoa` and
    /// `push_str`, because `core::fmt` with its padding and `Display` of addresses and floats
    /// was most of the cost. `since` is the time since the Unix epoch.
    fn format(&self, line: &mut Line, json: bool, since: Duration) {
        let r = self.request;
        if line.stamp.is_empty() || line.second != since.as_secs() {
            line.second = since.as_secs();
            line.stamp.clear();
            let _ = write!(line.stamp, "{}", DateTime(line.second));
        }
        let mut num = itoa::Buffer::new();
        let micros = &num.format(1_000_000 + since.subsec_micros())[1..];
        let out = &mut line.out;
        out.clear();
        if json {
            out.push_str("{\"timestamp\":\"");
        }
        out.push_str(&line.stamp);
        out.push('.');
        out.push_str(micros);
        out.push_str(if json {
            "Z\",\"level\":\"INFO\""
        } else {
            "Z  INFO linkpush::access:"
        });
        let mut f = Fields { out, json };
        let mut num = itoa::Buffer::new();
        f.str(key!("protocol"), self.protocol);
        f.bare(key!("client"), |out| out.push_str(self.client));
        f.str(key!("host"), &r.host);
        f.bare(key!("method"), |out| out.push_str(r.method.as_str()));
        f.str(key!("path"), r.path.as_str());
        f.num(key!("status"), num.format(self.status));
        f.num(key!("bytes"), num.format(self.bytes));
        f.tenths(
            key!("duration_ms"),
            crate::clock::since(r.started),
            &mut num,
        );
        if let Some(upstream) = self.upstream {
            f.tenths(key!("upstream_ms"), upstream, &mut num);
        }
        let user_agent = r.user_agent.as_ref().and_then(|v| v.to_str().ok());
        f.str(key!("user_agent"), user_agent.unwrap_or(""));
        f.str(key!("request_id"), r.request_id.as_str());
        f.bare(key!("pushed"), |out| push_joined(out, self.pushed));
        f.num(key!("pushed_learned"), num.format(self.pushed_learned));
        f.bare(key!("hinted"), |out| {
            if !self.hints.sources.is_empty() {
                let _ = write!(out, "{}", self.hints.hinted_paths());
            }
        });
        f.bare(key!("hint_sources"), |out| {
            push_joined(out, &self.hints.sources)
        });
        if let Some(error) = self.error {
            f.str(key!("error"), error);
        }
        if json {
            f.out.push_str(",\"target\":\"");
            f.out.push_str(TARGET);
            f.out.push_str("\"}\n");
        } else {
            f.out.push('\n');
        }
    }

    /// The same line as a tracing event, for a process without the binary's log writer.
    fn emit_event(&self) {
        let r = self.request;
        let user_agent = r.user_agent.as_ref().and_then(|v| v.to_str().ok());
        tracing::info!(
            target: TARGET,
            protocol = self.protocol,
            client = %self.client,
            host = r.host.as_str(),
            method = %r.method,
            path = r.path.as_str(),
            status = self.status,
            bytes = self.bytes,
            duration_ms = millis(crate::clock::since(r.started)),
            upstream_ms = self.upstream.map(millis),
            user_agent = user_agent.unwrap_or(""),
            request_id = r.request_id.as_str(),
            pushed = %self.pushed.join(","),
            pushed_learned = self.pushed_learned,
            hinted = %self.hints.hinted_paths(),
            hint_sources = %self.hints.sources.join(","),
            error = self.error,
        );
    }
}

/// `a,b,c`.
fn push_joined<T: AsRef<str>>(out: &mut String, items: &[T]) {
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s.as_ref());
    }
}

/// Milliseconds rounded to a tenth, as `millis` gives them and tracing and serde_json print
/// an `f64`: `52.1`, `1500.0`.
fn push_tenths(out: &mut String, d: Duration, num: &mut itoa::Buffer) {
    let tenths = tenths(d);
    out.push_str(num.format(tenths / 10));
    out.push('.');
    out.push_str(num.format(tenths % 10));
}

/// Whether `s` can go between quotes as it is, in either format: printable ASCII without `"`
/// or `\`. No early exit, so the loop vectorises: the byte-by-byte test with `all` was ~450
/// instructions per line.
fn plain(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// A JSON string (RFC 8259 §7): the escapes of a TOML basic string are JSON's too.
fn json_string(out: &mut String, s: &str) {
    if plain(s.as_bytes()) {
        push_in_quotes(out, s);
    } else {
        crate::config::render::push_quoted(out, s);
    }
}

/// A quoted string as tracing's text format writes a `&str` field (Rust's `Debug`).
fn text_string(out: &mut String, s: &str) {
    if plain(s.as_bytes()) {
        push_in_quotes(out, s);
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// `"s"`, reserving once.
fn push_in_quotes(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// `2026-12-03T08:27:00` for these seconds since the epoch (UTC); the line adds the
/// microseconds and `Z`, as tracing-subscriber's default timer prints the time.
struct DateTime(u64);

impl std::fmt::Display for DateTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (year, month, day) = civil_from_days((self.0 / 86_400) as i64);
        let rem = self.0 % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
        )
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};

    #[test]
    fn milliseconds_are_rounded_to_a_tenth() {
        assert_eq!(millis(Duration::from_nanos(52_093_545)).to_string(), "52.1");
        assert_eq!(
            millis(Duration::from_nanos(52_050_000)).to_string(),
            "52.1",
            "half up"
        );
        assert_eq!(millis(Duration::from_nanos(52_049_999)).to_string(), "52");
        assert_eq!(millis(Duration::new(7, 999_950_000)).to_string(), "8000");
        assert_eq!(millis(Duration::from_micros(3)).to_string(), "0");
        assert_eq!(millis(Duration::from_millis(1500)).to_string(), "1500");
    }

    #[test]
    fn numbers_print_as_display_would() {
        let mut num = itoa::Buffer::new();
        for (d, want) in [
            (Duration::from_nanos(52_093_545), "52.1"),
            (Duration::from_micros(3), "0.0"),
            (Duration::from_millis(1500), "1500.0"),
        ] {
            let mut out = String::new();
            push_tenths(&mut out, d, &mut num);
            assert_eq!(out, want);
            assert_eq!(format!("{:?}", millis(d)), want);
        }
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(DateTime(1_796_286_420).to_string(), "2026-12-03T08:27:00");
    }

    fn request(user_agent: &'static str) -> RequestInfo {
        RequestInfo {
            method: Method::GET,
            path: http::uri::PathAndQuery::from_static("/p\"x\"?q"),
            host: "example.com".into(),
            user_agent: Some(HeaderValue::from_static(user_agent)),
            request_id: super::super::RequestId::Given(HeaderValue::from_static("abc")),
            started: crate::clock::stamp(),
        }
    }

    fn line(json: bool, error: Option<&'static str>, upstream: Option<Duration>) -> String {
        let info = request("agent \\ 1");
        let hints = EarlyHints::default();
        let pushed = ["/a.css".to_owned(), "/b.js".to_owned()];
        let log = AccessLog {
            protocol: "h2",
            client: "127.0.0.1:4321",
            request: &info,
            status: 200,
            bytes: 1234,
            upstream,
            pushed: &pushed,
            pushed_learned: 1,
            hints: &hints,
            error,
        };
        let mut line = Line::default();
        let now = Duration::new(1_796_286_420, 5_000);
        log.format(&mut line, json, now);
        line.out
    }

    #[test]
    fn the_json_line_is_one_flat_object_with_every_field() {
        let text = line(
            true,
            Some("upstream_timeout"),
            Some(Duration::from_micros(1500)),
        );
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(v["timestamp"], "2026-12-03T08:27:00.000005Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "linkpush::access");
        assert_eq!(v["protocol"], "h2");
        assert_eq!(v["client"], "127.0.0.1:4321");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/p\"x\"?q");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["upstream_ms"], 1.5);
        assert!(v["duration_ms"].is_f64(), "{text}");
        assert_eq!(v["user_agent"], "agent \\ 1");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["pushed"], "/a.css,/b.js");
        assert_eq!(v["pushed_learned"], 1);
        assert_eq!(v["hinted"], "");
        assert_eq!(v["hint_sources"], "");
        assert_eq!(v["error"], "upstream_timeout");
    }

    #[test]
    fn absent_values_are_left_out_as_tracing_does() {
        let v: serde_json::Value = serde_json::from_str(&line(true, None, None)).expect("json");
        assert!(
            v.get("error").is_none() && v.get("upstream_ms").is_none(),
            "{v}"
        );
        let text = line(false, None, None);
        assert!(
            !text.contains("error=") && !text.contains("upstream_ms="),
            "{text}"
        );
    }

    #[test]
    fn the_text_line_reads_like_tracings() {
        let text = line(false, Some("client_gone"), Some(Duration::from_millis(2)));
        // `duration_ms` is the time since the request started: whatever it is, a tenth.
        let (head, rest) = text.split_once(" duration_ms=").expect(&text);
        let (duration, tail) = rest.split_once(' ').expect(&text);
        assert!(
            duration.parse::<f64>().is_ok() && duration.contains('.'),
            "{text}"
        );
        assert_eq!(
            head,
            "2026-12-03T08:27:00.000005Z  INFO linkpush::access: protocol=\"h2\" \
             client=127.0.0.1:4321 host=\"example.com\" method=GET path=\"/p\\\"x\\\"?q\" \
             status=200 bytes=1234"
        );
        assert_eq!(
            tail,
            "upstream_ms=2.0 user_agent=\"agent \\\\ 1\" request_id=\"abc\" \
             pushed=/a.css,/b.js pushed_learned=1 hinted= hint_sources= error=\"client_gone\"\n"
        );
    }
}
