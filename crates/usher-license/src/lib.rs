//! usher license files: the text format, its canonical signed encoding, vendor keys and
//! host ids.
//!
//! This crate is pure apart from the key-file and host-id helpers: parsing and checking
//! take text and a date and return values, so the server, the CLI and the client library
//! all agree on what a license says.
//!
//! The life of a license:
//! 1. The vendor creates a key pair once ([`keygen`]).
//! 2. The vendor writes FEATURE/INCREMENT lines and signs them ([`sign_text`]), which
//!    appends `SIGN=` over each line's [canonical bytes](Entitlement::canonical_bytes).
//! 3. The server (and the client library) [`parse`] the file and [`check`] every
//!    entitlement against the vendor's public key and today's date; only
//!    [`Status::Valid`] entitlements are served. A host-locked entitlement is also matched
//!    against this machine's [`host_ids`] with [`matches_host`].
//!
//! **Architecture Invariant:** a change to any signed field of an entitlement makes its
//! signature fail, and no change to layout (whitespace, line breaks, continuations,
//! attribute order, comments, lowercase attributes) does.

mod attributes;
mod canonical;
mod check;
mod entitlement;
mod hostid;
pub mod input;
mod keys;
mod lex;
mod parse;
mod sign;
mod statement;
mod version;
pub mod words;

pub use attributes::{
    AttributeProblem, AttributeValue, DEFAULT_BORROW_HOURS, DupGroup, MAX_BORROW_HOURS,
    MAX_HOLD_SECONDS, Terms, attribute_value,
};
pub use canonical::CANONICAL_DOMAIN;
pub use check::{Checked, SignatureError, Status, check, verify};
pub use entitlement::{
    Entitlement, Expiry, HostId, KNOWN_ATTRIBUTES, LineKind, MAX_NAME_LEN, SeatCount,
    TokenAlternative, parse_token_alternatives,
};
pub use hostid::{ed25519_from_spki, ed25519_spki, host_ids, matches_host, usher_id};
pub use keys::{KeyError, VendorPublicKey, VendorSigningKey, WriteMode, keygen};
pub use lex::{
    LexError, LogicalLine, MAX_LOGICAL_LINE, Pos, Token, each_logical_line, logical_lines,
};
pub use parse::{LicenseFile, ParseError, ServerLine, UserAttribute, parse};
pub use sign::{SignError, SignOutcome, sign_text};
pub use statement::{
    BorrowToken, Borrowed, CLOCK_SKEW_MS, STATEMENT_DOMAIN, SignedStatement, Statement,
    StatementKind, TOKEN_HEADER, TokenError, VerifiedGrant, binding_ids,
};
pub use version::{Version, VersionError};
