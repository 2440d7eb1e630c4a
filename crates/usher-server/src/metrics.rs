//! Server metrics: counters and histograms the hot paths bump with relaxed atomics,
//! encoded for `/metrics` by prometheus-client, the Prometheus project's Rust client.
//!
//! The hot paths (every request, every commit, every accept) must cost a few atomic adds
//! and never a lock or a map lookup, so the metrics are our own types (see `encode` and
//! `histogram`) that implement prometheus-client's `EncodeMetric`; it writes the families,
//! the labels and the text format. Several servers run in one test process, so each has
//! its own [`Metrics`] rather than a process-global recorder (the `metrics` crate's model)
//! that would mix their figures. The seat gauges are not kept here at all: a scrape reads
//! them from the ledger in one consistent view (see `http`), so they can never drift from
//! the truth.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};

mod encode;
mod histogram;
mod labels;

use encode::{ByLabel, Counter};
pub use encode::{Label, Samples, families};
pub use histogram::{BATCH_BUCKETS, Histogram, LATENCY_BUCKETS};
pub use labels::{RejectReason, RequestKind, UdpResult};

/// Warnings about refusals, at most one per reason every [`REFUSAL_WARN_EVERY`], so a
/// flood of refused peers cannot flood the log; each warning says how many refusals of
/// its reason went unreported since the last one.
#[derive(Debug, Default)]
struct RefusalWarnings {
    /// When each reason was last reported (ms since the metrics were made, plus one).
    last: [AtomicU64; THROTTLED + 1],
    /// Refusals of each reason not reported since.
    quiet: [AtomicU64; THROTTLED + 1],
}

/// The place of throttled requests among [`RefusalWarnings`]' reasons: after the refusals.
const THROTTLED: usize = <RejectReason as Label>::VALUES.len();

