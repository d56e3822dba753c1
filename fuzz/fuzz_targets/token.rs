//! Fuzz target `token`: see `meridian::fuzzing::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::token(data));
