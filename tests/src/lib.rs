//! Meridian's test kit, never published, used by the demo, the benchmarks and the tests:
//! clusters of real `meridian node` processes on loopback with their certificates and
//! configurations ([`Cluster`], [`NodeProcess`]), free ports ([`ports`]), a metrics and health
//! scraper ([`scrape`]), links between nodes through the link emulator
//! ([`meridian_netem`], re-exported as [`netem`]; [`Cluster::emulate_links`]), and fuzz entry points
//! for every decoder fed by the network or the disk ([`fuzzing`], used by the cargo-fuzz targets
//! in `fuzz/` and replayed by `tests/fuzz_replay.rs`). Cross-crate and real-process tests live
//! in `tests/`, their helper binaries in `src/bin`. The seed runner of the simulator, with its
//! replay line, is `meridian_sim::run_seeds`.

#![deny(clippy::unwrap_used)]

pub mod cluster;
pub mod fuzzing;
pub mod node_process;
pub mod outage;
pub mod ports;
pub mod scrape;

pub use cluster::Cluster;
pub use meridian_netem as netem;
pub use node_process::NodeProcess;
