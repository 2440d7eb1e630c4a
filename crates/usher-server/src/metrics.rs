//! Server metrics: counters and histograms the hot paths bump with relaxed atomics, and the
//! Prometheus text exposition that `/metrics` serves.
//!
//! Why hand-written rather than a metrics crate: the hot paths (every request, every
//! commit, every accept) must cost a few atomic adds and never a lock or a map lookup, and
//! several servers run in one test process, so a process-global recorder (the `metrics`
//! crate's model) would mix their figures. The seat gauges are not kept here at all: a
//! scrape reads them from the ledger in one consistent view (see `http`), so they can
//! never drift from the truth. The text format itself is small and stable (version 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod histogram;
mod labels;

pub use histogram::{BATCH_BUCKETS, Histogram, LATENCY_BUCKETS};
pub use labels::{RejectReason, RequestKind, UdpResult};

/// Warnings about refusals, at most one per reason every [`REFUSAL_WARN_EVERY`], so a
/// flood of refused peers cannot flood the log; each warning says how many refusals of
/// its reason went unreported since the last one.
#[derive(Debug, Default)]
struct RefusalWarnings {
    /// When each reason was last reported (ms since the metrics were made, plus one).
    last: [AtomicU64; RejectReason::ALL.len()],
    /// Refusals of each reason not reported since.
    quiet: [AtomicU64; RejectReason::ALL.len()],
}

