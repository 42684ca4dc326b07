//! The level of one zone now: green / yellow / red from its surplus, with hysteresis and a minimum
//! dwell time so a noisy surplus does not flap it, and the OpenADR 2.0b SIMPLE numeric level.
//!
//! Pure: the time is an argument; nothing here reads a clock or publishes.

use chrono::{DateTime, Duration, Utc};

use super::config::{SignalConfig, ThresholdUnit};
use crate::wire::Level;

/// The four thresholds of the level, as configured (a fraction of consumption, or kW).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub unit: ThresholdUnit,
    /// Surplus at or above which a zone turns green.
    pub green_enter: f64,
    /// Surplus below which a green zone stops being green (≤ `green_enter`).
    pub green_exit: f64,
    /// Surplus at or below which a zone turns red (negative: a deficit).
    pub red_enter: f64,
    /// Surplus above which a red zone stops being red (≥ `red_enter`).
    pub red_exit: f64,
    /// Surplus at or below which a red zone is OpenADR level 3 ("special").
    pub special: f64,
}

impl Thresholds {
    pub fn from_config(c: &SignalConfig) -> Self {
        Thresholds {
            unit: c.unit,
            green_enter: c.green_enter,
            green_exit: c.green_exit,
            red_enter: c.red_enter,
            red_exit: c.red_exit,
            special: c.special,
        }
    }

    /// A threshold value in kW for a zone that consumes `consumption_kw`.
    fn kw(&self, value: f64, consumption_kw: f64) -> f64 {
        match self.unit {
            ThresholdUnit::Kw => value,
            ThresholdUnit::Fraction => value * consumption_kw.max(0.0),
        }
    }

    /// The level a surplus calls for with no history: the enter thresholds only (forecast slots).
    /// Nothing to share is never green and nothing missing never red, whatever the thresholds
    /// scale to (a fraction of zero consumption is zero: a dark, idle hour is yellow).
    pub fn instant(&self, surplus_kw: f64, consumption_kw: f64) -> Level {
        if surplus_kw > 0.0 && surplus_kw >= self.kw(self.green_enter, consumption_kw) {
            Level::Green
        } else if surplus_kw < 0.0 && surplus_kw <= self.kw(self.red_enter, consumption_kw) {
            Level::Red
        } else {
            Level::Yellow
        }
    }

    /// The level a surplus calls for from `current`: leaving green or red takes crossing the exit
    /// threshold, which lies inside the enter one.
    pub fn next(&self, current: Level, surplus_kw: f64, consumption_kw: f64) -> Level {
        let stays = match current {
            Level::Green => {
                surplus_kw > 0.0 && surplus_kw >= self.kw(self.green_exit, consumption_kw)
            }
            Level::Red => surplus_kw < 0.0 && surplus_kw <= self.kw(self.red_exit, consumption_kw),
            Level::Yellow => false,
        };
        if stays {
            current
        } else {
            self.instant(surplus_kw, consumption_kw)
        }
    }

    /// OpenADR 2.0b SIMPLE level beside the colour: green → 0 (normal: use now), yellow → 1
    /// (moderate), red → 2 (high: postpone), red with the surplus at or below `special` → 3.
    pub fn openadr(&self, level: Level, surplus_kw: f64, consumption_kw: f64) -> u8 {
        match level {
            Level::Green => 0,
            Level::Yellow => 1,
            Level::Red if surplus_kw <= self.kw(self.special, consumption_kw) => 3,
            Level::Red => 2,
        }
    }
}

/// The level of one zone over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Hysteresis {
    state: Option<(Level, DateTime<Utc>)>,
    min_dwell: Duration,
}

impl Hysteresis {
    pub fn new(min_dwell: Duration) -> Self {
        Hysteresis {
            state: None,
            min_dwell,
        }
    }

    /// The level and since when, after seeing `surplus_kw` at `now`. The first call takes the
    /// level the surplus calls for; later, a change waits until the level has held `min_dwell`.
    pub fn update(
        &mut self,
        th: &Thresholds,
        surplus_kw: f64,
        consumption_kw: f64,
        now: DateTime<Utc>,
    ) -> (Level, DateTime<Utc>) {
        let next = match self.state {
            None => (th.instant(surplus_kw, consumption_kw), now),
            Some((level, since)) => {
                let wanted = th.next(level, surplus_kw, consumption_kw);
                if wanted != level && now - since >= self.min_dwell {
                    (wanted, now)
                } else {
                    (level, since)
                }
            }
        };
        self.state = Some(next);
        next
    }

