//! Fuzz target `iblt`: see `meridian::fuzzing::iblt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::iblt(data));
