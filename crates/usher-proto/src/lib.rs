//! The usher wire protocol. Only this crate knows the bytes on the wire.
//!
//! A connection carries *frames*: a 4-byte big-endian length followed by that many bytes
//! of payload, at most [`MAX_FRAME_LEN`]. Each payload is one Protocol Buffers message:
//! [`Request`] from client to server, [`Response`] from server to client. Protocol Buffers
//! gives the evolvability that embedded clients need over a decade of releases: unknown
//! fields are skipped by the decoder, absent fields take their defaults, and a request
//! kind a server does not know decodes as "no kind", which the server answers with a
//! polite [`ErrorCode::UnknownRequest`] instead of dropping the connection.
//!
//! The messages are declared in Rust with explicit field tags (no `.proto` compiler
//! needed); `docs/protocol.md` lists every tag and is the contract. Tags are never reused.

mod frame;
pub mod fuzzing;
mod messages;
pub mod names;
mod opening;
pub mod udp;

pub use frame::{
    FrameError, FrameReader, MAX_FRAME_LEN, decode_frame, decode_frame_within, encode_frame,
    field_len, payload_len, write_frame,
};
pub use messages::*;
pub use opening::{NotHello, check_opening};

/// The protocol version this build speaks. Bumped only for changes that old peers cannot
/// ignore; additive changes (new fields, new request kinds) keep the version.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this build still serves.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Magic string a client puts in its `Hello`, so a server can tell a confused peer (an
/// HTTP client, a port scanner) from a usher client and close early.
pub const MAGIC: &str = "usher";

/// The IANA-registered port for `concurrent-lm`, tcp and udp.
pub const DEFAULT_PORT: u16 = 1648;

/// The longest `Checkout.nonce` a server accepts (a longer one is a bad request).
pub const MAX_NONCE_LEN: usize = 64;
