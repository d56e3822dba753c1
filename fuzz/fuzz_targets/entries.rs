//! Fuzz target `entries`: see `meridian::fuzzing::entries`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::entries(data));
