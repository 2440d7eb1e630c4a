//! Status codes: stable negative integers, a static message and a retryable flag each.
//!
//! **ABI Invariant:** a code's value never changes and is never reused; new codes get new
//! values. The header's `#define`s are generated from the constants below.

use std::ffi::CStr;

use usher_client::{ClientError, ServerErrorCode};
use usher_proto::DenyReason;

/// Success.
pub const USHER_OK: i32 = 0;
/// A required pointer was NULL, a string was not UTF-8, or a number was out of range.
pub const USHER_E_INVALID_ARGUMENT: i32 = -1;
/// Unknown option, flag or enum value.
pub const USHER_E_INVALID_OPTION: i32 = -2;
/// The server list (argument or `USHER_LICENSE`) is malformed.
pub const USHER_E_BAD_SERVER_LIST: i32 = -3;
/// A vendor public key given as an option could not be read.
pub const USHER_E_BAD_VENDOR_KEY: i32 = -4;
/// The option can only be set before the client connects.
pub const USHER_E_ALREADY_CONNECTED: i32 = -5;
/// The caller's buffer was too small; it holds as much as fitted, NUL-terminated.
pub const USHER_E_BUFFER_TOO_SMALL: i32 = -6;
/// A blocking usher function was called from inside an usher event callback.
pub const USHER_E_REENTRANT: i32 = -7;
/// The client was created in another process (before a `fork()`); use a new client.
pub const USHER_E_FORKED: i32 = -8;
/// A bug inside the library (a caught panic); the detail says where.
pub const USHER_E_INTERNAL: i32 = -9;
/// No license server could be reached.
pub const USHER_E_UNREACHABLE: i32 = -10;
/// The license server did not answer in time.
pub const USHER_E_TIMEOUT: i32 = -11;
/// The license server said something this library cannot make sense of.
pub const USHER_E_PROTOCOL: i32 = -12;
/// The client's connection has been closed for good.
pub const USHER_E_CLOSED: i32 = -13;
/// The license server refused the request with an error.
pub const USHER_E_SERVER: i32 = -14;
/// The license server is shutting down.
pub const USHER_E_SERVER_SHUTTING_DOWN: i32 = -15;
/// The grant did not verify against the vendor key (an emulator, or tampering); no seat.
pub const USHER_E_UNTRUSTED: i32 = -16;
/// No license names the feature.
pub const USHER_E_NO_SUCH_FEATURE: i32 = -20;
/// The licensed versions are all older than the one requested.
pub const USHER_E_VERSION_TOO_NEW: i32 = -21;
/// The licenses for the feature have expired.
pub const USHER_E_EXPIRED: i32 = -22;
/// The licenses for the feature have not started yet.
pub const USHER_E_NOT_YET_STARTED: i32 = -23;
/// Every seat is in use.
pub const USHER_E_ALL_IN_USE: i32 = -24;
/// Others are queued ahead and the checkout did not ask to wait.
pub const USHER_E_QUEUED_AHEAD: i32 = -25;
/// The checkout waited in the queue for as long as it allowed.
pub const USHER_E_WAIT_TIMED_OUT: i32 = -26;
/// The server's policy excludes this user, host or group from the feature.
pub const USHER_E_EXCLUDED: i32 = -27;
/// A policy maximum for this user, host or group is reached.
pub const USHER_E_MAX_REACHED: i32 = -28;
/// The free seats are reserved for others by policy.
pub const USHER_E_RESERVED: i32 = -29;
/// The license is user-based and this user is not one of its named users.
pub const USHER_E_NOT_NAMED_USER: i32 = -30;
/// No license for the feature allows borrowing.
pub const USHER_E_NOT_BORROWABLE: i32 = -31;
/// The borrow is longer than the license or policy allows.
pub const USHER_E_BORROW_TOO_LONG: i32 = -32;
/// The policy keeps the remaining seats from being borrowed.
pub const USHER_E_BORROW_LOW_WATER: i32 = -33;
/// The checkout was refused for another reason (the detail says which).
pub const USHER_E_DENIED: i32 = -34;
/// The license was lost (removed by an administrator, or the session expired).
pub const USHER_E_LICENSE_LOST: i32 = -35;
/// The license is still queued (or its queued checkout failed): nothing granted yet.
pub const USHER_E_NOT_GRANTED: i32 = -36;
/// A borrowed token could not be saved.
pub const USHER_E_BORROW_STORE: i32 = -37;
/// More seats were asked for than the licenses have: it can never be granted.
pub const USHER_E_MORE_THAN_LICENSED: i32 = -38;
/// More seats were asked for than the policy's maximum allows: it can never be granted.
pub const USHER_E_MORE_THAN_ALLOWED: i32 = -39;
/// The feature's licenses are bound to another host than the server (`HOSTID=`).
pub const USHER_E_BOUND_TO_OTHER_HOST: i32 = -40;

