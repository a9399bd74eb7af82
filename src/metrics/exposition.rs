//! The Prometheus text exposition (format 0.0.4) and the handles behind it: counters, gauges
//! and fixed-bucket histograms as atomics, kept by family and label set in a [`Registry`]. No
//! periodic upkeep: a histogram is an array of bucket counters. `metrics.rs` declares the
//! families and records into them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A metric family: its name, type and HELP text. See the module doc for adding one.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    /// Upper bounds of the buckets, ascending; `+Inf` is implied.
    Histogram(&'static [f64]),
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
        }
    }
    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        buckets: &'static [f64],
    ) -> Family {
        Family {
            name,
            help,
            kind: Kind::Histogram(buckets),
        }
    }
}

/// A monotonic counter series. Cloning shares the series.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge series. Cloning shares the series.
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Adds one until the guard is dropped.
    pub fn hold(&self) -> GaugeGuard {
        self.add(1);
        GaugeGuard(self.clone())
    }
}

/// One unit of a gauge, given back when dropped (an open connection, a held permit).
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// A histogram series with fixed buckets: an observation is two atomic adds and a CAS on the sum.
#[derive(Clone)]
pub struct Histogram(Arc<HistogramInner>);

struct HistogramInner {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let inner = &self.0;
        let slot = inner
            .bounds
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(inner.bounds.len());
        inner.counts[slot].fetch_add(1, Ordering::Relaxed);
        let _ = inner
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// A value computed when `/metrics` is rendered.
pub type Callback = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
enum Value {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Computed(Callback),
}

struct Series {
    family: &'static Family,
    value: Value,
}

/// Every series by (family name, rendered label set): the order `/metrics` shows them in, so
/// a family's series are adjacent and its HELP and TYPE are written once.
#[derive(Default)]
pub struct Registry {
    series: Mutex<BTreeMap<(&'static str, String), Series>>,
}

impl Registry {
    /// The counter of `family` with `labels`, registered on first use.
    pub fn counter(&self, family: &'static Family, labels: &[(&str, &str)]) -> Counter {
        match self.get_or_add(family, labels, || Value::Counter(Counter::default())) {
            Value::Counter(c) => c,
            // A family used as two types: a programming error, recorded nowhere.
            _ => Counter::default(),
        }
    }

    /// The gauge of `family` with `labels`, registered on first use.
    pub fn gauge(&self, family: &'static Family, labels: &[(&str, &str)]) -> Gauge {
        match self.get_or_add(family, labels, || Value::Gauge(Gauge::default())) {
            Value::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The histogram of `family` (its buckets from the family) with `labels`.
    pub fn histogram(&self, family: &'static Family, labels: &[(&str, &str)]) -> Histogram {
        let bounds = match family.kind {
            Kind::Histogram(bounds) => bounds,
            _ => &[],
        };
        match self.get_or_add(family, labels, || Value::Histogram(Histogram::new(bounds))) {
            Value::Histogram(h) => h,
            _ => Histogram::new(bounds),
        }
    }

    /// A series whose value is computed at render time.
    pub fn computed(&self, family: &'static Family, labels: &[(&str, &str)], value: Callback) {
        self.lock().insert(
            (family.name, render_labels(labels)),
            Series {
                family,
                value: Value::Computed(value),
            },
        );
    }

    fn get_or_add(
        &self,
        family: &'static Family,
        labels: &[(&str, &str)],
        new: impl FnOnce() -> Value,
    ) -> Value {
        let mut series = self.lock();
        let entry = series
            .entry((family.name, render_labels(labels)))
            .or_insert_with(|| Series {
                family,
                value: new(),
            });
        entry.value.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(&'static str, String), Series>> {
        // Every critical section is a map insert or a read: a panic cannot leave it half done.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The text exposition of every series, each family with its HELP and TYPE.
    pub fn render(&self) -> String {
        let series = self.lock();
        let mut out = String::with_capacity(4096);
        let mut current: Option<&str> = None;
        for ((name, labels), s) in series.iter() {
            if current != Some(name) {
                current = Some(name);
                let kind = match s.family.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram(_) => "histogram",
                };
                let _ = writeln!(out, "# HELP {name} {}", escape_help(s.family.help));
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            match &s.value {
                Value::Counter(c) => {
                    let _ = writeln!(out, "{name}{labels} {}", c.get());
                }
                Value::Gauge(g) => {
                    let _ = writeln!(out, "{name}{labels} {}", g.get());
                }
                Value::Computed(f) => {
                    let _ = writeln!(out, "{name}{labels} {}", f());
                }
                Value::Histogram(h) => render_histogram(&mut out, name, labels, h),
            }
        }
        out
    }
}

/// `{a="x",b="y"}`, or nothing for no labels; values escaped as the text format requires.
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    // `le` joins the series' own labels: `{a="x",le="0.5"}`.
    let with_le = |le: &str| match labels.strip_suffix('}') {
        Some(open) => format!("{open},le=\"{le}\"}}"),
        None => format!("{{le=\"{le}\"}}"),
    };
    let inner = &h.0;
    let mut cumulative = 0u64;
    for (i, count) in inner.counts.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let le = match inner.bounds.get(i) {
            Some(bound) => bound.to_string(),
            None => "+Inf".to_owned(),
        };
        let _ = writeln!(out, "{name}_bucket{} {cumulative}", with_le(&le));
    }
    let sum = f64::from_bits(inner.sum.load(Ordering::Relaxed));
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(render_labels(&[]), "");
        assert_eq!(
            render_labels(&[("a", "x\"y\\z\n"), ("b", "1")]),
            "{a=\"x\\\"y\\\\z\\n\",b=\"1\"}"
        );
    }

    #[test]
    fn a_family_has_one_help_and_type_and_labelled_histograms_keep_their_labels() {
        const H: Family = Family::histogram("t_seconds", "Help \\ with\nnewline.", &[0.5]);
        const C: Family = Family::counter("t_total", "Things.");
        let r = Registry::default();
        r.histogram(&H, &[("k", "v")]).observe(0.25);
        r.counter(&C, &[("k", "a")]).inc();
        r.counter(&C, &[("k", "b")]).add(2);
        assert_eq!(
            r.render(),
            "# HELP t_seconds Help \\\\ with\\nnewline.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{k=\"v\",le=\"0.5\"} 1\nt_seconds_bucket{k=\"v\",le=\"+Inf\"} 1\n\
             t_seconds_sum{k=\"v\"} 0.25\nt_seconds_count{k=\"v\"} 1\n\
             # HELP t_total Things.\n# TYPE t_total counter\nt_total{k=\"a\"} 1\nt_total{k=\"b\"} 2\n"
        );
    }
}
