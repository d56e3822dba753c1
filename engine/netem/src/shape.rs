//! What a directed link does to the datagrams crossing it.

use serde::{Deserialize, Serialize};

/// Longest latency (and jitter) a link may be given.
pub const LATENCY_MS_MAX: f64 = 60_000.0;

/// The impairments of one direction of a link; the default is a perfect link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    /// One-way delay, in milliseconds.
    pub latency_ms: f64,
    /// Each datagram's delay varies uniformly by up to this much either way (never below
    /// zero); datagrams stay in order unless `reorder` says otherwise: one never leaves
    /// before the one ahead of it, so under steady traffic delays lean to the high side. A
    /// lower latency applies once the datagrams held under the old one have left.
    pub jitter_ms: f64,
    /// Share of datagrams dropped (0 to 1).
    pub loss: f64,
    /// Share of datagrams delivered twice (0 to 1).
    pub duplicate: f64,
    /// Share of datagrams sent without the latency, overtaking those before them (0 to 1).
    pub reorder: f64,
    /// Bandwidth cap in kilobits per second (`None`: uncapped). Datagrams queue behind it;
    /// beyond a second of backlog they are dropped, as by a router's full queue.
    pub rate_kbit: Option<u64>,
    /// Everything is dropped (a blackhole, or one way of a partition).
    pub down: bool,
}

/// Why a shape was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    /// A delay that is negative, not a number, or over a minute.
    #[error("{field} must be between 0 and {LATENCY_MS_MAX} ms, not {value}")]
    Delay {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A share outside 0..=1.
    #[error("{field} must be a share between 0 and 1, not {value}")]
    Share {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A bandwidth cap of zero.
    #[error("rate_kbit must be at least 1 (use down = true to cut the link)")]
    ZeroRate,
    /// A value that does not parse.
    #[error("{0}")]
    Syntax(String),
}

impl Shape {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ShapeError> {
        for (field, value) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
        ] {
            if !(0.0..=LATENCY_MS_MAX).contains(&value) {
                return Err(ShapeError::Delay { field, value });
            }
        }
        for (field, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ShapeError::Share { field, value });
            }
        }
        if self.rate_kbit == Some(0) {
            return Err(ShapeError::ZeroRate);
        }
        Ok(())
    }

    /// A link that only delays, by `latency_ms` each way.
    pub fn delay(latency_ms: f64) -> Shape {
        Shape {
            latency_ms,
            ..Shape::default()
        }
    }
}

/// A change to a shape: the fields given replace those of the current shape (after a reset to
/// a perfect link if `reset`). `rate_kbit = 0` removes the cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapeChange {
    /// Start from a perfect link.
    pub reset: bool,
    /// See [`Shape::latency_ms`].
    pub latency_ms: Option<f64>,
    /// See [`Shape::jitter_ms`].
    pub jitter_ms: Option<f64>,
    /// See [`Shape::loss`].
    pub loss: Option<f64>,
    /// See [`Shape::duplicate`].
    pub duplicate: Option<f64>,
    /// See [`Shape::reorder`].
    pub reorder: Option<f64>,
    /// See [`Shape::rate_kbit`]; 0 removes the cap.
    pub rate_kbit: Option<u64>,
    /// See [`Shape::down`].
    pub down: Option<bool>,
}

impl ShapeChange {
    /// `current` with this change applied, checked.
    pub fn apply(&self, current: Shape) -> Result<Shape, ShapeError> {
        let mut shape = if self.reset {
            Shape::default()
        } else {
            current
        };
        if let Some(v) = self.latency_ms {
            shape.latency_ms = v;
        }
        if let Some(v) = self.jitter_ms {
            shape.jitter_ms = v;
        }
        if let Some(v) = self.loss {
            shape.loss = v;
        }
        if let Some(v) = self.duplicate {
            shape.duplicate = v;
        }
        if let Some(v) = self.reorder {
            shape.reorder = v;
        }
        if let Some(v) = self.rate_kbit {
            shape.rate_kbit = (v > 0).then_some(v);
        }
        if let Some(v) = self.down {
            shape.down = v;
        }
        shape.validate()?;
        Ok(shape)
    }

    /// A change that cuts the link (`true`) or restores it (`false`), nothing else.
    pub fn down(down: bool) -> ShapeChange {
        ShapeChange {
            down: Some(down),
            ..ShapeChange::default()
        }
    }
}

/// A duration in milliseconds from `50ms`, `1.5s`, `250us` or a bare number of milliseconds.
pub fn parse_ms(text: &str) -> Result<f64, ShapeError> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .map(|v| v * scale)
        .map_err(|_| ShapeError::Syntax(format!("{text:?} is not a duration (50ms, 1.5s)")))
}

/// A share from `10%` or `0.1`.
pub fn parse_share(text: &str) -> Result<f64, ShapeError> {
    let t = text.trim();
    let parsed = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    parsed.map_err(|_| ShapeError::Syntax(format!("{text:?} is not a share (10% or 0.1)")))
}

/// A bandwidth in kilobits per second from `10mbit`, `512kbit`, `1gbit` or a bare number of
/// kilobits.
pub fn parse_rate_kbit(text: &str) -> Result<u64, ShapeError> {
    let t = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = t.strip_suffix("gbit") {
        (n.to_string(), 1_000_000.0)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n.to_string(), 1_000.0)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n.to_string(), 1.0)
    } else {
        (t.clone(), 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * scale).round() as u64),
        _ => Err(ShapeError::Syntax(format!(
            "{text:?} is not a bandwidth (10mbit, 512kbit)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_replace_only_the_fields_given_and_are_checked() {
        let base = Shape::delay(40.0);
        let lossy = ShapeChange {
            loss: Some(0.1),
            ..ShapeChange::default()
        }
        .apply(base)
        .expect("valid");
        assert_eq!((lossy.latency_ms, lossy.loss), (40.0, 0.1));
        let reset = ShapeChange {
            reset: true,
            ..ShapeChange::default()
        };
        assert_eq!(reset.apply(lossy), Ok(Shape::default()));
        let bad = ShapeChange {
            loss: Some(1.5),
            ..ShapeChange::default()
        };
        assert!(matches!(bad.apply(base), Err(ShapeError::Share { .. })));
        let nan = ShapeChange {
            latency_ms: Some(f64::NAN),
            ..ShapeChange::default()
        };
        assert!(matches!(nan.apply(base), Err(ShapeError::Delay { .. })));
        let uncapped = ShapeChange {
            rate_kbit: Some(0),
            ..ShapeChange::default()
        };
        let capped = Shape {
            rate_kbit: Some(100),
            ..base
        };
        assert_eq!(uncapped.apply(capped).map(|s| s.rate_kbit), Ok(None));
    }

    #[test]
    fn units_parse() {
        assert_eq!(parse_ms("50ms"), Ok(50.0));
        assert_eq!(parse_ms("1.5s"), Ok(1500.0));
        assert_eq!(parse_ms("250us"), Ok(0.25));
        assert_eq!(parse_ms("7"), Ok(7.0));
        assert!(parse_ms("fast").is_err());
        assert_eq!(parse_share("10%"), Ok(0.1));
        assert_eq!(parse_share("0.3"), Ok(0.3));
        assert!(parse_share("x%").is_err());
        assert_eq!(parse_rate_kbit("10mbit"), Ok(10_000));
        assert_eq!(parse_rate_kbit("512kbit"), Ok(512));
        assert_eq!(parse_rate_kbit("1gbit"), Ok(1_000_000));
        assert!(parse_rate_kbit("-1mbit").is_err());
    }
}