/// The shortest time between two warnings of one refusal reason.
pub const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's hot-path metrics. One per server, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: ByLabel<RequestKind, Histogram>,
    /// Time to write and fsync one group commit.
    pub store_commit: Histogram,
    /// Commands made durable by one commit (the group-commit factor).
    pub store_batch: Histogram,
    connections: Gauge,
    rejected: ByLabel<RejectReason, Counter>,
    frames_rejected: Counter,
    requests_throttled: Counter,
    udp: ByLabel<UdpResult, Counter>,
    admin_auth_failures: Counter,
    refusal_warnings: RefusalWarnings,
    /// Why the store cannot commit, while it cannot (new grants are refused meanwhile).
    store_unavailable: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Zeroed metrics; uptime counts from now.
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            requests: ByLabel::new(Histogram::latency),
            store_commit: Histogram::latency(),
            store_batch: Histogram::new(BATCH_BUCKETS, 1.0),
            connections: Gauge::default(),
            rejected: ByLabel::new(Counter::default),
            frames_rejected: Counter::default(),
            requests_throttled: Counter::default(),
            udp: ByLabel::new(Counter::default),
            admin_auth_failures: Counter::default(),
            refusal_warnings: RefusalWarnings::default(),
            store_unavailable: std::sync::Mutex::new(None),
        }
    }

    /// Records that the store cannot commit (with why), or (`None`) that it can again.
    pub fn set_store_unavailable(&self, why: Option<String>) {
        *self
            .store_unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Why the store cannot commit, if it cannot.
    pub fn store_unavailable(&self) -> Option<String> {
        self.store_unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records how long a request of `kind` took, from being read to its answer being ready.
    pub fn request_done(&self, kind: RequestKind, took: Duration) {
        self.requests.get(kind).observe_duration(took);
    }

    /// Counts a connection in; the guard counts it out when dropped.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.clone())
    }

    /// Client connections open now.
    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    /// Counts a refused connection and warns about it, naming `peer` and `detail` (at most
    /// once per reason every [`REFUSAL_WARN_EVERY`]; see `RefusalWarnings`).
    pub fn connection_rejected(
        &self,
        why: RejectReason,
        peer: &dyn std::fmt::Display,
        detail: &str,
    ) {
        self.rejected.get(why).inc();
        self.warn_refusal(Some(why), peer, detail);
    }

    /// Warns about a refusal for `why`, or (`None`) a throttled request.
    fn warn_refusal(&self, why: Option<RejectReason>, peer: &dyn std::fmt::Display, detail: &str) {
        let w = &self.refusal_warnings;
        let i = why.map_or(THROTTLED, Label::index);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = w.last[i].load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_WARN_EVERY.as_millis() as u64;
        if !due
            || w.last[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            w.quiet[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let unreported = w.quiet[i].swap(0, Ordering::Relaxed);
        tracing::warn!(
            %peer,
            reason = why.map_or("rate_limited", Label::as_str),
            unreported,
            "client refused: {detail} (further refusals for this reason are reported at most \
             every {}s; `unreported` counts those since the last report)",
            REFUSAL_WARN_EVERY.as_secs()
        );
    }

    /// Counts a request held back by its connection's rate limit, and warns about it as
    /// about a refusal (it is counted under `usher_requests_throttled_total`).
    pub fn request_throttled(&self, peer: &dyn std::fmt::Display, limit: u32) {
        self.requests_throttled.inc();
        let detail = format!("requests faster than the limit of {limit}/s are held back");
        self.warn_refusal(None, peer, &detail);
    }

    /// Counts a wrong admin API token.
    pub fn admin_auth_failed(&self) {
        self.admin_auth_failures.inc();
    }

    /// Counts a datagram on the UDP port by what became of it.
    pub fn udp(&self, result: UdpResult) {
        self.udp.get(result).inc();
    }

    /// Counts a frame refused as too large or malformed.
    pub fn frame_rejected(&self) {
        self.frames_rejected.inc();
    }
}

/// The hot-path families and the uptime, as of the scrape.
impl Collector for Metrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let available = ConstGauge::new(u32::from(self.store_unavailable().is_none()));
        let uptime = ConstGauge::new(self.uptime().as_secs());
        families(
            encoder,
            &[
                (
                    "usher_request_duration_seconds",
                    "Time from reading a protocol request to its answer being ready (durable).",
                    &self.requests,
                ),
                (
                    "usher_store_commit_duration_seconds",
                    "Time to write and fsync one group commit.",
                    &self.store_commit,
                ),
                (
                    "usher_store_batch_size",
                    "Commands made durable by one commit.",
                    &self.store_batch,
                ),
                (
                    "usher_store_available",
                    "1 while the store commits; 0 while it cannot (a full disk), when new grants are refused.",
                    &available,
                ),
                (
                    "usher_connections",
                    "Client connections open now.",
                    &self.connections,
                ),
                (
                    "usher_connections_rejected_total",
                    "Client connections refused, by reason.",
                    &self.rejected,
                ),
                (
                    "usher_frames_rejected_total",
                    "Frames refused as too large or malformed (each ends its connection).",
                    &self.frames_rejected,
                ),
                (
                    "usher_requests_throttled_total",
                    "Requests a connection sent faster than its rate limit, held back until allowed.",
                    &self.requests_throttled,
                ),
                (
                    "usher_admin_auth_failures_total",
                    "Admin API requests with a wrong bearer token.",
                    &self.admin_auth_failures,
                ),
                (
                    "usher_udp_datagrams_total",
                    "Datagrams on the UDP port by result: accepted keepalives and answered discovery, \
             and every refusal by reason (refused datagrams are never answered).",
                    &self.udp,
                ),
                (
                    "usher_uptime_seconds",
                    "Seconds since the server started.",
                    &uptime,
                ),
            ],
        )
    }
}

/// Counts one connection as open while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(std::sync::Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refusals_are_counted_each_and_warned_about_once_per_reason_and_interval() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let m = Metrics::new();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                let peer = format!("192.0.2.{i}:4000");
                m.connection_rejected(RejectReason::PerAddressLimit, &peer, "too many");
            }
            m.connection_rejected(RejectReason::NotAllowed, &"198.51.100.7:1", "not allowed");
        });
        assert_eq!(m.rejected.get(RejectReason::PerAddressLimit).get(), 100);
        assert_eq!(m.rejected.get(RejectReason::NotAllowed).get(), 1);
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "one warning per reason: {log}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("peer=192.0.2.0:4000")
                && lines[0].contains("reason=\"per_address_limit\"")
                && lines[0].contains("too many"),
            "{log}"
        );
        assert!(lines[1].contains("peer=198.51.100.7:1"), "{log}");
        assert_eq!(
            m.refusal_warnings.quiet[RejectReason::PerAddressLimit.index()].load(Ordering::Relaxed),
            99,
            "the next warning reports the 99 left unreported"
        );
    }
}
