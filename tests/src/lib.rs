//! Cross-crate and real-process tests for Meridian; the helper binaries live in `src/bin`.
