//! Metric names in one place, and small record helpers.
//!
//! Each [`Metrics`] owns its own Prometheus registry rather than the process-global recorder, so
//! that several proxies in one process (tests, `linkpush demo`) never mix their numbers. Handles
//! for fixed label sets are registered once, so recording on the hot path is an atomic add.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often recorded histogram samples are drained (the exporter's own default).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::learn::LearnSkip;
use crate::push::policy::SkipReason;

pub const REQUESTS_TOTAL: &str = "linkpush_requests_total";
pub const PUSHES_TOTAL: &str = "linkpush_pushes_total";
pub const PUSH_SKIPPED_TOTAL: &str = "linkpush_push_skipped_total";
pub const PUSHED_BYTES_TOTAL: &str = "linkpush_pushed_bytes_total";
pub const EARLY_HINTS_TOTAL: &str = "linkpush_early_hints_total";
pub const UPSTREAM_DURATION_SECONDS: &str = "linkpush_upstream_duration_seconds";
pub const CONNECTIONS: &str = "linkpush_connections";
pub const UPSTREAM_ERRORS_TOTAL: &str = "linkpush_upstream_errors_total";
pub const TLS_HANDSHAKE_ERRORS_TOTAL: &str = "linkpush_tls_handshake_errors_total";
const TLS_HANDSHAKE_ERRORS_HELP: &str = "TLS handshakes that failed, by reason (timeout, eof, protocol, certificate, alert, io, other).";
pub const CLIENT_ERRORS_TOTAL: &str = "linkpush_client_errors_total";
const CLIENT_ERRORS_HELP: &str = "Requests that failed because of the client (bad request, aborted or malformed body, unsupported protocol), by kind.";
pub const TUNNELS_TOTAL: &str = "linkpush_tunnels_total";
const TUNNELS_TOTAL_HELP: &str =
    "WebSocket tunnels opened (HTTP/1.1 Upgrade or HTTP/2 extended CONNECT), by client protocol.";
pub const TUNNELS: &str = "linkpush_tunnels";
const TUNNELS_HELP: &str = "WebSocket tunnels open now, by client protocol.";
pub const LEARN_SKIPPED_TOTAL: &str = "linkpush_learn_skipped_total";
const LEARN_SKIPPED_HELP: &str = "Final responses whose links were not learned, by reason (RFC 9111 shared-cache rules, learn.exclude, learn.max_bytes).";
pub const LEARNED_BYTES: &str = "linkpush_learned_bytes";
const LEARNED_BYTES_HELP: &str = "Bytes the learned-routes store accounts for (cleaned links, keys, overhead); at most learn.max_bytes.";
/// HELP: Times the accept loops paused because server.max_connections client connections were open.
pub const CONNECTIONS_LIMITED_TOTAL: &str = "linkpush_connections_limited_total";
/// HELP: Upstream requests that waited because their client connection held its whole upstream.max_connections_per_client share.
pub const UPSTREAM_CLIENT_LIMITED_TOTAL: &str = "linkpush_upstream_client_limited_total";

