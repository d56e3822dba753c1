//! Places on Earth: a region's or a client's location, and great-circle distances.

use serde::{Deserialize, Serialize};

/// Mean radius of the Earth, in kilometres.
const EARTH_RADIUS_KM: f64 = 6_371.0;

/// Kilometres of great-circle distance per millisecond of round trip, as an estimate before a
/// round trip is measured: light in fibre covers about 200 km per millisecond one way, so
/// 100 km per millisecond there and back (routes are longer than great circles; the estimate
/// only orders regions until a measurement replaces it).
pub const KM_PER_RTT_MS: f64 = 100.0;

/// Latitude and longitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Degrees north (-90 to 90).
    pub latitude: f64,
    /// Degrees east (-180 to 180).
    pub longitude: f64,
}

impl Location {
    /// A place, if the coordinates are on Earth.
    pub fn new(latitude: f64, longitude: f64) -> Option<Location> {
        let place = Location {
            latitude,
            longitude,
        };
        place.is_on_earth().then_some(place)
    }

    /// Whether both coordinates are finite and in range.
    pub fn is_on_earth(&self) -> bool {
        (-90.0..=90.0).contains(&self.latitude) && (-180.0..=180.0).contains(&self.longitude)
    }

    /// Great-circle distance to `other`, in kilometres (haversine).
    pub fn distance_km(&self, other: &Location) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    /// `LAT,LON` in degrees, e.g. `48.85,2.35`.
    fn from_str(s: &str) -> Result<Location, String> {
        let (lat, lon) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected LAT,LON in degrees"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| format!("{s:?}: {v:?} is not a number: {e}"))
        };
        Location::new(parse(lat)?, parse(lon)?)
            .ok_or_else(|| format!("{s:?} is not a place on Earth"))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.latitude, self.longitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_between_known_cities() {
        let paris: Location = "48.8566,2.3522".parse().expect("paris");
        let new_york: Location = "40.7128,-74.0060".parse().expect("new york");
        let tokyo = Location::new(35.6762, 139.6503).expect("tokyo");
        let d = paris.distance_km(&new_york);
        assert!((5_800.0..5_900.0).contains(&d), "{d}");
        let d = paris.distance_km(&tokyo);
        assert!((9_650.0..9_800.0).contains(&d), "{d}");
        assert_eq!(paris.distance_km(&paris), 0.0);
        assert!((paris.distance_km(&tokyo) - tokyo.distance_km(&paris)).abs() < 1e-6);
    }

    #[test]
    fn places_off_earth_or_malformed_are_refused() {
        assert!("91,0".parse::<Location>().is_err());
        assert!("0,181".parse::<Location>().is_err());
        assert!("NaN,0".parse::<Location>().is_err());
        assert!("48.8".parse::<Location>().is_err());
        assert!("a,b".parse::<Location>().is_err());
    }
}
