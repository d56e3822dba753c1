//! Fuzz target `token`: see `meridian_tests::fuzzing::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::token(data));
