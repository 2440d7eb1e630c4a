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

/// Decodes arbitrary bytes as every kind of datagram on the UDP port, checking tags with a
/// fixed key, as the server and the client would. Must never panic.
pub fn decode_datagram(data: &[u8]) {
    const KEY: [u8; crate::udp::KEEPALIVE_KEY_LEN] = [7; crate::udp::KEEPALIVE_KEY_LEN];
    if let Ok(crate::udp::Inbound::Keepalive(_, whole)) = crate::udp::decode_inbound(data) {
        let _ = crate::udp::verify_keepalive(whole, &KEY);
    }
    let _ = crate::udp::decode_ack(data, &KEY);
    if let Ok(a) = crate::udp::decode_announce(data) {
        let _ = crate::udp::encode_announce(&a);
    }
}

/// Seed inputs for the datagram corpus: one of each kind, made with the fuzzing key.
pub fn datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::udp;
    const KEY: [u8; udp::KEEPALIVE_KEY_LEN] = [7; udp::KEEPALIVE_KEY_LEN];
    let k = udp::Keepalive {
        session: 42,
        seq: 1,
        elapsed_ms: 30_000,
    };
    let announce = udp::Announce {
        nonce: 9,
        tcp_port: 1648,
        flags: udp::ANNOUNCE_TLS,
        vendors: vec!["acme".into(), "bench".into()],
    };
    vec![
        ("keepalive", udp::encode_keepalive(&k, &KEY).to_vec()),
        (
            "ack",
            udp::encode_ack(
                &udp::Ack {
                    session: 42,
                    seq: 1,
                    flags: udp::ACK_CALL_BACK,
                },
                &KEY,
            )
            .to_vec(),
        ),
        ("discover", udp::encode_discover(9).to_vec()),
        ("announce", udp::encode_announce(&announce)),
    ]
}
