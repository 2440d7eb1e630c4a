//! Arbitrary bytes as one message payload, decoded both ways and re-encoded.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_proto::fuzzing::decode_message(data));
