//! Metric families in one place (name, type, HELP), and small record helpers. The text
//! exposition and the handles live in `exposition`.
//!
//! Each [`Metrics`] owns its own registry rather than a process-global one, so that several
//! proxies in one process (tests, `linkpush demo`) never mix their numbers. Recording is an
//! atomic add on a handle: hot series (requests, pushes, hints) keep their handles, rare ones
//! are looked up by label set when they happen. Nothing needs periodic upkeep: a histogram is a
//! fixed array of bucket counters.
//!
//! The exposition is the Prometheus text format 0.0.4 that `promtool check metrics` checks:
//! every family has `# HELP` and `# TYPE`, counters end in `_total`. (The `prometheus-client`
//! crate writes OpenMetrics, whose `# TYPE x counter` + `x_total` lines promtool 2.42 refuses
//! with "no help text"; `metrics-exporter-prometheus` wrote no HELP and needed an upkeep task.)
//!
//! ## Adding a metric
//!
//! 1. Declare its family next to the others: name, type and HELP text in one line, e.g.
//!    `pub const TLS_HANDSHAKE_ERRORS_TOTAL: Family = Family::counter("linkpush_tls_handshake_errors_total", "TLS handshakes that failed, by reason.");`
//! 2. Add a record method on [`Metrics`]: `self.counter(&TLS_HANDSHAKE_ERRORS_TOTAL, &[("reason", reason)]).inc()`
//!    (or register the handles once in [`Metrics::new`] when it is on the request path, which
//!    also makes the zero-valued series visible before the first event).
//!
//! Families appear in `/metrics` once they have a series, sorted by name.

mod exposition;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use self::exposition::{
    Callback, Counter, Family, Gauge, GaugeGuard, Histogram, Kind, Registry,
};
use crate::learn::LearnSkip;
use crate::push::policy::SkipReason;

// ===== The families =====

pub const REQUESTS_TOTAL: Family = Family::counter(
    "linkpush_requests_total",
    "Client requests answered, by client protocol and response status (499: the client went away).",
);
pub const PUSHES_TOTAL: Family = Family::counter(
    "linkpush_pushes_total",
    "HTTP/2 server pushes by outcome: promised, completed, cancelled by the client, failed.",
);
pub const PUSH_SKIPPED_TOTAL: Family = Family::counter(
    "linkpush_push_skipped_total",
    "Preload links that were not pushed, by reason.",
);
pub const PUSHED_BYTES_TOTAL: Family = Family::counter(
    "linkpush_pushed_bytes_total",
    "Body bytes sent on pushed streams.",
);
pub const EARLY_HINTS_TOTAL: Family = Family::counter(
    "linkpush_early_hints_total",
    "103 Early Hints responses sent, by where their links came from.",
);
pub const UPSTREAM_DURATION_SECONDS: Family = Family::histogram(
    "linkpush_upstream_duration_seconds",
    "Time from sending a request upstream to its response headers (or its failure).",
    &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ],
);
pub const CONNECTIONS: Family = Family::gauge(
    "linkpush_connections",
    "Client connections open now, by protocol.",
);
pub const UPSTREAM_ERRORS_TOTAL: Family = Family::counter(
    "linkpush_upstream_errors_total",
    "Upstream failures by kind; each connect/request failure is a 502, each timeout or saturation a 504.",
);
pub const UPSTREAM_CONNECTIONS: Family = Family::gauge(
    "linkpush_upstream_connections",
    "Upstream connections: in_use = requests holding one of upstream.max_connections, idle = open connections beyond those (pooled).",
);
pub const CONFIG_RELOADS_TOTAL: Family = Family::counter(
    "linkpush_config_reloads_total",
    "Configuration reloads (SIGHUP) by result.",
);
pub const BUILD_INFO: Family = Family::gauge(
    "linkpush_build_info",
    "Always 1; the labels say which build is running.",
);
pub const LOG_LINES_DROPPED_TOTAL: Family = Family::counter(
    "linkpush_log_lines_dropped_total",
    "Log lines dropped because the log writer fell behind (the log never blocks a request).",
);

