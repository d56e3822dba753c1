//! Fuzz target `entries`: see `meridian_tests::fuzzing::entries`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::entries(data));
