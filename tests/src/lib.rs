//! Meridian's test kit, never published: fuzz entry points for every decoder fed by the
//! network or the disk ([`fuzzing`]), used by the cargo-fuzz targets in `fuzz/` and replayed by
//! `tests/fuzz_replay.rs`; cross-crate and real-process tests live in `tests/`, their helper
//! binaries in `src/bin`.

#![deny(clippy::unwrap_used)]

pub mod fuzzing;
