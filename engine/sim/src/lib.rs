//! Deterministic simulation of N regions of the real engine under faults.
//!
//! One seed decides everything: the workload, latencies and jitter, loss and duplication,
//! partitions (full, partial, one-way, flapping), crashes and restarts of regions on their real
//! RocksDB directories, and clock skew up to ±5 minutes. A fault phase is followed by a heal
//! phase; the checks (`history.rs`) then demand convergence within a bound, every acknowledged
//! write present or superseded by a write that saw it, no resurrection, exact counters and sets,
//! and read-your-writes for sessions carrying causal tokens. The same seed gives the same trace
//! hash.
//!
//! Beside the embedded workload (writes made on a region's engine directly), routed client
//! sessions (`world/clients.rs`) send writes and reads through the core's routing state
//! machines (`meridian_core::routing::WriteCall`, as the runtime's routed client does) to the
//! regions, whose side mirrors the node's service: answers lost after the region applied the
//! write, regions that crash or freeze with requests under way, requests that arrive past
//! their deadline, sessions that move between regions, retries after lost answers; checked
//! for outcomes that match what the regions did (a failure applied nowhere, `Unknown` only
//! after a lost answer, `retried_after_lost` whenever a write may have been applied twice, no
//! write applied after the client went on), removals and deletes that cover what the session
//! wrote or read of the key, and read-your-writes wherever the session moved.

mod history;
mod leases;
mod network;
mod rng;
mod runner;
mod workload;
mod world;

pub use leases::{run_lease_seed, LeaseReport};
pub use runner::run_seeds;

pub use network::REGIONS;
pub use rng::SimRng;

/// Which fault kinds a run injects.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Loss, duplication and reordering on every link.
    pub lossy_links: bool,
    /// Full, partial and one-way partitions, healing and flapping.
    pub partitions: bool,
    /// Crash and restart of regions.
    pub crashes: bool,
    /// Clock skew and jumps up to ±5 minutes.
    pub clock_skew: bool,
    /// Power lost in a region: its disk rolled back to a RocksDB checkpoint taken earlier
    /// (what was synced), on a new boot; a region writing with `durability = "sync"` loses
    /// nothing it acknowledged.
    pub power_loss: bool,
    /// A region's disk wiped; it comes back under the same identity.
    pub wiped_disks: bool,
    /// Clients sending forged read contexts and causal tokens.
    pub hostile_clients: bool,
    /// A member that announces false applied vectors (claims far beyond what anyone wrote)
    /// for a while.
    pub lying_peers: bool,
    /// A power loss under `wal` that also tears the log: an earlier write of the region's
    /// lost (its record back to before it, its entry missing or an empty filler) while later
    /// ones stay.
    pub torn_logs: bool,
    /// Online backups taken while writes go on, and regions restored from them.
    pub restored_backups: bool,
    /// A region's durability (`wal`, `sync`) changed between two of its runs.
    pub durability_switch: bool,
    /// A stored log entry damaged at one region (bytes that no longer decode).
    pub corrupt_storage: bool,
    /// Also stored records damaged (off by default: a damaged record is repaired only from a
    /// peer that vouches for the key, and a state transfer can leave every peer uncertain of
    /// it, so some seeds end with a record still damaged; see the notes).
    pub corrupt_records: bool,
    /// A rolling upgrade: some regions start speaking only the oldest replication protocol
    /// version (the previous release), their links run at it, and each such region speaks the
    /// newest from its next restart on.
    pub mixed_versions: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            lossy_links: true,
            partitions: true,
            crashes: true,
            clock_skew: true,
            power_loss: true,
            wiped_disks: true,
            hostile_clients: true,
            lying_peers: true,
            torn_logs: true,
            restored_backups: true,
            durability_switch: true,
            corrupt_storage: true,
            corrupt_records: false,
            mixed_versions: true,
        }
    }
}

/// What the client layer (routed sessions, `world/clients.rs`) counted.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    /// Calls (reads and writes) that ended.
    pub calls: u64,
    /// Writes written.
    pub written: u64,
    /// Attempts whose answer was lost (the connection broke or timed out).
    pub lost_answers: u64,
    /// Writes sent to another region after a lost answer.
    pub retries: u64,
    /// Writes written after a lost answer (`retried_after_lost`).
    pub retried_written: u64,
    /// Writes whose outcome was unknown.
    pub unknowns: u64,
    /// Writes whose outcome was unknown that some region applied.
    pub unknowns_applied: u64,
    /// Writes that failed (nothing written).
    pub failed: u64,
    /// Writes refused by a region because their deadline had passed there.
    pub late_refused: u64,
    /// Writes a region applied after the client gave up on the attempt, its clock stepped
    /// since the client's samples the deadline was stamped from.
    pub late_applied_after_step: u64,
    /// Writes a region applied after the client gave up on the attempt, stamped without any
    /// sample of the region's clock (the client's clock stood for it).
    pub late_applied_unmeasured: u64,
    /// Retries answered with the write that first answered their request (request tags
    /// replicated, or held where it was applied).
    pub deduplicated: u64,
    /// Read-your-writes and session-coverage checks made by the client layer.
    pub session_checks: u64,
    /// Times a region froze.
    pub freezes: u64,
    /// Sessions' moves to another region's place.
    pub moves: u64,
    /// Sessions that forgot writes lost with a disk (the stand-in for `Uncoverable`).
    pub forgotten: u64,
}

