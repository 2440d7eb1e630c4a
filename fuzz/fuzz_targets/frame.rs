//! Arbitrary bytes through the frame decoder, every frame decoded as a message.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_proto::fuzzing::decode_stream(data));
