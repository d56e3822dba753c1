//! The order in which a client tries regions: available ones first (closed breaker, or a
//! half-open one whose probe may go), nearest first, then the rest. Nearest by measured round
//! trip once every available region has one (a measured region is never compared with an
//! estimated one), by great-circle distance from the client before that. Round trips within
//! one band of [`RTT_BAND_MS`] count as equal (distance, then the name, decide): noise of a
//! millisecond does not move a client between two regions.

use super::breaker::{Breaker, BreakerState};
use super::geo::{Location, KM_PER_RTT_MS};
use serde::{Deserialize, Serialize};

/// A region a client may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Region name.
    pub region: String,
    /// Where it is, if known.
    pub location: Option<Location>,
    /// Smoothed round trip measured to it, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Whether it takes requests.
    pub health: Health,
}

/// Width of the round-trip bands regions are compared by, in milliseconds.
pub const RTT_BAND_MS: f64 = 5.0;

/// Weight of a new round-trip sample in a smoothed round trip (as TCP's SRTT: 1/8).
const RTT_SAMPLE_WEIGHT: f64 = 0.125;

/// A smoothed round trip after one more sample (the first sample stands alone).
pub fn smoothed_rtt(previous: Option<f64>, sample_ms: f64) -> f64 {
    previous.map_or(sample_ms, |old| old + RTT_SAMPLE_WEIGHT * (sample_ms - old))
}

/// How a region's place in the order was estimated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A measured round trip.
    RoundTrip {
        /// Milliseconds.
        rtt_ms: f64,
    },
    /// The great-circle distance from the client.
    Distance {
        /// Kilometres.
        km: f64,
    },
    /// Nothing known: after the others, by name.
    Unknown,
}

/// Whether a region takes requests, as the client's breaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Closed breaker.
    Healthy,
    /// Cool-down passed: the next request probes it.
    Probing,
    /// Open breaker: tried only when no other region is available.
    Down,
}

impl Health {
    /// A region's health as its breaker says at `now_ms`.
    pub fn of(breaker: &Breaker, now_ms: u64) -> Health {
        match breaker.state(now_ms) {
            BreakerState::Closed => Health::Healthy,
            BreakerState::HalfOpen => Health::Probing,
            BreakerState::Open { .. } => Health::Down,
        }
    }
}

/// One region in the order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Index in the candidates given.
    pub index: usize,
    /// Region name.
    pub region: String,
    /// How its distance was estimated.
    pub reason: Reason,
    /// Its health.
    pub health: Health,
}

/// A region's sort key (its round-trip band, then its distance) and how it was estimated;
/// round trips count only when every available region has one (`measured`).
fn estimate(
    candidate: &Candidate,
    near: Option<&Location>,
    measured: bool,
) -> ((f64, f64), Reason) {
    let km = match (near, candidate.location.as_ref()) {
        (Some(client), Some(region)) => Some(client.distance_km(region)),
        _ => None,
    };
    let band = |rtt_ms: f64| (rtt_ms / RTT_BAND_MS).floor();
    match (candidate.rtt_ms.filter(|_| measured), km) {
        (Some(rtt_ms), km) => (
            (band(rtt_ms), km.unwrap_or(f64::INFINITY)),
            Reason::RoundTrip { rtt_ms },
        ),
        (None, Some(km)) => ((band(km / KM_PER_RTT_MS), km), Reason::Distance { km }),
        (None, None) => ((f64::INFINITY, f64::INFINITY), Reason::Unknown),
    }
}