/// `(code, message, retryable)` for every code.
const TABLE: &[(i32, &CStr, bool)] = &[
    (USHER_OK, c"success", false),
    (USHER_E_INVALID_ARGUMENT, c"invalid argument", false),
    (
        USHER_E_INVALID_OPTION,
        c"unknown option, flag or enum value",
        false,
    ),
    (
        USHER_E_BAD_SERVER_LIST,
        c"malformed license server list",
        false,
    ),
    (
        USHER_E_BAD_VENDOR_KEY,
        c"unreadable vendor public key",
        false,
    ),
    (
        USHER_E_ALREADY_CONNECTED,
        c"option must be set before connecting",
        false,
    ),
    (
        USHER_E_BUFFER_TOO_SMALL,
        c"buffer too small (output truncated)",
        false,
    ),
    (
        USHER_E_REENTRANT,
        c"blocking usher call from inside an usher callback",
        false,
    ),
    (
        USHER_E_FORKED,
        c"client created in another process (fork)",
        false,
    ),
    (
        USHER_E_INTERNAL,
        c"internal error in the usher library",
        false,
    ),
    (
        USHER_E_UNREACHABLE,
        c"cannot reach any license server",
        true,
    ),
    (
        USHER_E_TIMEOUT,
        c"license server did not answer in time",
        true,
    ),
    (USHER_E_PROTOCOL, c"license server protocol error", false),
    (USHER_E_CLOSED, c"license client is closed", false),
    (USHER_E_SERVER, c"license server error", false),
    (
        USHER_E_SERVER_SHUTTING_DOWN,
        c"license server is shutting down",
        true,
    ),
    (
        USHER_E_UNTRUSTED,
        c"license grant could not be verified",
        false,
    ),
    (USHER_E_NO_SUCH_FEATURE, c"no such feature", false),
    (
        USHER_E_VERSION_TOO_NEW,
        c"licensed versions are older than requested",
        false,
    ),
    (USHER_E_EXPIRED, c"license has expired", false),
    (
        USHER_E_NOT_YET_STARTED,
        c"license has not started yet",
        false,
    ),
    (USHER_E_ALL_IN_USE, c"all seats in use", true),
    (
        USHER_E_QUEUED_AHEAD,
        c"others are queued for the feature",
        true,
    ),
    (USHER_E_WAIT_TIMED_OUT, c"queued checkout timed out", true),
    (
        USHER_E_EXCLUDED,
        c"excluded from the feature by policy",
        false,
    ),
    (USHER_E_MAX_REACHED, c"policy maximum reached", true),
    (
        USHER_E_RESERVED,
        c"free seats are reserved for others",
        true,
    ),
    (
        USHER_E_NOT_NAMED_USER,
        c"not a named user of the license",
        false,
    ),
    (USHER_E_NOT_BORROWABLE, c"feature cannot be borrowed", false),
    (
        USHER_E_BORROW_TOO_LONG,
        c"borrow is longer than allowed",
        false,
    ),
    (
        USHER_E_BORROW_LOW_WATER,
        c"remaining seats cannot be borrowed",
        true,
    ),
    (USHER_E_DENIED, c"checkout denied", false),
    (USHER_E_LICENSE_LOST, c"license lost", true),
    (USHER_E_NOT_GRANTED, c"license not granted", false),
    (
        USHER_E_BORROW_STORE,
        c"cannot save the borrowed token",
        false,
    ),
    (
        USHER_E_MORE_THAN_LICENSED,
        c"more seats asked for than licensed",
        false,
    ),
    (
        USHER_E_MORE_THAN_ALLOWED,
        c"more seats asked for than the policy allows",
        false,
    ),
    (
        USHER_E_BOUND_TO_OTHER_HOST,
        c"license bound to another host",
        false,
    ),
];

/// The static message of `code` (`"unknown status code"` for a value no version defined).
pub fn message(code: i32) -> &'static CStr {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(c"unknown status code", |(_, m, _)| m)
}

/// Whether trying the same call again later may succeed.
pub fn retryable(code: i32) -> bool {
    TABLE.iter().any(|(c, _, r)| *c == code && *r)
}

/// A failed call: its code and the detail text for `usher_last_error_detail`.
#[derive(Debug)]
pub struct Failure {
    /// Status code (negative).
    pub code: i32,
    /// One line for a human.
    pub detail: String,
}

impl Failure {
    /// A failure with this code and detail.
    pub fn new(code: i32, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Unreachable { .. } => USHER_E_UNREACHABLE,
            // By the reason's stable name: each wire reason has its C code, and one this
            // build does not know is a plain denial.
            ClientError::Denied(d) => denial_code(
                DenyReason::from_name(d.reason.name()).unwrap_or(DenyReason::Unspecified),
            ),
            ClientError::Server {
                code: ServerErrorCode::ShuttingDown,
                ..
            } => USHER_E_SERVER_SHUTTING_DOWN,
            ClientError::Server { .. } => USHER_E_SERVER,
            ClientError::Protocol(_) | ClientError::TokenNeedsTls => USHER_E_PROTOCOL,
            ClientError::Timeout => USHER_E_TIMEOUT,
            ClientError::Untrusted(_) => USHER_E_UNTRUSTED,
            ClientError::Closed => USHER_E_CLOSED,
            ClientError::Config(_) => USHER_E_BAD_SERVER_LIST,
            // A kind of failure newer than this table: the detail text still says it.
            _ => USHER_E_INTERNAL,
        };
        Failure::new(code, e.to_string())
    }
}

