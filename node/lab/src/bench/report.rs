//! Benchmark output: a table for people, one JSON object per line with `--json`. Each line
//! says the setup it was measured with (`setup`: records, value size, threads, durability),
//! and a process prints the table's header once, so `bench all` is one table.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The setup the metrics emitted from now on are measured with.
static SETUP: Mutex<String> = Mutex::new(String::new());
/// Whether this process printed the table's header.
static HEADER_PRINTED: AtomicBool = AtomicBool::new(false);

/// Says the setup of the metrics emitted from now on (shown with each of them).
pub fn setup(text: impl Into<String>) {
    if let Ok(mut s) = SETUP.lock() {
        *s = text.into();
    }
}

/// A metric as a JSON line: its fields and its setup.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    metric: &'a Metric,
    setup: &'a str,
}

/// One measured figure.
#[derive(Serialize, Clone, Debug)]
pub struct Metric {
    /// Suite name (`local`, ...).
    pub suite: &'static str,
    /// Metric name.
    pub metric: &'static str,
    /// Measured value.
    pub value: f64,
    /// Unit of `value` and `reference`.
    pub unit: &'static str,
    /// The reference measured in the same run, if the metric has one.
    pub reference: Option<f64>,
    /// `value / reference` (higher is better for throughputs).
    pub ratio: Option<f64>,
    /// What the ratio (or the value, without a reference) should reach.
    #[serde(skip)]
    pub target: &'static str,
}

impl Metric {
    /// A metric with a reference; the ratio is computed.
    pub fn with_reference(
        suite: &'static str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
        reference: f64,
        target: &'static str,
    ) -> Metric {
        let ratio = (reference > 0.0).then(|| value / reference);
        Metric {
            suite,
            metric,
            value,
            unit,
            reference: Some(reference),
            ratio,
            target,
        }
    }
}

/// Prints one metric as soon as it is measured (a closed stdout is an error, not a panic).
pub fn emit(m: &Metric, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let setup = SETUP.lock().map(|s| s.clone()).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        let line = Line {
            metric: m,
            setup: &setup,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        let reference = m.reference.map_or("-".to_string(), |r| format!("{r:.0}"));
        let ratio = m.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        let target = format!("target {}", m.target);
        writeln!(
            out,
            "{:<11} {:<24} {:>14.1} {:<10} {:>14} {:>7}   {:<15} {}",
            m.suite, m.metric, m.value, m.unit, reference, ratio, target, setup
        )?;
    }
    Ok(())
}

/// Prints the table header (not in JSON mode), once per process.
pub fn header(json: bool) {
    if !json && !HEADER_PRINTED.swap(true, Ordering::SeqCst) {
        println!(
            "{:<11} {:<24} {:>14} {:<10} {:>14} {:>7}   {:<15} setup",
            "suite", "metric", "value", "unit", "reference", "ratio", "target"
        );
    }
}
