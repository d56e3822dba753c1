//! Fuzz target `frame`: see `meridian::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::frame(data));