pub const TLS_HANDSHAKE_ERRORS_TOTAL: Family = Family::counter(
    "linkpush_tls_handshake_errors_total",
    "TLS handshakes that failed, by reason (timeout, eof, protocol, certificate, alert, io, other).",
);
pub const CLIENT_ERRORS_TOTAL: Family = Family::counter(
    "linkpush_client_errors_total",
    "Requests that failed because of the client (bad request, aborted or malformed body, unsupported protocol), by kind.",
);
pub const TUNNELS_TOTAL: Family = Family::counter(
    "linkpush_tunnels_total",
    "WebSocket tunnels opened (HTTP/1.1 Upgrade or HTTP/2 extended CONNECT), by client protocol.",
);
pub const TUNNELS: Family = Family::gauge(
    "linkpush_tunnels",
    "WebSocket tunnels open now, by client protocol.",
);
pub const LEARN_SKIPPED_TOTAL: Family = Family::counter(
    "linkpush_learn_skipped_total",
    "Final responses whose links were not learned, by reason (RFC 9111 shared-cache rules, learn.exclude, learn.max_bytes).",
);
pub const LEARNED_BYTES: Family = Family::gauge(
    "linkpush_learned_bytes",
    "Bytes the learned-routes store accounts for (cleaned links, keys, overhead); at most learn.max_bytes.",
);

pub const CONNECTIONS_LIMITED_TOTAL: Family = Family::counter(
    "linkpush_connections_limited_total",
    "Times the accept loops paused because server.max_connections client connections were open.",
);
pub const UPSTREAM_CLIENT_LIMITED_TOTAL: Family = Family::counter(
    "linkpush_upstream_client_limited_total",
    "Upstream requests that waited because their client connection held its whole upstream.max_connections_per_client share.",
);

/// The upstream error kinds shown (at 0) before they first happen: `ProxyError::kind` values
/// with `Side::Upstream` that answer the client 502/504.
const UPSTREAM_ERROR_KINDS: [&str; 4] = [
    "upstream_connect",
    "upstream_request",
    "upstream_timeout",
    "upstream_saturated",
];

/// The client-facing protocol of a request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
        }
    }
}

/// What became of a push, as `linkpush_pushes_total{outcome}` and the access log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// PUSH_PROMISE sent.
    Promised,
    /// The whole pushed response was sent.
    Completed,
    /// The client reset the pushed stream.
    Cancelled,
    /// The asset could not be pushed (upstream error, 4xx/5xx, too large): reset with CANCEL.
    Failed,
}

impl PushOutcome {
    pub const ALL: [PushOutcome; 4] = [
        PushOutcome::Promised,
        PushOutcome::Completed,
        PushOutcome::Cancelled,
        PushOutcome::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Promised => "promised",
            PushOutcome::Completed => "completed",
            PushOutcome::Cancelled => "cancelled",
            PushOutcome::Failed => "failed",
        }
    }
}

/// Where the links of a 103 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintSource {
    Upstream,
    Learned,
}

impl HintSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HintSource::Upstream => "upstream",
            HintSource::Learned => "learned",
        }
    }
}

/// Counts the connection in `linkpush_connections{protocol}` until dropped.
pub type ConnectionGuard = GaugeGuard;

/// Log lines the log writer dropped, process-wide (the writer is set up once, in `main`).
static LOG_LINES_DROPPED: OnceLock<Box<dyn Fn() -> u64 + Send + Sync>> = OnceLock::new();

/// Tells every [`Metrics`] where to read `linkpush_log_lines_dropped_total` from. Once per
/// process; later calls are ignored.
pub fn set_log_lines_dropped(source: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = LOG_LINES_DROPPED.set(Box::new(source));
}

