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
    /// Reads of one's own writes made.
    pub reads: usize,
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
}

/// Prints the rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<14} {:>7} {:>5} {:>7} {:>6} {:>5} {:>11} {:>11} {:>11} {:>12} {:>12} {:>6}",
        "scenario",
        "acked",
        "lost",
        "unknown",
        "failed",
        "viol",
        "failover ms",
        "catch-up ms",
        "converge ms",
        "catch-up B",
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
            "{:<14} {:>7} {:>5} {:>7} {:>6} {:>5} {:>11} {:>11} {:>11} {:>12} {:>12} {:>6}",
            r.scenario,
            r.acked,
            r.lost,
            r.unknown,
            r.failed,
            r.violations,
            r.failover_ms,
            ms(r.catch_up_ms),
            ms(r.converge_ms),
            r.catchup_bytes,
            r.moved_bytes,
            ratio
        );
    }
    for r in rows {
        for p in &r.problems {
            println!("{}: {p}", r.scenario);
        }
    }
}