/// The status code of a denial reason.
fn denial_code(reason: DenyReason) -> i32 {
    match reason {
        DenyReason::UnknownFeature => USHER_E_NO_SUCH_FEATURE,
        DenyReason::VersionTooNew => USHER_E_VERSION_TOO_NEW,
        DenyReason::Expired => USHER_E_EXPIRED,
        DenyReason::NotYetStarted => USHER_E_NOT_YET_STARTED,
        DenyReason::AllInUse => USHER_E_ALL_IN_USE,
        DenyReason::QueuedAhead => USHER_E_QUEUED_AHEAD,
        DenyReason::WaitTimedOut => USHER_E_WAIT_TIMED_OUT,
        DenyReason::Excluded => USHER_E_EXCLUDED,
        DenyReason::MaxReached => USHER_E_MAX_REACHED,
        DenyReason::Reserved => USHER_E_RESERVED,
        DenyReason::NotNamedUser => USHER_E_NOT_NAMED_USER,
        DenyReason::NotBorrowable => USHER_E_NOT_BORROWABLE,
        DenyReason::BorrowTooLong => USHER_E_BORROW_TOO_LONG,
        DenyReason::BorrowLowWater => USHER_E_BORROW_LOW_WATER,
        DenyReason::MoreThanLicensed => USHER_E_MORE_THAN_LICENSED,
        DenyReason::MoreThanAllowed => USHER_E_MORE_THAN_ALLOWED,
        DenyReason::BoundToOtherHost => USHER_E_BOUND_TO_OTHER_HOST,
        DenyReason::BadRequest => USHER_E_INVALID_ARGUMENT,
        DenyReason::Unspecified => USHER_E_DENIED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_negative() {
        let mut seen = std::collections::HashSet::new();
        for (code, msg, _) in TABLE {
            assert!(*code <= 0, "{code}");
            assert!(seen.insert(*code), "{code} twice");
            assert!(!msg.is_empty());
        }
        assert_eq!(message(12345), c"unknown status code");
        // Every code from success down to the newest has its own message.
        for code in USHER_E_BOUND_TO_OTHER_HOST..=USHER_OK {
            let defined = !(-19..=-17).contains(&code);
            assert_eq!(message(code) != c"unknown status code", defined, "{code}");
        }
        assert!(retryable(USHER_E_ALL_IN_USE) && !retryable(USHER_E_NO_SUCH_FEATURE));
    }

    /// Every reason a server can give has a code of its own, so a C caller never has to
    /// parse the detail text: only `Unspecified` is the catch-all `USHER_E_DENIED`, and only
    /// `BadRequest` (the library's own fault, never the user's) shares a code.
    #[test]
    fn every_denial_reason_has_its_own_code() {
        let mut seen = std::collections::HashMap::new();
        for reason in DenyReason::ALL {
            let code = denial_code(reason);
            assert_ne!(message(code), c"unknown status code", "{reason:?}");
            assert!(
                (code == USHER_E_DENIED) == (reason == DenyReason::Unspecified),
                "{reason:?} -> {code}"
            );
            if let Some(other) = seen.insert(code, reason) {
                panic!("{reason:?} and {other:?} both map to {code}");
            }
        }
    }

    /// docs/c-api.md's porting table has one row per code, with its value and whether it is
    /// retryable as [`retryable`] says, so the porting guide cannot drift from the library.
    #[test]
    fn the_porting_table_lists_every_code_with_its_value_and_retry_flag() {
        let doc = include_str!("../../../docs/c-api.md");
        let header = include_str!("../include/usher.h");
        let names: std::collections::HashMap<i32, &str> = header
            .lines()
            .filter_map(|l| {
                let mut words = l.strip_prefix("#define ")?.split_whitespace();
                let name = words
                    .next()
                    .filter(|n| *n == "USHER_OK" || n.starts_with("USHER_E_"))?;
                Some((
                    words
                        .next()?
                        .trim_matches(|c| c == '(' || c == ')')
                        .parse()
                        .ok()?,
                    name,
                ))
            })
            .collect();
        for (code, _, retry) in TABLE {
            let name = names
                .get(code)
                .unwrap_or_else(|| panic!("usher.h defines no name for {code}"));
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/c-api.md has no row for {name}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells[2], code.to_string(), "{row}");
            assert_eq!(cells[3] == "yes", *retry, "retry column of {row}");
        }
        assert_eq!(
            names.len(),
            TABLE.len(),
            "usher.h defines codes the table lacks"
        );
    }
}
