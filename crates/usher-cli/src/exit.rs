//! Exit codes: a documented contract (see the README), so scripts can tell a busy license
//! from a missing one from an unreachable server.

use std::process::ExitCode;

use usher_client::ClientError;
use usher_proto::{DenyReason, RefusalClass};

/// Success.
pub const OK: u8 = 0;
/// Any other failure (bad file, I/O error...).
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
/// No license server could be reached.
pub const UNREACHABLE: u8 = 3;
/// Refused for lack of seats ([`RefusalClass::Shortage`]): every seat is in use, others
/// are queued ahead, or a wait in the queue ran out.
pub const ALL_IN_USE: u8 = 4;
/// Refused by the licenses ([`RefusalClass::Licensing`]): unknown feature, bound to
/// another host, version too new, expired, not yet started, not a named user, more seats
/// than licensed; or a grant
/// that did not verify against the vendor's key.
pub const NOT_LICENSED: u8 = 5;
/// `usher license check`: at least one entitlement is bad, expired or not yet valid.
pub const BAD_LICENSE: u8 = 6;
/// `usher log verify`: the usage log's hash chain is broken (a record was edited, deleted,
/// reordered or added, or the newest ones were cut off). Not 6: a tampered log is a
/// different alarm from a bad license, and scripts should be able to tell them apart.
pub const LOG_BROKEN: u8 = 7;
/// Refused by the server's policy ([`RefusalClass::Policy`]): `EXCLUDE`/`INCLUDE`, a
/// `MAX` reached or exceeded, free seats `RESERVE`d for others.
pub const POLICY: u8 = 8;
/// A borrow refused ([`RefusalClass::Borrowing`]): the license does not allow borrowing,
/// not for that long, or the policy keeps the last seats (`BORROW_LOWWATER`).
pub const BORROW_REFUSED: u8 = 9;

/// The exit code of a refusal: one per [`RefusalClass`].
pub fn refusal_code(reason: DenyReason) -> u8 {
    match reason.class() {
        RefusalClass::Shortage => ALL_IN_USE,
        RefusalClass::Licensing => NOT_LICENSED,
        RefusalClass::Policy => POLICY,
        RefusalClass::Borrowing => BORROW_REFUSED,
        RefusalClass::BadRequest => FAILURE,
    }
}

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
            // By the reason's stable name: the classes are the wire's, and a reason this
            // build does not know is a plain refusal.
            ClientError::Denied(d) => refusal_code(
                DenyReason::from_name(d.reason.name()).unwrap_or(DenyReason::Unspecified),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// README's table of exit codes: (code, meaning).
    fn readme_table() -> Vec<(u8, String)> {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .expect("README has an exit-code table");
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let mut cells = l.split('|').map(str::trim).skip(1);
                let code = cells.next()?.parse().ok()?;
                Some((code, cells.next()?.to_string()))
            })
            .collect()
    }

    /// Every refusal reason's exit code is the one README documents for it, by name, and
    /// every code the program uses is in the table.
    #[test]
    fn the_readme_documents_every_exit_code_and_every_refusal_reason() {
        let table = readme_table();
        let meaning = |code: u8| {
            table
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| panic!("README's table lacks exit code {code}: {table:?}"))
        };
        for code in [
            OK,
            FAILURE,
            USAGE,
            UNREACHABLE,
            ALL_IN_USE,
            NOT_LICENSED,
            BAD_LICENSE,
            LOG_BROKEN,
            POLICY,
            BORROW_REFUSED,
        ] {
            meaning(code);
        }
        for reason in DenyReason::ALL {
            if reason.class() == RefusalClass::BadRequest {
                assert_eq!(refusal_code(reason), FAILURE, "{reason:?}");
                continue;
            }
            let code = refusal_code(reason);
            let text = meaning(code);
            assert!(
                text.contains(&format!("`{}`", reason.name())),
                "README says exit {code} is {text:?}, which does not name {}",
                reason.name()
            );
            for (other, m) in &table {
                if *other != code {
                    assert!(
                        !m.contains(&format!("`{}`", reason.name())),
                        "{} under {other} too",
                        reason.name()
                    );
                }
            }
        }
    }
}