// ===== The registry =====

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    pushes: [Counter; 4],
    skipped: [Counter; SkipReason::ALL.len()],
    learn_skipped: [Counter; LearnSkip::ALL.len()],
    learned_bytes: Gauge,
    tunnels_total: [Counter; 2],
    tunnels: [Gauge; 2],
    connections_limited: Counter,
    upstream_client_limited: Counter,
    pushed_bytes: Counter,
    hints: [Counter; 2],
    upstream_duration: Histogram,
    connections: [Gauge; 2],
    upstream_in_use: Gauge,
    upstream_open: Gauge,
    /// `linkpush_requests_total` handles by protocol and status 100–599, registered on first
    /// use: a request then costs an atomic add, not a label build and a registry lookup.
    requests: [Box<[OnceLock<Counter>]>; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every series that exists from the start (at 0 until something happens).
    pub fn new() -> Self {
        let r = Registry::default();
        let pushes = PushOutcome::ALL.map(|o| r.counter(&PUSHES_TOTAL, &[("outcome", o.as_str())]));
        let skipped =
            SkipReason::ALL.map(|s| r.counter(&PUSH_SKIPPED_TOTAL, &[("reason", s.as_str())]));
        let hints = [HintSource::Upstream, HintSource::Learned]
            .map(|s| r.counter(&EARLY_HINTS_TOTAL, &[("source", s.as_str())]));
        let learn_skipped =
            LearnSkip::ALL.map(|s| r.counter(&LEARN_SKIPPED_TOTAL, &[("reason", s.as_str())]));
        let learned_bytes = r.gauge(&LEARNED_BYTES, &[]);
        let tunnels_total = [Protocol::Http1, Protocol::Http2]
            .map(|p| r.counter(&TUNNELS_TOTAL, &[("protocol", p.as_str())]));
        let tunnels = [Protocol::Http1, Protocol::Http2]
            .map(|p| r.gauge(&TUNNELS, &[("protocol", p.as_str())]));
        let connections_limited = r.counter(&CONNECTIONS_LIMITED_TOTAL, &[]);
        let upstream_client_limited = r.counter(&UPSTREAM_CLIENT_LIMITED_TOTAL, &[]);
        for kind in UPSTREAM_ERROR_KINDS {
            r.counter(&UPSTREAM_ERRORS_TOTAL, &[("kind", kind)]);
        }
        for result in ["success", "failure"] {
            r.counter(&CONFIG_RELOADS_TOTAL, &[("result", result)]);
        }
        let pushed_bytes = r.counter(&PUSHED_BYTES_TOTAL, &[]);
        let upstream_duration = r.histogram(&UPSTREAM_DURATION_SECONDS, &[]);
        let connections = [Protocol::Http1, Protocol::Http2]
            .map(|p| r.gauge(&CONNECTIONS, &[("protocol", p.as_str())]));
        let upstream_in_use = r.gauge(&UPSTREAM_CONNECTIONS, &[("state", "in_use")]);
        let upstream_open = Gauge::default();
        // Idle = open − in use: the pool does not say which of its connections are idle, but
        // every request holding a permit past its connect holds exactly one connection.
        let idle = {
            let (open, in_use) = (upstream_open.clone(), upstream_in_use.clone());
            Arc::new(move || (open.get() - in_use.get()).max(0))
        };
        r.computed(&UPSTREAM_CONNECTIONS, &[("state", "idle")], idle);
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        r.gauge(
            &BUILD_INFO,
            &[("version", env!("CARGO_PKG_VERSION")), ("profile", profile)],
        )
        .set(1);
        let dropped = || {
            LOG_LINES_DROPPED
                .get()
                .map_or(0, |f| i64::try_from(f()).unwrap_or(i64::MAX))
        };
        r.computed(&LOG_LINES_DROPPED_TOTAL, &[], Arc::new(dropped));
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                pushes,
                skipped,
                learn_skipped,
                learned_bytes,
                tunnels_total,
                tunnels,
                connections_limited,
                upstream_client_limited,
                pushed_bytes,
                hints,
                upstream_duration,
                connections,
                upstream_in_use,
                upstream_open,
                requests: [(); 2].map(|_| (100..600).map(|_| OnceLock::new()).collect()),
            }),
        }
    }

    /// The counter of `family` with `labels`, registered on first use. For rare events; keep
    /// the handle when it is on the request path.
    pub fn counter(&self, family: &'static Family, labels: &[(&str, &str)]) -> Counter {
        self.inner.registry.counter(family, labels)
    }

    /// The gauge of `family` with `labels`, registered on first use.
    pub fn gauge(&self, family: &'static Family, labels: &[(&str, &str)]) -> Gauge {
        self.inner.registry.gauge(family, labels)
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn render(&self) -> String {
        self.inner.registry.render()
    }

    pub fn request(&self, protocol: Protocol, status: u16) {
        let register = || {
            self.counter(
                &REQUESTS_TOTAL,
                &[
                    ("protocol", protocol.as_str()),
                    ("status", &status.to_string()),
                ],
            )
        };
        match self.inner.requests[protocol as usize].get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot.get_or_init(register).inc(),
            None => register().inc(),
        }
    }

    /// One upstream failure of `kind` (`ProxyError::kind`): every 502 and 504 the proxy
    /// answers because of its upstream is counted here.
    pub fn upstream_error(&self, kind: &'static str) {
        self.counter(&UPSTREAM_ERRORS_TOTAL, &[("kind", kind)])
            .inc();
    }

    /// Counts a failed TLS handshake in `linkpush_tls_handshake_errors_total{reason}`.
    pub fn tls_handshake_error(&self, reason: crate::listener::tls::HandshakeError) {
        self.counter(&TLS_HANDSHAKE_ERRORS_TOTAL, &[("reason", reason.as_str())])
            .inc();
    }

    /// A request that failed on the client's side (`ProxyError::kind` of a client error).
    pub fn client_error(&self, kind: &'static str) {
        self.counter(&CLIENT_ERRORS_TOTAL, &[("kind", kind)]).inc();
    }

    /// Counts a tunnel in `linkpush_tunnels_total` and in `linkpush_tunnels` until the guard is
    /// dropped.
    pub fn tunnel(&self, protocol: Protocol) -> ConnectionGuard {
        self.inner.tunnels_total[protocol as usize].inc();
        self.inner.tunnels[protocol as usize].hold()
    }

    /// An accept loop paused at `server.max_connections`.
    pub fn connections_limited(&self) {
        self.inner.connections_limited.inc();
    }

    /// An upstream request waited for its client connection's share.
    pub fn upstream_client_limited(&self) {
        self.inner.upstream_client_limited.inc();
    }

    pub fn learn_skipped(&self, reason: LearnSkip) {
        self.inner.learn_skipped[reason as usize].inc();
    }

    /// Sets `linkpush_learned_bytes` to the learned store's accounted size.
    pub fn learned_bytes(&self, bytes: usize) {
        self.inner
            .learned_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn push(&self, outcome: PushOutcome) {
        self.inner.pushes[outcome as usize].inc();
    }

    pub fn push_skipped(&self, reason: SkipReason) {
        let index = SkipReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.inner.skipped[index].inc();
    }

    pub fn pushed_bytes(&self, n: u64) {
        self.inner.pushed_bytes.add(n);
    }

    pub fn early_hint(&self, source: HintSource) {
        self.inner.hints[source as usize].inc();
    }

    pub fn upstream_duration(&self, d: Duration) {
        self.inner.upstream_duration.observe(d.as_secs_f64());
    }

    /// Counts the connection in `linkpush_connections{protocol}` until the guard is dropped.
    pub fn connection(&self, protocol: Protocol) -> ConnectionGuard {
        self.inner.connections[protocol as usize].hold()
    }

    /// Counts a request holding an upstream connection slot until the guard is dropped.
    pub fn upstream_in_use(&self) -> GaugeGuard {
        self.inner.upstream_in_use.hold()
    }

    /// Counts an open upstream connection until the guard is dropped.
    pub fn upstream_connection_open(&self) -> GaugeGuard {
        self.inner.upstream_open.hold()
    }

    /// One configuration reload (SIGHUP), applied or refused.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "success" } else { "failure" };
        self.counter(&CONFIG_RELOADS_TOTAL, &[("result", result)])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exact_lines() {
        let m = Metrics::new();
        m.request(Protocol::Http2, 200);
        m.request(Protocol::Http2, 200);
        m.push(PushOutcome::Promised);
        m.push_skipped(SkipReason::Duplicate);
        m.pushed_bytes(10);
        m.early_hint(HintSource::Learned);
        m.upstream_error("upstream_saturated");
        m.config_reload(false);
        m.learn_skipped(LearnSkip::Vary);
        m.learned_bytes(1234);
        let guard = m.connection(Protocol::Http1);
        let tunnel = m.tunnel(Protocol::Http2);
        m.client_error("client_body");
        let text = m.render();
        for line in [
            "# HELP linkpush_requests_total Client requests answered, by client protocol and response status (499: the client went away).",
            "# TYPE linkpush_requests_total counter",
            "linkpush_requests_total{protocol=\"h2\",status=\"200\"} 2",
            "linkpush_pushes_total{outcome=\"promised\"} 1",
            "linkpush_pushes_total{outcome=\"failed\"} 0",
            "linkpush_push_skipped_total{reason=\"duplicate\"} 1",
            "linkpush_pushed_bytes_total 10",
            "linkpush_early_hints_total{source=\"learned\"} 1",
            "linkpush_connections{protocol=\"http1\"} 1",
            "linkpush_upstream_errors_total{kind=\"upstream_saturated\"} 1",
            "linkpush_upstream_errors_total{kind=\"upstream_connect\"} 0",
            "linkpush_config_reloads_total{result=\"failure\"} 1",
            "linkpush_config_reloads_total{result=\"success\"} 0",
            "linkpush_log_lines_dropped_total 0",
            "linkpush_upstream_connections{state=\"idle\"} 0",
            "linkpush_tunnels_total{protocol=\"h2\"} 1",
            "linkpush_tunnels{protocol=\"h2\"} 1",
            "linkpush_tunnels{protocol=\"http1\"} 0",
            "linkpush_client_errors_total{kind=\"client_body\"} 1",
            "# HELP linkpush_tunnels WebSocket tunnels open now, by client protocol.",
            "linkpush_learn_skipped_total{reason=\"vary\"} 1",
            "linkpush_learn_skipped_total{reason=\"too_large\"} 0",
            "linkpush_learned_bytes 1234",
            "linkpush_connections_limited_total 0",
            "linkpush_upstream_client_limited_total 0",
            "# HELP linkpush_learned_bytes Bytes the learned-routes store accounts for (cleaned links, keys, overhead); at most learn.max_bytes.",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(guard);
        drop(tunnel);
        assert!(
            m.render()
                .lines()
                .any(|l| l == "linkpush_connections{protocol=\"http1\"} 0")
        );
    }

    #[test]
    fn every_family_has_one_help_and_one_type_line() {
        let m = Metrics::new();
        m.request(Protocol::Http1, 404);
        let text = m.render();
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let count = families.len();
        families.dedup();
        assert_eq!(families.len(), count, "a TYPE line twice:\n{text}");
        for family in families {
            let help = format!("# HELP {family} ");
            assert_eq!(
                text.lines().filter(|l| l.starts_with(&help)).count(),
                1,
                "{family}:\n{text}"
            );
        }
    }

    #[test]
    fn upstream_pool_gauges_follow_the_guards() {
        let m = Metrics::new();
        let open: Vec<_> = (0..3).map(|_| m.upstream_connection_open()).collect();
        let in_use = m.upstream_in_use();
        let text = m.render();
        assert!(
            text.contains("linkpush_upstream_connections{state=\"idle\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("linkpush_upstream_connections{state=\"in_use\"} 1\n"),
            "{text}"
        );
        drop((open, in_use));
        let text = m.render();
        assert!(
            text.contains("linkpush_upstream_connections{state=\"idle\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("linkpush_upstream_connections{state=\"in_use\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let text = Metrics::new().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("linkpush_build_info{"))
            .unwrap_or_else(|| panic!("no build info in\n{text}"));
        assert!(
            line.starts_with(&format!(
                "linkpush_build_info{{version=\"{}\",",
                env!("CARGO_PKG_VERSION")
            )),
            "{line}"
        );
        assert!(line.ends_with("} 1"), "{line}");
    }

    #[test]
    fn upstream_duration_is_a_histogram() {
        let m = Metrics::new();
        m.upstream_duration(Duration::from_millis(3));
        m.upstream_duration(Duration::from_secs(60));
        let text = m.render();
        for line in [
            "# TYPE linkpush_upstream_duration_seconds histogram",
            "linkpush_upstream_duration_seconds_bucket{le=\"0.0025\"} 0",
            "linkpush_upstream_duration_seconds_bucket{le=\"0.005\"} 1",
            "linkpush_upstream_duration_seconds_bucket{le=\"30\"} 1",
            "linkpush_upstream_duration_seconds_bucket{le=\"+Inf\"} 2",
            "linkpush_upstream_duration_seconds_sum 60.003",
            "linkpush_upstream_duration_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
