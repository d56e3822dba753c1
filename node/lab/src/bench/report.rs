//! Benchmark output: a table for people, one JSON object per line with `--json`.

use serde::Serialize;

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
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    } else {
        let reference = m.reference.map_or("-".to_string(), |r| format!("{r:.0}"));
        let ratio = m.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        writeln!(
            out,
            "{:<8} {:<24} {:>14.1} {:<10} {:>14} {:>7}   target {}",
            m.suite, m.metric, m.value, m.unit, reference, ratio, m.target
        )?;
    }
    Ok(())
}

/// Prints the table header (not in JSON mode).
pub fn header(json: bool) {
    if !json {
        println!(
            "{:<8} {:<24} {:>14} {:<10} {:>14} {:>7}",
            "suite", "metric", "value", "unit", "reference", "ratio"
        );
    }
}
