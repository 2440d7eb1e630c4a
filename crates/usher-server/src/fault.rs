//! Fault injection for tests, compiled only with the `fault-injection` feature (which
//! only the server's own tests enable): a request naming one of these features (or, for
//! the UDP task, a datagram starting with [`UDP_PANIC`]) makes that part of the server
//! fail, so tests can check that usherd then stops loudly and restarts cleanly.

/// A checkout of this feature panics the ledger task.
pub const LEDGER_PANIC: &str = "usher-fault-ledger-panic";
/// A checkout of this feature panics the store committer while it writes that batch.
pub const COMMITTER_PANIC: &str = "usher-fault-committer-panic";
/// A datagram starting with these bytes panics the UDP task.
pub const UDP_PANIC: &[u8] = b"usher-fault-udp-panic";

/// What a batch asks of the committer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitFault {
    /// Nothing: commit as usual.
    #[default]
    None,
    /// Panic while writing.
    Panic,
}

/// Applies the faults a command asks for: panics here for [`LEDGER_PANIC`], returns the
/// fault the committer is to meet otherwise.
pub fn on_command(cmd: &usher_core::Command) -> CommitFault {
    let usher_core::Command::Checkout { ask, .. } = cmd else {
        return CommitFault::None;
    };
    match ask.feature.as_str() {
        LEDGER_PANIC => panic!("injected fault: ledger task panic"),
        COMMITTER_PANIC => CommitFault::Panic,
        _ => CommitFault::None,
    }
}

/// Panics the UDP task on a datagram starting with [`UDP_PANIC`].
pub fn on_datagram(datagram: &[u8]) {
    if datagram.starts_with(UDP_PANIC) {
        panic!("injected fault: UDP task panic");
    }
}
