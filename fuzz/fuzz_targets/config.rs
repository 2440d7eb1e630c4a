//! Arbitrary text as usherd's TOML configuration file: parsed, applied over the defaults
//! and validated, as `usherd --config` does.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = usher_server::fuzzing::config_file(data);
});
