//! Client errors.

/// Why the server refused a checkout or borrow (see [`Denial`]).
///
/// More reasons may come in later versions; match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// Not given, or a reason this client does not know (a newer server's): the message says it.
    Unspecified,
    /// No license names the feature.
    UnknownFeature,
    /// The licensed versions are all older than the one requested.
    VersionTooNew,
    /// The licenses for the feature have expired.
    Expired,
    /// The licenses for the feature have not started yet.
    NotYetStarted,
    /// Every seat is in use ([`Denial::in_use`] of [`Denial::total`]).
    AllInUse,
    /// The request is malformed (a count of 0, say).
    BadRequest,
    /// Other checkouts are queued ahead and the request did not ask to wait.
    QueuedAhead,
    /// The checkout waited in the queue for as long as it allowed ([`QueueWait::For`](crate::QueueWait::For)).
    WaitTimedOut,
    /// The server's policy keeps this client from the feature (`EXCLUDE`, `INCLUDE`).
    Excluded,
    /// A policy `MAX` for this client (or its group, host...) is reached; [`Denial::total`] is the limit.
    MaxReached,
    /// The free seats are reserved for others by policy (`RESERVE`).
    Reserved,
    /// The license is `USER_BASED` and this user is not one of its named users.
    NotNamedUser,
    /// No license for the feature allows borrowing.
    NotBorrowable,
    /// The borrow is longer than the license or policy allows.
    BorrowTooLong,
    /// The policy keeps the remaining seats from being borrowed (`BORROW_LOWWATER`).
    BorrowLowWater,
    /// More seats were asked for than the licenses have ([`Denial::total`]): never met, so never queued.
    MoreThanLicensed,
    /// More seats were asked for than the policy's `MAX` allows this client: never met, so never queued.
    MoreThanAllowed,
    /// The only licenses for the feature are bound (`HOSTID=`) to another host than the server.
    BoundToOtherHost,
}

impl DenyReason {
    /// The client's own name for the server's `DenyReason`.
    pub(crate) fn from_proto(p: usher_proto::DenyReason) -> Self {
        // Exhaustive on purpose: a new wire value must be given a name here.
        match p {
            usher_proto::DenyReason::Unspecified => DenyReason::Unspecified,
            usher_proto::DenyReason::UnknownFeature => DenyReason::UnknownFeature,
            usher_proto::DenyReason::VersionTooNew => DenyReason::VersionTooNew,
            usher_proto::DenyReason::Expired => DenyReason::Expired,
            usher_proto::DenyReason::NotYetStarted => DenyReason::NotYetStarted,
            usher_proto::DenyReason::AllInUse => DenyReason::AllInUse,
            usher_proto::DenyReason::BadRequest => DenyReason::BadRequest,
            usher_proto::DenyReason::QueuedAhead => DenyReason::QueuedAhead,
            usher_proto::DenyReason::WaitTimedOut => DenyReason::WaitTimedOut,
            usher_proto::DenyReason::Excluded => DenyReason::Excluded,
            usher_proto::DenyReason::MaxReached => DenyReason::MaxReached,
            usher_proto::DenyReason::Reserved => DenyReason::Reserved,
            usher_proto::DenyReason::NotNamedUser => DenyReason::NotNamedUser,
            usher_proto::DenyReason::NotBorrowable => DenyReason::NotBorrowable,
            usher_proto::DenyReason::BorrowTooLong => DenyReason::BorrowTooLong,
            usher_proto::DenyReason::BorrowLowWater => DenyReason::BorrowLowWater,
            usher_proto::DenyReason::MoreThanLicensed => DenyReason::MoreThanLicensed,
            usher_proto::DenyReason::MoreThanAllowed => DenyReason::MoreThanAllowed,
            usher_proto::DenyReason::BoundToOtherHost => DenyReason::BoundToOtherHost,
        }
    }

