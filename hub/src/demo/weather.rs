//! Seeded cloud cover for the demo: one sky type per day from a Markov chain (clear, broken,
//! overcast), and within the day a smooth cloud factor (1 = clear sky, towards 0 = thick overcast).
//! Deterministic in (seed, time): the same seed replays the same weather; no clock, no I/O.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

/// The sky type of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sky {
    Clear,
    Broken,
    Overcast,
}

impl Sky {
    const ALL: [Sky; 3] = [Sky::Clear, Sky::Broken, Sky::Overcast];

    fn index(self) -> usize {
        match self {
            Sky::Clear => 0,
            Sky::Broken => 1,
            Sky::Overcast => 2,
        }
    }
}

/// Day-to-day transition probabilities, rows "from" clear, broken, overcast; columns "to" the same.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherParams {
    #[serde(default = "default_transitions")]
    pub transitions: [[f64; 3]; 3],
}

impl Default for WeatherParams {
    fn default() -> Self {
        Self {
            transitions: default_transitions(),
        }
    }
}

/// Alpine-valley days: clear spells last, overcast spells are shorter. Tuned so that a year at
/// Sondrio yields 1,100–1,200 kWh/kWp (tested in `demo::model`).
fn default_transitions() -> [[f64; 3]; 3] {
    [[0.65, 0.25, 0.10], [0.35, 0.40, 0.25], [0.25, 0.35, 0.40]]
}

impl WeatherParams {
    /// Each row must be a probability distribution.
    pub fn validate(&self) -> Result<(), String> {
        for (i, row) in self.transitions.iter().enumerate() {
            if row.iter().any(|p| !(0.0..=1.0).contains(p))
                || (row.iter().sum::<f64>() - 1.0).abs() > 1e-6
            {
                return Err(format!(
                    "weather.transitions row {} must be probabilities summing to 1",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

/// The first day of the chain; days before it take the stationary start state.
const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(2020, 1, 1) {
    Some(d) => d,
    None => panic!("valid epoch"),
};
/// Days precomputed from the epoch (to 2060).
const DAYS: usize = 366 * 40;

/// Cloud cover for every day from 2020 to 2060, fixed by the seed.
#[derive(Debug, Clone)]
pub struct Weather {
    seed: u64,
    days: Vec<Sky>,
}

impl Weather {
    pub fn new(seed: u64, params: &WeatherParams) -> Self {
        let mut days = Vec::with_capacity(DAYS);
        let mut sky = Sky::Clear;
        for d in 0..DAYS {
            let u = unit(hash3(seed, 0x5EA7_4E12, d as u64));
            let row = params.transitions[sky.index()];
            let mut acc = 0.0;
            let mut next = Sky::Overcast;
            for (s, p) in Sky::ALL.into_iter().zip(row) {
                acc += p;
                if u < acc {
                    next = s;
                    break;
                }
            }
            sky = next;
            days.push(sky);
        }
        Self { seed, days }
    }

    /// The sky type of the (UTC) day containing `t`.
    pub fn sky(&self, t: DateTime<Utc>) -> Sky {
        let idx = (t.date_naive() - EPOCH).num_days();
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.days.get(i))
            .copied()
            .unwrap_or(Sky::Broken)
    }

    /// Share of the clear-sky irradiance that reaches the ground at `t`, in (0, 1].
    pub fn cloud_factor(&self, t: DateTime<Utc>) -> f64 {
        let secs = t.timestamp();
        // Values at 20-minute knots, interpolated with a smoothstep so power has no jumps.
        const KNOT_S: i64 = 1200;
        let k = secs.div_euclid(KNOT_S);
        let frac = secs.rem_euclid(KNOT_S) as f64 / KNOT_S as f64;
        let w = frac * frac * (3.0 - 2.0 * frac);
        let a = self.knot(k);
        let b = self.knot(k + 1);
        a + (b - a) * w
    }

    fn knot(&self, k: i64) -> f64 {
        let t = DateTime::from_timestamp(k * 1200, 0).unwrap_or_default();
        let u = unit(hash3(self.seed, 0xC10D, k as u64));
        match self.sky(t) {
            Sky::Clear => 0.94 + 0.06 * u,
            // Broken cloud: sun and shade alternate.
            Sky::Broken => 0.25 + 0.70 * u,
            Sky::Overcast => 0.12 + 0.20 * u,
        }
    }
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash, the demo's only source of randomness.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed and two keys.
pub fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed) ^ a) ^ b)
}

/// A hash mapped to [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_same_seed_replays_the_same_weather_and_another_seed_does_not() {
        let p = WeatherParams::default();
        let (a, b, c) = (
            Weather::new(7, &p),
            Weather::new(7, &p),
            Weather::new(8, &p),
        );
        let t0 = at("2026-01-01T12:00:00Z");
        let days = |w: &Weather| {
            (0..200)
                .map(|d| w.sky(t0 + chrono::Duration::days(d)))
                .collect::<Vec<_>>()
        };
        assert_eq!(days(&a), days(&b));
        assert_ne!(days(&a), days(&c));
    }

    #[test]
    fn a_year_has_clear_broken_and_overcast_days_in_plausible_shares() {
        let w = Weather::new(42, &WeatherParams::default());
        let t0 = at("2026-01-01T12:00:00Z");
        let mut n = [0usize; 3];
        for d in 0..365 {
            n[w.sky(t0 + chrono::Duration::days(d)).index()] += 1;
        }
        // Stationary shares of the default chain: about 47 % clear, 31 % broken, 22 % overcast.
        assert!((130..215).contains(&n[0]), "clear {n:?}");
        assert!((70..150).contains(&n[1]), "broken {n:?}");
        assert!((40..120).contains(&n[2]), "overcast {n:?}");
    }

    #[test]
    fn cloud_factor_stays_in_range_and_moves_smoothly() {
        let w = Weather::new(3, &WeatherParams::default());
        let mut t = at("2026-04-01T00:00:00Z");
        let mut prev = w.cloud_factor(t);
        for _ in 0..(30 * 24 * 60) {
            t += chrono::Duration::minutes(1);
            let f = w.cloud_factor(t);
            assert!(f > 0.1 && f <= 1.0, "{f} at {t}");
            // At most 0.82 of swing over 20 minutes: a minute moves it by well under 0.1.
            assert!((f - prev).abs() < 0.1, "jump {prev} -> {f} at {t}");
            prev = f;
        }
    }

    #[test]
    fn clear_days_are_bright_and_overcast_days_dark() {
        let w = Weather::new(11, &WeatherParams::default());
        let t0 = at("2026-01-01T00:00:00Z");
        for d in 0..120 {
            let noon = t0 + chrono::Duration::days(d) + chrono::Duration::hours(11);
            let f = w.cloud_factor(noon);
            match w.sky(noon) {
                Sky::Clear => assert!(f >= 0.94, "{f}"),
                Sky::Overcast => assert!(f <= 0.32, "{f}"),
                Sky::Broken => assert!((0.25..=0.95).contains(&f), "{f}"),
            }
        }
    }

    #[test]
    fn transitions_must_be_probability_rows() {
        let mut p = WeatherParams::default();
        assert!(p.validate().is_ok());
        p.transitions[1] = [0.5, 0.5, 0.5];
        assert_eq!(
            p.validate().unwrap_err(),
            "weather.transitions row 2 must be probabilities summing to 1"
        );
    }
}
