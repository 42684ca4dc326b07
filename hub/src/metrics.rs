//! Prometheus exposition shared by both daemons: `socer_build_info`, the latency histogram type
//! (fixed buckets in seconds) and the encoding of a registry as Prometheus text 0.0.4.
//!
//! Collectors read the daemons' own counters at scrape time; nothing here keeps state of its own
//! or does I/O, and a scrape never allocates per series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, seconds: 100 µs to 10 s (a Modbus TCP read on a LAN takes
/// a millisecond or less, an RTU read of a few registers at 9600 Bd tens of ms, a store commit
/// under load up to seconds).
pub const LATENCY_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BUCKETS: usize = LATENCY_BUCKETS_S.len();

fn bucket_of(s: f64) -> usize {
    LATENCY_BUCKETS_S
        .iter()
        .position(|&b| s <= b)
        .unwrap_or(BUCKETS)
}

/// A latency distribution over [`LATENCY_BUCKETS_S`] (kept under its owner's lock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    /// Observations per bucket (not cumulative); the last one is above the largest bound.
    counts: [u64; BUCKETS + 1],
    sum_s: f64,
}

impl Latencies {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.counts[bucket_of(s)] += 1;
        self.sum_s += s;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_s(&self) -> f64 {
        self.sum_s
    }

    /// Encode as one histogram (`_bucket`, `_sum`, `_count`).
    pub fn encode(&self, enc: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); BUCKETS + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            *slot = (
                LATENCY_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY),
                self.counts[i],
            );
        }
        enc.encode_histogram::<NoLabelSet>(self.sum_s, self.count(), &buckets, None)
    }
}

/// [`Latencies`] shared between threads without a lock.
#[derive(Debug, Default)]
pub struct AtomicLatencies {
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl AtomicLatencies {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(d.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Latencies {
        let mut l = Latencies {
            sum_s: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            ..Default::default()
        };
        for (c, a) in l.counts.iter_mut().zip(&self.counts) {
            *c = a.load(Ordering::Relaxed);
        }
        l
    }

    /// The longest observation so far, seconds.
    pub fn max_s(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// One family: its descriptor (HELP, TYPE), then `each` writes its samples. `name` is the full
/// name; a counter's `_total` is added by the encoder, so counters are named without it.
pub fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    each: impl FnOnce(&mut MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    each(&mut m)
}

/// One sample of a counter with labels.
pub fn counter(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: u64,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// One sample of a counter of seconds (or another fractional unit) with labels.
pub fn counter_f64(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: f64,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// One sample of a gauge with labels.
pub fn gauge(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: impl prometheus_client::encoding::EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// `socer_build_info{daemon, version, arch, os} 1`.
#[derive(Debug)]
pub struct BuildInfo {
    pub daemon: &'static str,
}

impl Collector for BuildInfo {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            &mut enc,
            "socer_build_info",
            "The running socer build: version, daemon, target architecture and OS (always 1).",
            MetricType::Gauge,
            |m| {
                gauge(
                    m,
                    &[
                        ("version", env!("CARGO_PKG_VERSION")),
                        ("daemon", self.daemon),
                        ("arch", std::env::consts::ARCH),
                        ("os", std::env::consts::OS),
                    ],
                    1u64,
                )
            },
        )
    }
}

/// A registry of `collectors` (a daemon's own, then the HTTP server's) and build info.
pub fn registry(daemon: &'static str, collectors: Vec<Box<dyn Collector>>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(BuildInfo { daemon }));
    for c in collectors {
        r.register_collector(c);
    }
    r
}

/// The registry as Prometheus text 0.0.4 (an encoding error, which only a collector's own
/// `fmt::Error` can cause, leaves what was written before it).
pub fn render(registry: &Registry) -> String {
    let mut s = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::prometheus_text::encode(&mut s, registry).is_err() {
        tracing::warn!("a metrics collector failed; /metrics is partial");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket_and_keep_sub_millisecond_sums() {
        let mut l = Latencies::default();
        l.observe(Duration::from_micros(300));
        l.observe(Duration::from_micros(300));
        l.observe(Duration::from_secs(60));
        assert_eq!(l.count(), 3);
        assert!((l.sum_s() - 60.0006).abs() < 1e-9, "{}", l.sum_s());
        assert_eq!(l.counts[2], 2, "300 µs is in the 0.5 ms bucket");
        assert_eq!(l.counts[BUCKETS], 1, "60 s is above the largest bound");
        let a = AtomicLatencies::default();
        a.observe(Duration::from_micros(300));
        a.observe(Duration::from_millis(20));
        assert_eq!(a.snapshot().count(), 2);
        assert!((a.max_s() - 0.02).abs() < 1e-12);
    }

    #[derive(Debug)]
    struct One(Latencies);
    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            family(
                &mut enc,
                "socer_test_seconds",
                "A test.",
                MetricType::Histogram,
                |m| {
                    let mut m = m.encode_family(&[("meter", "a\"b")])?;
                    self.0.encode(&mut m)
                },
            )?;
            family(
                &mut enc,
                "socer_test_things",
                "Things.",
                MetricType::Counter,
                |m| counter(m, &[("site", "s")], 7),
            )
        }
    }

    #[test]
    fn the_text_has_help_type_cumulative_buckets_and_build_info() {
        let mut l = Latencies::default();
        l.observe(Duration::from_micros(300));
        l.observe(Duration::from_millis(3));
        let text = render(&registry("site", vec![Box::new(One(l))]));
        assert!(text.contains("# HELP socer_build_info "), "{text}");
        assert!(text.contains("# TYPE socer_build_info gauge\n"), "{text}");
        assert!(text.contains(&format!(
            "socer_build_info{{version=\"{}\",daemon=\"site\",",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("# TYPE socer_test_seconds histogram\n"));
        assert!(
            text.contains("socer_test_seconds_bucket{meter=\"a\\\"b\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("socer_test_seconds_bucket{meter=\"a\\\"b\",le=\"0.005\"} 2\n"));
        assert!(text.contains("socer_test_seconds_bucket{meter=\"a\\\"b\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("socer_test_seconds_count{meter=\"a\\\"b\"} 2\n"));
        assert!(text.contains("# TYPE socer_test_things_total counter\n"));
        assert!(text.contains("socer_test_things_total{site=\"s\"} 7\n"));
    }
}
