//! The leader's clock: the system clock in milliseconds since the Unix epoch. Only the
//! proposer (stamping entries) and the peer listener (rate-limiting its warnings) read it;
//! the state machine never does.

/// Milliseconds since the Unix epoch from the system clock (0 before the epoch).
pub(crate) fn system_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
