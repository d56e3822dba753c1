//! Fuzz target `log_entry`: see `meridian_tests::fuzzing::log_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::log_entry(data));