/// The shortest time between two warnings of one refusal reason.
pub const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's hot-path metrics. One per server, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: [Histogram; RequestKind::ALL.len()],
    /// Time to write and fsync one group commit.
    pub store_commit: Histogram,
    /// Commands made durable by one commit (the group-commit factor).
    pub store_batch: Histogram,
    connections: AtomicI64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    frames_rejected: AtomicU64,
    requests_throttled: AtomicU64,
    udp: [AtomicU64; UdpResult::ALL.len()],
    admin_auth_failures: AtomicU64,
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
            requests: std::array::from_fn(|_| Histogram::latency()),
            store_commit: Histogram::latency(),
            store_batch: Histogram::new(BATCH_BUCKETS, 1.0),
            connections: AtomicI64::new(0),
            rejected: Default::default(),
            frames_rejected: AtomicU64::new(0),
            requests_throttled: AtomicU64::new(0),
            udp: Default::default(),
            admin_auth_failures: AtomicU64::new(0),
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
        let i = RequestKind::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("ALL lists every kind");
        self.requests[i].observe_duration(took);
    }

    /// Counts a connection in; the guard counts it out when dropped.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Client connections open now.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a refused connection and warns about it, naming `peer` and `detail` (at most
    /// once per reason every [`REFUSAL_WARN_EVERY`]; see [`RefusalWarnings`]).
    pub fn connection_rejected(
        &self,
        why: RejectReason,
        peer: &dyn std::fmt::Display,
        detail: &str,
    ) {
        self.rejected[why.index()].fetch_add(1, Ordering::Relaxed);
        self.warn_refusal(why, peer, detail);
    }

    /// Connections refused for `why` so far.
    pub fn rejected_count(&self, why: RejectReason) -> u64 {
        self.rejected[why.index()].load(Ordering::Relaxed)
    }

    fn warn_refusal(&self, why: RejectReason, peer: &dyn std::fmt::Display, detail: &str) {
        let w = &self.refusal_warnings;
        let i = why.index();
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
            reason = why.as_str(),
            unreported,
            "client refused: {detail} (further refusals for this reason are reported at most \
             every {}s; `unreported` counts those since the last report)",
            REFUSAL_WARN_EVERY.as_secs()
        );
    }

    /// Counts a request held back by its connection's rate limit, and warns about it as
    /// about a refusal (it is counted under `usher_requests_throttled_total`).
    pub fn request_throttled(&self, peer: &dyn std::fmt::Display, limit: u32) {
        self.requests_throttled.fetch_add(1, Ordering::Relaxed);
        let detail = format!("requests faster than the limit of {limit}/s are held back");
        self.warn_refusal(RejectReason::RateLimited, peer, &detail);
    }

    /// Counts a wrong admin API token.
    pub fn admin_auth_failed(&self) {
        self.admin_auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a datagram on the UDP port by what became of it.
    pub fn udp(&self, result: UdpResult) {
        let i = UdpResult::ALL
            .iter()
            .position(|&r| r == result)
            .expect("ALL lists every result");
        self.udp[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams counted with `result` so far.
    pub fn udp_count(&self, result: UdpResult) -> u64 {
        let i = UdpResult::ALL
            .iter()
            .position(|&r| r == result)
            .expect("ALL lists every result");
        self.udp[i].load(Ordering::Relaxed)
    }

    /// Counts a frame refused as too large or malformed.
    pub fn frame_rejected(&self) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends this struct's families to `out` in the text exposition format.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "usher_request_duration_seconds",
            "histogram",
            "Time from reading a protocol request to its answer being ready (durable).",
        );
        for (kind, h) in RequestKind::ALL.iter().zip(&self.requests) {
            h.render(
                out,
                "usher_request_duration_seconds",
                &format!("kind=\"{}\"", kind.as_str()),
            );
        }
        family(
            out,
            "usher_store_commit_duration_seconds",
            "histogram",
            "Time to write and fsync one group commit.",
        );
        self.store_commit
            .render(out, "usher_store_commit_duration_seconds", "");
        family(
            out,
            "usher_store_batch_size",
            "histogram",
            "Commands made durable by one commit.",
        );
        self.store_batch.render(out, "usher_store_batch_size", "");
        family(
            out,
            "usher_store_available",
            "gauge",
            "1 while the store commits; 0 while it cannot (a full disk), when new grants are refused.",
        );
        let available = u8::from(self.store_unavailable().is_none());
        let _ = writeln!(out, "usher_store_available {available}");
        family(
            out,
            "usher_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "usher_connections {}", self.connections());
        family(
            out,
            "usher_connections_rejected_total",
            "counter",
            "Client connections refused, by reason.",
        );
        // Rate-limited requests have their own family (they are held back, not refused).
        let refusals = RejectReason::ALL
            .iter()
            .filter(|&&r| r != RejectReason::RateLimited);
        for &why in refusals {
            let _ = writeln!(
                out,
                "usher_connections_rejected_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.rejected_count(why)
            );
        }
        family(
            out,
            "usher_frames_rejected_total",
            "counter",
            "Frames refused as too large or malformed (each ends its connection).",
        );
        let _ = writeln!(
            out,
            "usher_frames_rejected_total {}",
            self.frames_rejected.load(Ordering::Relaxed)
        );
        family(
            out,
            "usher_requests_throttled_total",
            "counter",
            "Requests a connection sent faster than its rate limit, held back until allowed.",
        );
        let _ = writeln!(
            out,
            "usher_requests_throttled_total {}",
            self.requests_throttled.load(Ordering::Relaxed)
        );
        family(
            out,
            "usher_admin_auth_failures_total",
            "counter",
            "Admin API requests with a wrong bearer token.",
        );
        let _ = writeln!(
            out,
            "usher_admin_auth_failures_total {}",
            self.admin_auth_failures.load(Ordering::Relaxed)
        );
        family(
            out,
            "usher_udp_datagrams_total",
            "counter",
            "Datagrams on the UDP port by result: accepted keepalives and answered discovery, \
             and every refusal by reason (refused datagrams are never answered).",
        );
        for (r, n) in UdpResult::ALL.iter().zip(&self.udp) {
            let _ = writeln!(
                out,
                "usher_udp_datagrams_total{{result=\"{}\"}} {}",
                r.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// Counts one connection as open while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(std::sync::Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and line feed, as the format requires.
pub fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
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
        assert_eq!(m.rejected_count(RejectReason::PerAddressLimit), 100);
        assert_eq!(m.rejected_count(RejectReason::NotAllowed), 1);
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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