const METADATA: Metadata<'static> = Metadata::new("linkpush", Level::INFO, Some("linkpush"));

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

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pushes: [Counter; 4],
    skipped: [Counter; SkipReason::ALL.len()],
    learn_skipped: [Counter; LearnSkip::ALL.len()],
    learned_bytes: Gauge,
    pushed_bytes: Counter,
    hints: [Counter; 2],
    upstream_duration: Histogram,
    connections: [Gauge; 2],
    tunnels_total: [Counter; 2],
    tunnels: [Gauge; 2],
    connections_limited: Counter,
    upstream_client_limited: Counter,
    /// `linkpush_requests_total` handles by protocol and status 100–599, registered on first
    /// use: a request then costs an atomic add, not a key build and a registry lookup.
    requests: [Box<[OnceLock<Counter>]>; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // A histogram, not the exporter's default summary: SPEC §7 asks for a histogram.
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full(UPSTREAM_DURATION_SECONDS.to_string()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        ) {
            Ok(b) => b,
            // Only fails on an empty bucket list, which the constant above is not.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let counter = |name: &'static str, label: (&'static str, &'static str)| {
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new(label.0, label.1)]),
                &METADATA,
            )
        };
        let pushes = PushOutcome::ALL.map(|o| counter(PUSHES_TOTAL, ("outcome", o.as_str())));
        let skipped = SkipReason::ALL.map(|r| counter(PUSH_SKIPPED_TOTAL, ("reason", r.as_str())));
        let learn_skipped =
            LearnSkip::ALL.map(|r| counter(LEARN_SKIPPED_TOTAL, ("reason", r.as_str())));
        recorder.describe_counter(LEARN_SKIPPED_TOTAL.into(), None, LEARN_SKIPPED_HELP.into());
        let learned_bytes = recorder.register_gauge(&Key::from_name(LEARNED_BYTES), &METADATA);
        recorder.describe_gauge(LEARNED_BYTES.into(), None, LEARNED_BYTES_HELP.into());
        let hints = [HintSource::Upstream, HintSource::Learned]
            .map(|s| counter(EARLY_HINTS_TOTAL, ("source", s.as_str())));
        let pushed_bytes =
            recorder.register_counter(&Key::from_name(PUSHED_BYTES_TOTAL), &METADATA);
        let upstream_duration =
            recorder.register_histogram(&Key::from_name(UPSTREAM_DURATION_SECONDS), &METADATA);
        let connections = [Protocol::Http1, Protocol::Http2].map(|p| {
            recorder.register_gauge(
                &Key::from_parts(CONNECTIONS, vec![Label::new("protocol", p.as_str())]),
                &METADATA,
            )
        });
        let protocol = |name: &'static str| {
            [Protocol::Http1, Protocol::Http2]
                .map(|p| Key::from_parts(name, vec![Label::new("protocol", p.as_str())]))
        };
        let tunnels_total =
            protocol(TUNNELS_TOTAL).map(|k| recorder.register_counter(&k, &METADATA));
        let tunnels = protocol(TUNNELS).map(|k| recorder.register_gauge(&k, &METADATA));
        recorder.describe_counter(CLIENT_ERRORS_TOTAL.into(), None, CLIENT_ERRORS_HELP.into());
        recorder.describe_counter(TUNNELS_TOTAL.into(), None, TUNNELS_TOTAL_HELP.into());
        recorder.describe_gauge(TUNNELS.into(), None, TUNNELS_HELP.into());
        recorder.describe_counter(
            TLS_HANDSHAKE_ERRORS_TOTAL.into(),
            None,
            TLS_HANDSHAKE_ERRORS_HELP.into(),
        );
        let connections_limited =
            recorder.register_counter(&Key::from_name(CONNECTIONS_LIMITED_TOTAL), &METADATA);
        let upstream_client_limited =
            recorder.register_counter(&Key::from_name(UPSTREAM_CLIENT_LIMITED_TOTAL), &METADATA);
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                pushes,
                skipped,
                learn_skipped,
                learned_bytes,
                pushed_bytes,
                hints,
                upstream_duration,
                connections,
                tunnels_total,
                tunnels,
                connections_limited,
                upstream_client_limited,
                requests: [(); 2].map(|_| (100..600).map(|_| OnceLock::new()).collect()),
            }),
        }
    }

    /// Drains recorded histogram samples into their buckets. The exporter keeps every sample
    /// until then, so without a periodic upkeep (and no scraper) memory grows with every
    /// request; `Server` runs this every few seconds.
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.inner.handle.run_upkeep();
        self.inner.handle.render()
    }

    pub fn request(&self, protocol: Protocol, status: u16) {
        let register = || {
            let key = Key::from_parts(
                REQUESTS_TOTAL,
                vec![
                    Label::new("protocol", protocol.as_str()),
                    Label::new("status", status.to_string()),
                ],
            );
            self.inner.recorder.register_counter(&key, &METADATA)
        };
        match self.inner.requests[protocol as usize].get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }

    pub fn upstream_error(&self, kind: &'static str) {
        let key = Key::from_parts(UPSTREAM_ERRORS_TOTAL, vec![Label::new("kind", kind)]);
        self.inner
            .recorder
            .register_counter(&key, &METADATA)
            .increment(1);
    }

    /// Counts a failed TLS handshake in `linkpush_tls_handshake_errors_total{reason}`.
    pub fn tls_handshake_error(&self, reason: crate::listener::tls::HandshakeError) {
        let key = Key::from_parts(
            TLS_HANDSHAKE_ERRORS_TOTAL,
            vec![Label::new("reason", reason.as_str())],
        );
        self.inner
            .recorder
            .register_counter(&key, &METADATA)
            .increment(1);
    }

    /// A request that failed on the client's side (`ProxyError::kind` of a client error).
    pub fn client_error(&self, kind: &'static str) {
        let key = Key::from_parts(CLIENT_ERRORS_TOTAL, vec![Label::new("kind", kind)]);
        self.inner
            .recorder
            .register_counter(&key, &METADATA)
            .increment(1);
    }

    /// Counts a tunnel in `linkpush_tunnels_total` and in `linkpush_tunnels` until the guard is
    /// dropped.
    pub fn tunnel(&self, protocol: Protocol) -> ConnectionGuard {
        self.inner.tunnels_total[protocol as usize].increment(1);
        let gauge = self.inner.tunnels[protocol as usize].clone();
        gauge.increment(1.0);
        ConnectionGuard { gauge }
    }

    pub fn push(&self, outcome: PushOutcome) {
        self.inner.pushes[outcome as usize].increment(1);
    }

    pub fn push_skipped(&self, reason: SkipReason) {
        let index = SkipReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.inner.skipped[index].increment(1);
    }

    pub fn learn_skipped(&self, reason: LearnSkip) {
        self.inner.learn_skipped[reason as usize].increment(1);
    }

    /// Sets `linkpush_learned_bytes` to the learned store's accounted size.
    pub fn learned_bytes(&self, bytes: usize) {
        self.inner.learned_bytes.set(bytes as f64);
    }

    pub fn pushed_bytes(&self, n: u64) {
        self.inner.pushed_bytes.increment(n);
    }

    pub fn early_hint(&self, source: HintSource) {
        self.inner.hints[source as usize].increment(1);
    }

    pub fn upstream_duration(&self, d: Duration) {
        self.inner.upstream_duration.record(d.as_secs_f64());
    }

    /// An accept loop paused at `server.max_connections`.
    pub fn connections_limited(&self) {
        self.inner.connections_limited.increment(1);
    }

    /// An upstream request waited for its client connection's share.
    pub fn upstream_client_limited(&self) {
        self.inner.upstream_client_limited.increment(1);
    }

    /// Counts the connection in `linkpush_connections{protocol}` until the guard is dropped.
    pub fn connection(&self, protocol: Protocol) -> ConnectionGuard {
        let gauge = self.inner.connections[protocol as usize].clone();
        gauge.increment(1.0);
        ConnectionGuard { gauge }
    }
}

pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
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
        m.learn_skipped(LearnSkip::Vary);
        m.learned_bytes(1234);
        let guard = m.connection(Protocol::Http1);
        let tunnel = m.tunnel(Protocol::Http2);
        m.client_error("client_body");
        let text = m.render();
        for line in [
            "linkpush_requests_total{protocol=\"h2\",status=\"200\"} 2",
            "linkpush_pushes_total{outcome=\"promised\"} 1",
            "linkpush_pushes_total{outcome=\"failed\"} 0",
            "linkpush_push_skipped_total{reason=\"duplicate\"} 1",
            "linkpush_pushed_bytes_total 10",
            "linkpush_early_hints_total{source=\"learned\"} 1",
            "linkpush_connections{protocol=\"http1\"} 1",
            "linkpush_tunnels_total{protocol=\"h2\"} 1",
            "linkpush_tunnels{protocol=\"h2\"} 1",
            "linkpush_tunnels{protocol=\"http1\"} 0",
            "linkpush_client_errors_total{kind=\"client_body\"} 1",
            "# HELP linkpush_tunnels WebSocket tunnels open now, by client protocol.",
            "linkpush_learn_skipped_total{reason=\"vary\"} 1",
            "linkpush_learn_skipped_total{reason=\"too_large\"} 0",
            "linkpush_learned_bytes 1234",
            "# HELP linkpush_learned_bytes Bytes the learned-routes store accounts for (cleaned links, keys, overhead); at most learn.max_bytes.",
            "linkpush_connections_limited_total 0",
            "linkpush_upstream_client_limited_total 0",
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
    fn upstream_duration_is_a_histogram() {
        let m = Metrics::new();
        m.upstream_duration(Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("# TYPE linkpush_upstream_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("linkpush_upstream_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("linkpush_upstream_duration_seconds_count 1"),
            "{text}"
        );
    }
}