    fn to_proto(self) -> usher_proto::DenyReason {
        match self {
            DenyReason::Unspecified => usher_proto::DenyReason::Unspecified,
            DenyReason::UnknownFeature => usher_proto::DenyReason::UnknownFeature,
            DenyReason::VersionTooNew => usher_proto::DenyReason::VersionTooNew,
            DenyReason::Expired => usher_proto::DenyReason::Expired,
            DenyReason::NotYetStarted => usher_proto::DenyReason::NotYetStarted,
            DenyReason::AllInUse => usher_proto::DenyReason::AllInUse,
            DenyReason::BadRequest => usher_proto::DenyReason::BadRequest,
            DenyReason::QueuedAhead => usher_proto::DenyReason::QueuedAhead,
            DenyReason::WaitTimedOut => usher_proto::DenyReason::WaitTimedOut,
            DenyReason::Excluded => usher_proto::DenyReason::Excluded,
            DenyReason::MaxReached => usher_proto::DenyReason::MaxReached,
            DenyReason::Reserved => usher_proto::DenyReason::Reserved,
            DenyReason::NotNamedUser => usher_proto::DenyReason::NotNamedUser,
            DenyReason::NotBorrowable => usher_proto::DenyReason::NotBorrowable,
            DenyReason::BorrowTooLong => usher_proto::DenyReason::BorrowTooLong,
            DenyReason::BorrowLowWater => usher_proto::DenyReason::BorrowLowWater,
            DenyReason::MoreThanLicensed => usher_proto::DenyReason::MoreThanLicensed,
            DenyReason::MoreThanAllowed => usher_proto::DenyReason::MoreThanAllowed,
            DenyReason::BoundToOtherHost => usher_proto::DenyReason::BoundToOtherHost,
        }
    }

    /// The reason's stable snake-case name, as the usage log and `usher report` spell it
    /// (`"all_in_use"`).
    pub fn name(self) -> &'static str {
        self.to_proto().name()
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A refused checkout: the server's typed reason and its one-line explanation.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) {
/// use usher_client::{ClientError, DenyReason};
///
/// match client.checkout("cad").await {
///     Err(ClientError::Denied(d)) if d.reason == DenyReason::AllInUse => {
///         eprintln!("all {} seats of cad are in use", d.total);
///     }
///     Err(ClientError::Denied(d)) => eprintln!("refused ({}): {}", d.reason, d.message),
///     Err(e) => eprintln!("no license server: {e}"),
///     Ok(_license) => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denial {
    /// Typed reason.
    pub reason: DenyReason,
    /// One line for a human, e.g. `all 3 seats of "cad" in use (3 of 3 in use)`.
    pub message: String,
    /// For `AllInUse`: seats in use.
    pub in_use: u32,
    /// For `AllInUse`: seats in the pools that could serve the request.
    pub total: u32,
}

/// What can go wrong talking to a license server.
///
/// More variants may come in later versions; match with a `_` arm. An application
/// usually tells a refusal ([`ClientError::Denied`], the server answered "no") from
/// everything else (no answer to be had).
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) {
/// use usher_client::ClientError;
///
/// match client.checkout("cad").await {
///     Ok(license) => { /* the licensed work */ }
///     Err(ClientError::Denied(d)) => eprintln!("not licensed: {}", d.message),
///     Err(ClientError::Unreachable { servers, .. }) => eprintln!("no license server at {servers}"),
///     Err(e) => eprintln!("licensing failed: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No server in the list could be reached in time.
    #[error("cannot reach any license server ({servers}): {detail}")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// The last failure.
        detail: String,
    },
    /// The checkout was refused.
    #[error("{}", .0.message)]
    Denied(Denial),
    /// The server answered with an error.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// Typed code.
        code: ServerErrorCode,
        /// Explanation.
        message: String,
    },
    /// The server said something this client cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the request timeout.
    #[error("the license server did not answer in time")]
    Timeout,
    /// The grant's signed statement did not verify against the vendor keys the
    /// application trusts: the server is not one a genuine license of the vendor lets
    /// serve this seat (an emulator), or the answer was tampered with or replayed. The
    /// seat, if any, is given back.
    #[error("the license server's grant could not be verified: {0}")]
    Untrusted(usher_license::TokenError),
    /// The client has been closed.
    #[error("the license client is closed")]
    Closed,
    /// An admin token was not sent: the connection is plaintext and a server may be on
    /// another host, where anyone on the network could read it.
    #[error(
        "the admin token is sent only over TLS or to a server on this host (the connection is plaintext)"
    )]
    TokenNeedsTls,
    /// The server list is malformed.
    #[error(transparent)]
    Config(#[from] crate::ServerListError),
}

