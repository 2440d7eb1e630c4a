//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus regression tests, so
//! both exercise exactly the same code.

use bytes::BytesMut;
use prost::Message;

use crate::{Request, Response, decode_frame};

/// Feeds arbitrary bytes through the frame decoder as a server would receive them, and
/// decodes every complete frame as both a request and a response. Must never panic.
pub fn decode_stream(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(payload)) = decode_frame(&mut buf) {
        let payload = payload.freeze();
        let _ = Request::decode(payload.clone());
        let _ = Response::decode(payload);
    }
}

/// Decodes arbitrary bytes as one message payload, both ways, and re-encodes whatever
/// decodes (the round trip must not panic either).
pub fn decode_message(data: &[u8]) {
    if let Ok(req) = Request::decode(data) {
        let _ = crate::encode_frame(&req);
    }
    if let Ok(resp) = Response::decode(data) {
        let _ = crate::encode_frame(&resp);
    }
}
