//! Fuzz target `client_request`: see `meridian_tests::fuzzing::client_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::client_request(data));
