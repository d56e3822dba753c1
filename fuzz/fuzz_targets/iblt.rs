//! Fuzz target `iblt`: see `meridian_tests::fuzzing::iblt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::iblt(data));
