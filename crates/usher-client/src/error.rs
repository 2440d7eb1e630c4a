//! Client errors.

use usher_proto::{DenyReason, ErrorCode};

/// A refused checkout: the server's typed reason and its one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, thiserror::Error)]
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
        code: ErrorCode,
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