/// What kind of error a server answered with (see [`ClientError::Server`]).
///
/// More codes may come in later versions; match with a `_` arm.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) {
/// use usher_client::{ClientError, ServerErrorCode};
///
/// match client.status("cad").await {
///     Err(ClientError::Server { code: ServerErrorCode::ShuttingDown, .. }) => {
///         eprintln!("the server is shutting down; try again shortly");
///     }
///     Err(e) => eprintln!("no status: {e}"),
///     Ok(status) => println!("{} pools", status.features.len()),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerErrorCode {
    /// Not given, or a code this client does not know (a newer server's): the message says it.
    Unspecified,
    /// The request is malformed or makes no sense here.
    BadRequest,
    /// The server does not know this kind of request (it is older than the client).
    UnknownRequest,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The first request on a connection must be the handshake.
    HandshakeRequired,
    /// The session to resume (or act for) no longer exists.
    SessionExpired,
    /// The server is shutting down; try another server or again shortly.
    ShuttingDown,
    /// Something failed inside the server.
    Internal,
    /// The request is not allowed for this client (a wrong admin token, say).
    NotPermitted,
    /// The connection was refused: its address, or the server, holds as many connections
    /// as it may (the message names the limit).
    TooManyConnections,
    /// The handshake did not complete in the time the server allows.
    HandshakeTimeout,
    /// The server cannot write its store (a full disk): new grants and sessions are
    /// refused; held seats and heartbeats keep working.
    StoreUnavailable,
}

impl ServerErrorCode {
    /// The client's own name for the server's `ErrorCode`.
    pub(crate) fn from_proto(p: usher_proto::ErrorCode) -> Self {
        // Exhaustive on purpose: a new wire value must be given a name here.
        match p {
            usher_proto::ErrorCode::Unspecified => ServerErrorCode::Unspecified,
            usher_proto::ErrorCode::BadRequest => ServerErrorCode::BadRequest,
            usher_proto::ErrorCode::UnknownRequest => ServerErrorCode::UnknownRequest,
            usher_proto::ErrorCode::UnsupportedVersion => ServerErrorCode::UnsupportedVersion,
            usher_proto::ErrorCode::HandshakeRequired => ServerErrorCode::HandshakeRequired,
            usher_proto::ErrorCode::SessionExpired => ServerErrorCode::SessionExpired,
            usher_proto::ErrorCode::ShuttingDown => ServerErrorCode::ShuttingDown,
            usher_proto::ErrorCode::Internal => ServerErrorCode::Internal,
            usher_proto::ErrorCode::NotPermitted => ServerErrorCode::NotPermitted,
            usher_proto::ErrorCode::TooManyConnections => ServerErrorCode::TooManyConnections,
            usher_proto::ErrorCode::HandshakeTimeout => ServerErrorCode::HandshakeTimeout,
            usher_proto::ErrorCode::StoreUnavailable => ServerErrorCode::StoreUnavailable,
        }
    }
}

impl ClientError {
    /// The client's error for the server's error answer: the one place a wire error
    /// becomes a [`ClientError::Server`].
    pub(crate) fn from_server(e: usher_proto::Error) -> Self {
        ClientError::Server {
            code: ServerErrorCode::from_proto(e.code()),
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_reads_and_prints_as_the_wire_code_did() {
        let e = ClientError::from_server(usher_proto::Error {
            code: usher_proto::ErrorCode::TooManyConnections as i32,
            message: "too many connections from 127.0.0.1".into(),
        });
        assert_eq!(
            e.to_string(),
            "server error (TooManyConnections): too many connections from 127.0.0.1"
        );
        // A code from a newer server reads as Unspecified, as the wire's own type does.
        let newer = ClientError::from_server(usher_proto::Error {
            code: 99,
            message: "new".into(),
        });
        assert!(matches!(
            newer,
            ClientError::Server {
                code: ServerErrorCode::Unspecified,
                ..
            }
        ));
    }
}
