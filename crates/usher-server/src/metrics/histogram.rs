//! A histogram with fixed bucket bounds that the hot paths update with relaxed atomics.
//!
//! prometheus-client's own histogram takes a lock on every observation; this one is
//! encoded through prometheus-client ([`EncodeMetric`]) but observed with atomics only.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram with fixed bucket bounds, updated with atomics only.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts: `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`;
    /// the last slot counts those above every bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of the observations, in units of `1 / scale`.
    sum: AtomicU64,
    scale: f64,
}

/// Bucket bounds (seconds) for request and commit latencies: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Bucket bounds for batch sizes (commands per commit).
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

impl Histogram {
    /// A histogram over `bounds` (ascending) whose sum is kept to `1 / scale` precision.
    pub fn new(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram in seconds (sum kept in nanoseconds).
    pub fn latency() -> Self {
        Histogram::new(LATENCY_BUCKETS, 1e9)
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // Each bucket is read once and the count is their total, so the buckets and the
        // count always agree within one scrape.
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.buckets.iter().map(|n| n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_agree_with_the_count() {
        let h = Histogram::new(&[1.0, 2.0], 10.0);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let out = super::super::encode::encoded("x", h);
        assert!(out.contains("x_bucket{le=\"1.0\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2.0\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 6.0\n"), "{out}");
    }
}
