//! Fuzz target `frame`: see `meridian_tests::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::frame(data));