/// Parameters of a simulation run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Regions (3 to 7).
    pub regions: usize,
    /// Operations per seed.
    pub ops: usize,
    /// Simulated length of the fault phase.
    pub fault_phase_ms: u64,
    /// Simulated time allowed for convergence after the heal.
    pub heal_bound_ms: u64,
    /// Fault kinds.
    pub faults: Faults,
    /// Routed client sessions beside the embedded workload: writes and reads through the
    /// routing state machines, answers lost, regions frozen, sessions moving (off: the
    /// workload of the seeds found before the client layer, unchanged).
    pub clients: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            regions: 3,
            ops: 120,
            fault_phase_ms: 20_000,
            heal_bound_ms: 30_000,
            faults: Faults::default(),
            clients: true,
        }
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Operations acknowledged.
    pub operations: u64,
    /// Simulated time in milliseconds.
    pub simulated_ms: u64,
    /// Bytes handed to the network.
    pub bytes_moved: u64,
    /// Acknowledged writes missing after the heal.
    pub lost_acked_writes: u64,
    /// Runs that did not converge within the bound (0 or 1).
    pub divergences: u64,
    /// Superseded or deleted writes that came back.
    pub resurrections: u64,
    /// Session reads that missed their own write in a region covering their token.
    pub ryw_violations: u64,
    /// Session reads answered "not yet visible" (allowed; counted).
    pub not_yet_visible: u64,
    /// Read-your-writes checks made during the run (a session read in a region covering its
    /// token).
    pub ryw_checks: u64,
    /// Operations refused by a region waiting for its peers after a restart (allowed; counted).
    pub unavailable: u64,
    /// Acknowledged writes lost as the durability contract allows (a disk fault that may lose
    /// them took them from every region that held them: a power loss under `wal`, a wiped disk,
    /// a restored backup): taken out of the checks, counted.
    pub lost_by_contract: u64,
    /// Times a region's applied vector covered a write its records did not reflect (I1).
    pub i1_violations: u64,
    /// Logs torn by power losses, and regions restored from backups.
    pub torn_logs: u64,
    /// Regions restored from a backup.
    pub restores: u64,
    /// Records and log entries damaged.
    pub corruptions: u64,
    /// Session checks after the heal (a token covered, a last write read back, per region).
    pub session_checks: u64,
    /// Session tokens (per region) never covered after the heal because a write they name
    /// survives only inside shipped states, its entry lost with a disk (a known limit).
    pub uncoverable_tokens: u64,
    /// Writes declared lost by the regions at the end (numbers no reachable region held).
    pub declared_lost: u64,
    /// Power losses, wiped disks and new epochs in the run.
    pub disk_faults: u64,
    /// Links that ran at an older protocol version than the newest (a region of the
    /// previous release at one end).
    pub older_version_links: u64,
    /// Time from heal to convergence.
    pub convergence_ms: Option<u64>,
    /// Changes the change-feed consumer was handed, its resets (a scan each), and whether its
    /// view differed from the converged records (a change skipped without a reset).
    pub feed_changes: u64,
    /// See `feed_changes`.
    pub feed_resets: u64,
    /// See `feed_changes`.
    pub feed_violations: u64,
    /// Values a region hid as expired (a dot each, once per region), values it removed for
    /// good after hiding them (a write after expiry or a reclaim), and values shown again
    /// once an extension stamped before their expiry arrived (`world/expired.rs`).
    pub expired_hidden: u64,
    /// See `expired_hidden`.
    pub expired_removed: u64,
    /// See `expired_hidden`.
    pub expired_extended: u64,
    /// State-transfer rounds started (the log no longer held what a peer lacked).
    pub antientropy_rounds: u64,
    /// Record states sent as patches against a link's earlier states (protocol 7).
    pub linked_states: u64,
    /// Entries sent within spans: writes an earlier entry of their frame stood for
    /// (protocol 8).
    pub spanned_entries: u64,
    /// Frames with patches a receiver could not resolve (its link table differed), their
    /// entries asked again.
    pub linked_unresolved: u64,
    /// Log entries reclaimed at causal stability.
    pub log_entries_reclaimed: u64,
    /// Tombstones reclaimed at causal stability.
    pub tombstones_reclaimed: u64,
    /// Hash of everything that happened: equal for equal seeds.
    pub trace_hash: u64,
    /// What the routed client sessions did.
    pub client: ClientStats,
    /// Every violation, described.
    pub violations: Vec<String>,
}

/// A scratch directory for simulation runs, in the system's temporary directory (RocksDB
/// measured faster here on it than on `/dev/shm`).
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("meridian-sim").tempdir()
}

/// Runs one seed in a fresh scratch directory under `scratch`.
pub fn run_seed(opts: &SimOptions, seed: u64, scratch: &std::path::Path) -> SeedReport {
    let dir = scratch.join(format!("seed-{seed}"));
    let report = world::run_seed(opts, seed, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    report
}
