//! One row per scenario, as a table or JSON.

use serde::Serialize;

/// What one scenario measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// The scenario's name.
    pub scenario: String,
    /// Writes acknowledged.
    pub acked: usize,
    /// Acknowledged writes missing after the heal (must be 0).
    pub lost: usize,
    /// Writes whose outcome the client could not know.
    pub unknown: usize,
    /// Writes refused (nothing written).
    pub failed: usize,
    /// Other violations: removed or deleted things back, a client not reading its own write,
    /// a majority write acknowledged by a cut-off region, counters out of bounds, no
    /// convergence (must be 0).
    pub violations: usize,
    /// Reads made: of one's own writes (read-your-writes), `majority` reads and plain reads
    /// of writes acknowledged at `all`.
    pub reads: usize,
    /// Of those, `majority` and plain reads of other sessions' strong writes.
    pub strong_reads: usize,
    /// Reads no region answered (bounded: 2% of reads, outside a whole-cluster outage).
    pub unanswered: usize,
    /// Session reads excused by a fault: `NotYetVisible` while a region that may hold the
    /// session's writes alone was impaired, `Uncoverable` after a disk loss, a miss of a
    /// write at risk.
    pub excused: usize,
    /// Acknowledged removals, deletes and context writes, checked wherever they were served.
    pub removals: usize,
    /// Of those, served by another region than the read before them.
    pub cross_region: usize,
    /// Of those, not decidable: the target is present and was applied twice after a lost
    /// answer (bounded: 5%, at least 2).
    pub unverifiable: usize,
    /// `local` writes acknowledged just before their region lost its disk, checked as
    /// unknown (bounded: 5% of acknowledged writes, at least 5).
    pub at_risk: usize,
    /// Writes asking for a majority or more attempted at a cut-off region while cut off
    /// (at least one where a region is cut off).
    pub minority_attempts: usize,
    /// Last-writer-wins writes whose marker was compared with one their region stamped
    /// before (the order of the shared key's writes included).
    pub markers_compared: usize,
    /// Bounds exceeded: unverifiable, at risk or unanswered beyond what is allowed, a
    /// failover longer than the scenario allows (must be 0).
    pub over_bound: usize,
    /// The longest time one client went without an acknowledged write, in milliseconds
    /// (from just before the fault to the end of the load).
    pub failover_ms: u64,
    /// From the heal until every region had applied every write any region had applied at
    /// the heal, in milliseconds (the load still running).
    pub catch_up_ms: Option<u64>,
    /// From the end of the load until every region held the same state, in milliseconds.
    pub converge_ms: Option<u64>,
    /// Bytes the emulated links carried during the catch-up.
    pub catchup_bytes: u64,
    /// Bytes of the records that had to move: written during the outage, times the regions
    /// that had to receive them (for a wiped region, everything it held too).
    pub moved_bytes: u64,
    /// The first problems found, described.
    pub problems: Vec<String>,
    /// What the scenario measured beside the columns (a rolling upgrade: how long each region
    /// was out).
    pub notes: Vec<String>,
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<16} {:>6} {:>4} {:>6} {:>6} {:>4} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>4} {:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
        "scenario",
        "acked",
        "lost",
        "unknwn",
        "failed",
        "viol",
        "bound",
        "reads",
        "unans",
        "excus",
        "rmvls",
        "unver",
        "risk",
        "maj",
        "min",
        "failovr ms",
        "catchup ms",
        "convrg ms",
        "catchup B",
        "moved B",
        "ratio"
    );
    for r in rows {
        let ms = |v: Option<u64>| v.map_or("never".to_string(), |ms| ms.to_string());
        let ratio = if r.moved_bytes > 0 {
            format!("{:.1}", r.catchup_bytes as f64 / r.moved_bytes as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<16} {:>6} {:>4} {:>6} {:>6} {:>4} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>4} {:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
            r.scenario,
            r.acked,
            r.lost,
            r.unknown,
            r.failed,
            r.violations,
            r.over_bound,
            r.reads,
            r.unanswered,
            r.excused,
            r.removals,
            r.unverifiable,
            r.at_risk,
            r.strong_reads,
            r.minority_attempts,
            r.failover_ms,
            ms(r.catch_up_ms),
            ms(r.converge_ms),
            r.catchup_bytes,
            r.moved_bytes,
            ratio
        );
    }
    println!(
        "(unans: reads no region answered; excus: session reads excused by a fault; rmvls: acknowledged removals, deletes and context writes checked, unver: of them undecidable; risk: writes at risk; maj: majority and plain reads of strong writes; min: majority attempts at a cut-off region; bound: bounds exceeded)"
    );
    for r in rows {
        for n in &r.notes {
            println!("{}: {n}", r.scenario);
        }
        for p in &r.problems {
            println!("{}: {p}", r.scenario);
        }
    }
}
