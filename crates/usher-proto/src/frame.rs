//! Length-prefixed framing.

use bytes::{Buf, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload accepted, in bytes (the protocol's limit; a server may set a lower one,
/// see [`FrameReader::with_limit`]). A frame announcing more is refused before any of it
/// is buffered, so a hostile length prefix cannot make the peer allocate.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// What can go wrong reading or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Transport failure.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The payload length of `msg` as a frame: what [`MAX_FRAME_LEN`] bounds.
pub fn payload_len<M: Message>(msg: &M) -> usize {
    msg.encoded_len()
}

/// What one more nested message (or string) of `len` bytes in a repeated field adds to
/// its parent's payload: the field key, the length prefix and the bytes.
pub fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Encodes a message as one frame (length prefix plus payload).
pub fn encode_frame<M: Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    // The encoded length of our messages is bounded well below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out)
        .expect("Vec<u8> grows as needed, so encoding cannot run out of room");
    out
}

/// Tries to take one whole frame's payload off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; the cheap length check comes first, so a
/// partial frame costs nothing to re-examine.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
    decode_frame_within(buf, MAX_FRAME_LEN)
}

/// [`decode_frame`] with a limit of `max` bytes per payload.
pub fn decode_frame_within(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len)))
}

/// Writes one message as a frame, and flushes it (a TLS stream holds written bytes
/// until flushed; for a plain socket the flush costs nothing).
pub async fn write_frame<W: AsyncWrite + Unpin, M: Message>(
    w: &mut W,
    msg: &M,
) -> Result<(), std::io::Error> {
    w.write_all(&encode_frame(msg)).await?;
    w.flush().await
}

/// Buffered frame reader over any byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a reader, accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new(inner: R) -> Self {
        FrameReader::with_limit(inner, MAX_FRAME_LEN)
    }

    /// Wraps a reader, accepting frames up to `max` bytes (at most [`MAX_FRAME_LEN`]).
    pub fn with_limit(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(1024),
            max: max.min(MAX_FRAME_LEN),
        }
    }

    /// Reads the next message. `Ok(None)` means the peer closed the connection cleanly
    /// between frames.
    pub async fn read<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        loop {
            if let Some(payload) = decode_frame_within(&mut self.buf, self.max)? {
                return Ok(Some(M::decode(payload.freeze())?));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, request};

    #[test]
    fn partial_frames_wait_for_more() {
        let msg = Request {
            id: 7,
            kind: Some(request::Kind::Heartbeat(crate::Heartbeat {})),
        };
        let bytes = encode_frame(&msg);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode_frame(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "frame complete too early at byte {i}");
            } else {
                let decoded = Request::decode(got.unwrap().freeze()).unwrap();
                assert_eq!(decoded, msg);
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
