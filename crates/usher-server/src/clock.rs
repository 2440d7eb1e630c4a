//! The server's one reading of the wall clock.
//!
//! Everything the server stores or sends (grant times, deadlines, usage records) is in
//! milliseconds since the Unix epoch, read here. The ledger task never lets its own time
//! run backwards (it keeps the highest reading it has seen); other readers take the clock
//! as it is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use usher_core::Millis;

/// Milliseconds since the Unix epoch from the system clock.
pub fn wall_clock_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Sleeps until the wall clock reads `deadline` (ms since the epoch), or forever when
/// there is none.
pub async fn sleep_until_ms(deadline: Option<Millis>) {
    match deadline {
        Some(at) => {
            let wait = at.saturating_sub(wall_clock_ms());
            // Wake a millisecond late rather than early, so the deadline has surely passed.
            tokio::time::sleep(Duration::from_millis(wait + 1)).await;
        }
        None => std::future::pending().await,
    }
}