    pub fn level(&self) -> Option<Level> {
        self.state.map(|(l, _)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th() -> Thresholds {
        Thresholds::from_config(&SignalConfig::default())
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn fraction_thresholds_scale_with_consumption() {
        let th = th();
        // Defaults: green from +10 % of consumption, red from −20 %.
        assert_eq!(th.instant(10.0, 100.0), Level::Green);
        assert_eq!(th.instant(9.9, 100.0), Level::Yellow);
        assert_eq!(th.instant(-20.0, 100.0), Level::Red);
        assert_eq!(th.instant(-19.0, 100.0), Level::Yellow);
        assert_eq!(th.instant(1.0, 5.0), Level::Green);
    }

    #[test]
    fn a_zone_with_nothing_to_share_and_nothing_missing_is_yellow() {
        // A dark hour with no consumption known: every fraction threshold scales to zero.
        let th = th();
        assert_eq!(th.instant(0.0, 0.0), Level::Yellow);
        assert_eq!(th.next(Level::Green, 0.0, 0.0), Level::Yellow);
        assert_eq!(th.next(Level::Red, 0.0, 0.0), Level::Yellow);
        assert_eq!(th.instant(0.5, 0.0), Level::Green);
        assert_eq!(th.instant(-0.5, 0.0), Level::Red);
    }

    #[test]
    fn kw_thresholds_ignore_consumption() {
        let th = Thresholds {
            unit: ThresholdUnit::Kw,
            green_enter: 5.0,
            green_exit: 2.0,
            red_enter: -5.0,
            red_exit: -2.0,
            special: -50.0,
        };
        assert_eq!(th.instant(5.0, 1000.0), Level::Green);
        assert_eq!(th.next(Level::Green, 2.5, 1000.0), Level::Green);
        assert_eq!(th.next(Level::Green, 1.9, 1000.0), Level::Yellow);
        assert_eq!(th.next(Level::Red, -2.5, 0.0), Level::Red);
        assert_eq!(th.next(Level::Red, 6.0, 0.0), Level::Green);
        assert_eq!(th.openadr(Level::Red, -60.0, 0.0), 3);
    }

    #[test]
    fn leaving_green_takes_crossing_the_exit_threshold() {
        let th = th();
        assert_eq!(th.next(Level::Green, 5.0, 100.0), Level::Green);
        assert_eq!(th.next(Level::Green, 1.0, 100.0), Level::Yellow);
        assert_eq!(th.next(Level::Green, -30.0, 100.0), Level::Red);
        assert_eq!(th.next(Level::Yellow, 5.0, 100.0), Level::Yellow);
        assert_eq!(th.next(Level::Red, -12.0, 100.0), Level::Red);
        assert_eq!(th.next(Level::Red, -9.0, 100.0), Level::Yellow);
    }

    #[test]
    fn openadr_levels_follow_the_colour_and_the_depth_of_the_deficit() {
        let th = th();
        assert_eq!(th.openadr(Level::Green, 30.0, 100.0), 0);
        assert_eq!(th.openadr(Level::Yellow, 0.0, 100.0), 1);
        assert_eq!(th.openadr(Level::Red, -30.0, 100.0), 2);
        assert_eq!(th.openadr(Level::Red, -70.0, 100.0), 3);
    }

    #[test]
    fn a_change_waits_for_the_minimum_dwell() {
        let th = th();
        let mut h = Hysteresis::new(Duration::minutes(15));
        let (l, since) = h.update(&th, 50.0, 100.0, t0());
        assert_eq!((l, since), (Level::Green, t0()));
        // A deep deficit 5 minutes later: held green until 15 minutes have passed.
        let (l, _) = h.update(&th, -50.0, 100.0, t0() + Duration::minutes(5));
        assert_eq!(l, Level::Green);
        let (l, since) = h.update(&th, -50.0, 100.0, t0() + Duration::minutes(15));
        assert_eq!((l, since), (Level::Red, t0() + Duration::minutes(15)));
    }

    /// A deterministic noise source (xorshift), so the test is reproducible without a crate.
    fn noise(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state % 10_000) as f64 / 10_000.0 * 2.0 - 1.0
    }

    #[test]
    fn noisy_surplus_around_a_threshold_changes_level_a_bounded_number_of_times() {
        let th = th();
        let dwell = Duration::minutes(15);
        let mut h = Hysteresis::new(dwell);
        let mut naive_changes = 0;
        let mut changes = 0;
        let mut prev_naive = None;
        let mut prev = None;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        // Six hours at 5-second ticks: surplus hovering at the green threshold (10 kW of 100 kW),
        // ±8 kW of noise.
        let ticks = 6 * 3600 / 5;
        for i in 0..ticks {
            let now = t0() + Duration::seconds(5 * i);
            let surplus = 10.0 + 8.0 * noise(&mut seed);
            let naive = th.instant(surplus, 100.0);
            if prev_naive.is_some_and(|p| p != naive) {
                naive_changes += 1;
            }
            prev_naive = Some(naive);
            let (l, _) = h.update(&th, surplus, 100.0, now);
            if prev.is_some_and(|p| p != l) {
                changes += 1;
            }
            prev = Some(l);
        }
        // Without hysteresis it flaps hundreds of times; with it, at most one change per dwell.
        assert!(naive_changes > 500, "naive {naive_changes}");
        assert!(changes <= 6 * 4, "{changes} changes in six hours");
        // The noise stays above the exit threshold (2 kW), so once green it stays green.
        assert!(changes <= 1, "{changes} changes");
    }

    #[test]
    fn noise_straddling_both_thresholds_is_bounded_by_the_dwell() {
        let th = th();
        let mut h = Hysteresis::new(Duration::minutes(10));
        let mut seed = 42u64;
        let mut changes = 0;
        let mut prev = None;
        for i in 0..(2 * 3600 / 5) {
            let now = t0() + Duration::seconds(5 * i);
            // Swings from −40 to +40 % of consumption: every level is called for at random.
            let surplus = 40.0 * noise(&mut seed);
            let (l, _) = h.update(&th, surplus, 100.0, now);
            if prev.is_some_and(|p| p != l) {
                changes += 1;
            }
            prev = Some(l);
        }
        assert!(changes >= 2, "it still follows the surplus: {changes}");
        assert!(
            changes <= 12,
            "{changes} changes in two hours with a 10-minute dwell"
        );
    }
}
