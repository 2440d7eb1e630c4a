//! What a listener does when `accept` fails: back off, and log a little.
//!
//! `accept` fails mostly when the process is out of file descriptors. The pending
//! connection then stays in the kernel's queue, so an accept loop that retries at once
//! fails again at once: a busy loop that burns a core and writes a warning per turn
//! (millions a minute). Each listener instead waits, doubling from [`FIRST_DELAY`] to
//! [`MAX_DELAY`] while failures continue, and logs the first failure and then at most one
//! line per [`LOG_EVERY`] with the number of failures since.

use std::time::{Duration, Instant};

/// The wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per this interval per listener.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The backoff state of one listener.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    /// A fresh state for the listener named `listener` (for the log).
    pub fn new(listener: &'static str) -> Self {
        AcceptBackoff {
            listener,
            delay: FIRST_DELAY,
            unlogged: 0,
            last_log: None,
        }
    }

    /// Records a failure, logs it if it is time to, and returns how long to wait before
    /// the next attempt.
    pub fn failed(&mut self, error: &std::io::Error, now: Instant) -> Duration {
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            tracing::warn!(
                listener = self.listener,
                failures = self.unlogged,
                "accept failed ({error}); backing off (out of file descriptors? see ulimit -n \
                 and LimitNOFILE)"
            );
            self.unlogged = 0;
            self.last_log = Some(now);
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        wait
    }

    /// Waits as [`AcceptBackoff::failed`] says.
    pub async fn pause(&mut self, error: &std::io::Error) {
        let wait = self.failed(error, Instant::now());
        tokio::time::sleep(wait).await;
    }

    /// A connection was accepted: the next failure starts the backoff again.
    pub fn succeeded(&mut self) {
        self.delay = FIRST_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_after_a_success() {
        let mut b = AcceptBackoff::new("test");
        let e = std::io::Error::other("EMFILE");
        let t = Instant::now();
        let waits: Vec<Duration> = (0..10).map(|_| b.failed(&e, t)).collect();
        assert_eq!(waits[0], FIRST_DELAY);
        assert_eq!(waits[1], FIRST_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        b.succeeded();
        assert_eq!(b.failed(&e, t), FIRST_DELAY);
        // Logged once at t, then the failures are only counted until LOG_EVERY passes.
        assert_eq!(b.unlogged, 10);
        b.failed(&e, t + LOG_EVERY);
        assert_eq!(b.unlogged, 0);
    }
}