/// Orders `candidates` for a client at `near`: available regions first, each group nearest
/// first (ties and unknowns by name).
pub fn order_regions(candidates: &[Candidate], near: Option<&Location>) -> Vec<Ranked> {
    let measured = candidates
        .iter()
        .filter(|c| c.health != Health::Down)
        .all(|c| c.rtt_ms.is_some());
    let mut ranked: Vec<(Health, (f64, f64), Ranked)> = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let (key, reason) = estimate(c, near, measured);
            let rank = Ranked {
                index,
                region: c.region.clone(),
                reason,
                health: c.health,
            };
            (c.health, key, rank)
        })
        .collect();
    ranked.sort_by(|(ha, ka, ra), (hb, kb, rb)| {
        let down = |h: &Health| *h == Health::Down;
        down(ha)
            .cmp(&down(hb))
            .then(ka.0.total_cmp(&kb.0))
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| ra.region.cmp(&rb.region))
    });
    ranked.into_iter().map(|(_, _, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::BreakerSettings;

    fn regions() -> Vec<Candidate> {
        let at = |lat, lon| Location::new(lat, lon);
        vec![
            Candidate {
                region: "us-east".into(),
                location: at(39.0, -77.5),
                rtt_ms: None,
                health: Health::Healthy,
            },
            Candidate {
                region: "eu-west".into(),
                location: at(53.3, -6.3),
                rtt_ms: None,
                health: Health::Healthy,
            },
            Candidate {
                region: "ap-northeast".into(),
                location: at(35.7, 139.7),
                rtt_ms: None,
                health: Health::Healthy,
            },
        ]
    }

    fn names(order: &[Ranked]) -> Vec<&str> {
        order.iter().map(|r| r.region.as_str()).collect()
    }

    #[test]
    fn smoothed_round_trips_move_an_eighth_towards_each_sample() {
        assert_eq!(smoothed_rtt(None, 80.0), 80.0);
        assert_eq!(smoothed_rtt(Some(80.0), 160.0), 90.0);
    }

    #[test]
    fn nearest_by_distance_until_round_trips_are_measured() {
        let paris = Location::new(48.85, 2.35);
        let order = order_regions(&regions(), paris.as_ref());
        assert_eq!(names(&order), ["eu-west", "us-east", "ap-northeast"]);
        assert!(matches!(order[0].reason, Reason::Distance { km } if km < 1_000.0));
        // Measured round trips win over distance once every region has one.
        let mut measured = regions();
        measured[2].rtt_ms = Some(3.0);
        measured[1].rtt_ms = Some(9.0);
        let order = order_regions(&measured, paris.as_ref());
        assert_eq!(
            names(&order),
            ["eu-west", "us-east", "ap-northeast"],
            "not all measured"
        );
        measured[0].rtt_ms = Some(30.0);
        let order = order_regions(&measured, paris.as_ref());
        assert_eq!(names(&order), ["ap-northeast", "eu-west", "us-east"]);
        assert_eq!(order[0].reason, Reason::RoundTrip { rtt_ms: 3.0 });
        // Round trips within one band are equal: distance decides.
        let mut close = regions();
        close[0].rtt_ms = Some(0.4);
        close[1].rtt_ms = Some(1.9);
        close[2].rtt_ms = Some(180.0);
        let order = order_regions(&close, paris.as_ref());
        assert_eq!(names(&order), ["eu-west", "us-east", "ap-northeast"]);
        // Without a location or a measurement: by name.
        let order = order_regions(&regions(), None);
        assert_eq!(names(&order), ["ap-northeast", "eu-west", "us-east"]);
        assert!(order.iter().all(|r| r.reason == Reason::Unknown));
    }

    #[test]
    fn a_down_region_goes_last_and_comes_back_first_when_probing() {
        let paris = Location::new(48.85, 2.35);
        let mut breaker = Breaker::new(BreakerSettings::default());
        breaker.on_failure(1_000);
        let mut candidates = regions();
        candidates[1].health = Health::of(&breaker, 1_500);
        let order = order_regions(&candidates, paris.as_ref());
        assert_eq!(names(&order), ["us-east", "ap-northeast", "eu-west"]);
        assert_eq!(order[2].health, Health::Down);
        let later = 1_000 + BreakerSettings::default().open_ms;
        candidates[1].health = Health::of(&breaker, later);
        let order = order_regions(&candidates, paris.as_ref());
        assert_eq!(names(&order), ["eu-west", "us-east", "ap-northeast"]);
        assert_eq!(order[0].health, Health::Probing);
    }
}
