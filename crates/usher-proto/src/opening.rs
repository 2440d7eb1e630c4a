//! Judging a plaintext connection by the bytes its peer sent first, before reading them.

use prost::Message;

use crate::{FrameError, MAGIC, Request, request};

/// Why the first bytes a peer sent cannot begin a usher client's handshake.
#[derive(Debug, thiserror::Error)]
pub enum NotHello {
    /// The first frame is over the limit, or its payload is not a valid message.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The first frame is a Hello without the usher magic: not a usher client.
    #[error("bad magic")]
    BadMagic,
}

/// Judges `first`, the bytes a peer has sent so far on a plaintext connection (or a prefix
/// of them), as the opening of a handshake whose frames may be at most `max` bytes: an
/// error when they cannot begin one (a frame announcing more than `max` bytes, a payload
/// that does not decode, a Hello without [`MAGIC`]), `Ok` when they can, or when more bytes
/// are needed to tell. A whole first frame that is a request other than Hello is `Ok`: the
/// handshake answers that with a typed error.
pub fn check_opening(first: &[u8], max: usize) -> Result<(), NotHello> {
    let Some(&[a, b, c, d]) = first.get(..4) else {
        return Ok(());
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max }.into());
    }
    let Some(payload) = first.get(4..4 + len) else {
        return Ok(());
    };
    let request = Request::decode(payload).map_err(FrameError::from)?;
    match request.kind {
        Some(request::Kind::Hello(hello)) if hello.magic != MAGIC => Err(NotHello::BadMagic),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hello, encode_frame};

    fn hello(magic: &str) -> Vec<u8> {
        encode_frame(&Request {
            id: 1,
            kind: Some(request::Kind::Hello(Hello {
                magic: magic.into(),
                protocol_version: crate::PROTOCOL_VERSION,
                user: "ann".into(),
                ..Hello::default()
            })),
        })
    }

    #[test]
    fn a_hello_and_every_prefix_of_it_may_begin_a_handshake() {
        let frame = hello(MAGIC);
        for end in 0..=frame.len() {
            assert!(
                check_opening(&frame[..end], 1024).is_ok(),
                "prefix of {end}"
            );
        }
        // Bytes after the first frame (a pipelined request) are not judged.
        let mut two = frame.clone();
        two.extend_from_slice(&[0xff; 9]);
        assert!(check_opening(&two, 1024).is_ok());
    }

    #[test]
    fn another_request_first_is_left_to_the_handshake() {
        let frame = encode_frame(&Request {
            id: 1,
            kind: Some(request::Kind::Heartbeat(Default::default())),
        });
        assert!(check_opening(&frame, 1024).is_ok());
    }

    #[test]
    fn oversized_undecodable_and_foreign_openings_are_refused() {
        assert!(matches!(
            check_opening(&u32::MAX.to_be_bytes(), 1024),
            Err(NotHello::Frame(FrameError::TooLarge { len, max: 1024 })) if len == u32::MAX as usize
        ));
        // Just over the limit, with no payload sent yet: refused from the prefix alone.
        assert!(matches!(
            check_opening(&1025u32.to_be_bytes(), 1024),
            Err(NotHello::Frame(FrameError::TooLarge { len: 1025, .. }))
        ));
        assert!(check_opening(&1024u32.to_be_bytes(), 1024).is_ok());
        let mut garbage = vec![0, 0, 0, 16];
        garbage.extend_from_slice(&[0xff; 16]);
        assert!(matches!(
            check_opening(&garbage, 1024),
            Err(NotHello::Frame(FrameError::Decode(_)))
        ));
        assert!(matches!(
            check_opening(&hello("GET / HTTP/1.1"), 1024),
            Err(NotHello::BadMagic)
        ));
    }
}
