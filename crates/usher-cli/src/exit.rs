//! Exit codes: a documented contract (see the README), so scripts can tell a busy license
//! from a missing one from an unreachable server.

use std::process::ExitCode;

use usher_client::ClientError;
use usher_proto::DenyReason;

/// Success.
pub const OK: u8 = 0;
/// Any other failure (bad file, I/O error...).
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
/// No license server could be reached.
pub const UNREACHABLE: u8 = 3;
/// Refused: every seat is in use (or others are queued ahead, or a wait in the queue ran
/// out).
pub const ALL_IN_USE: u8 = 4;
/// Refused: not licensed (unknown feature, version too new, expired, not yet started).
pub const NOT_LICENSED: u8 = 5;
/// `usher license check`: at least one entitlement is bad, expired or not yet valid.
pub const BAD_LICENSE: u8 = 6;
/// `usher log verify`: the usage log's hash chain is broken (a record was edited, deleted,
/// reordered or added, or the newest ones were cut off). Not 6: a tampered log is a
/// different alarm from a bad license, and scripts should be able to tell them apart.
pub const LOG_BROKEN: u8 = 7;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message for stderr (one line).
    pub message: String,
}

impl Failure {
    /// A failure with a code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(FAILURE, usher_license::words::error_line(e.as_ref()))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Unreachable { .. } | ClientError::Timeout => UNREACHABLE,
            ClientError::Denied(d) => match d.reason {
                DenyReason::AllInUse
                | DenyReason::QueuedAhead
                | DenyReason::WaitTimedOut
                | DenyReason::MaxReached
                | DenyReason::Reserved
                | DenyReason::BorrowLowWater => ALL_IN_USE,
                DenyReason::BadRequest | DenyReason::Unspecified => FAILURE,
                _ => NOT_LICENSED,
            },
            ClientError::Untrusted(_) => NOT_LICENSED,
            _ => FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

/// Makes every command end quietly, with [`OK`], when whoever reads its output stops
/// reading (`usher status | head -1`): Rust ignores SIGPIPE, so `println!` panics on the
/// closed pipe instead; this hook turns exactly that panic into a silent exit and leaves
/// every other panic to the default hook.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(OK.into());
        }
        default(info);
    }));
}

/// Turns a result into the process exit code, printing the failure.
pub fn finish(result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("usher: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
