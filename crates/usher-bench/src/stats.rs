//! Latency percentiles and throughput.

use std::time::Duration;

/// What one run of a client pattern measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Operations completed.
    pub ops: usize,
    /// Operations per second over the whole run.
    pub ops_per_s: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
}

impl Measured {
    /// Summarises per-operation latencies (µs) collected over `elapsed`.
    pub fn from_latencies(mut latencies: Vec<u64>, elapsed: Duration) -> Measured {
        latencies.sort_unstable();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Measured {
            ops: latencies.len(),
            ops_per_s: latencies.len() as f64 / secs,
            p50_us: percentile(&latencies, 50.0),
            p99_us: percentile(&latencies, 99.0),
            p999_us: percentile(&latencies, 99.9),
        }
    }
}

/// The `p`th percentile of sorted samples by the nearest-rank method (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 99.9), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7], 99.9), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn throughput_is_ops_over_time() {
        let m = Measured::from_latencies(vec![3, 1, 2, 4], Duration::from_secs(2));
        assert_eq!(m.ops, 4);
        assert_eq!(m.ops_per_s, 2.0);
        assert_eq!(m.p50_us, 2.0);
    }
}
