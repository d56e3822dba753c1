//! Fuzz target `record`: see `meridian_tests::fuzzing::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::record(data));
