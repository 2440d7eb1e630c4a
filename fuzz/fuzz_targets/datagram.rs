//! Arbitrary bytes as every kind of datagram on the UDP port (keepalive, ack, discovery).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_proto::fuzzing::decode_datagram(data));
