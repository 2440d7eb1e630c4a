//! The systemd notify protocol (`Type=notify`, `WatchdogSec=`), through the `sd-notify`
//! crate. Every call is a no-op when the server was not started by systemd (no
//! `NOTIFY_SOCKET`), so tests and hand-started servers are unaffected.
//!
//! Readiness (`READY=1`) is sent once the store is loaded and every listener is bound, so
//! `systemctl start` returns when clients can connect. The watchdog (`WATCHDOG=1`) is fed
//! only when the ledger task answers a query that waits for every earlier batch to be
//! committed: a server whose ledger or store is stuck stops feeding it, and systemd
//! restarts it. A timer thread that kept feeding a hung server would hide exactly that.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ledger_task::LedgerHandle;

/// Tells systemd the server is serving on `addr`.
pub fn ready(addr: std::net::SocketAddr) {
    let status = format!("serving on {addr}");
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]) {
        warn!("could not tell systemd the server is ready ({e}); check NOTIFY_SOCKET");
    }
}

/// Tells systemd a graceful stop has begun.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Tells systemd a reload has begun (`RELOADING=1`, with the `MONOTONIC_USEC=` systemd
/// requires beside it) or ended (`READY=1`).
pub fn reloading(started: bool) {
    if !started {
        let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    } else if let Ok(now) = NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(false, &[NotifyState::Reloading, now]);
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog every half `interval`, each time the ledger answers, until `stop`.
pub async fn feed_watchdog(ledger: LedgerHandle, interval: Duration, stop: CancellationToken) {
    let period = interval / 2;
    debug!(
        ?interval,
        "feeding the systemd watchdog while the ledger answers"
    );
    loop {
        match tokio::time::timeout(period, ledger.query(|_| ())).await {
            Ok(Ok(())) => {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
            Ok(Err(_)) => return,
            Err(_) => warn!(
                "the ledger did not answer within {period:?}; the systemd watchdog is not fed \
                 and restarts the server if this lasts {interval:?} (look for store errors \
                 above, and at the disk)"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}
