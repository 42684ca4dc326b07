//! The `[signal]` and `[[flex]]` sections of the central config: thresholds, dwell, forecast and
//! alert settings, and the sites' flexible loads. Every field has a default; nothing here does I/O.

use serde::Deserialize;

/// How the level thresholds are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdUnit {
    /// A fraction of the zone's consumption (0.10 = a surplus of 10 % of what it uses).
    #[default]
    Fraction,
    /// Kilowatts.
    Kw,
}

/// `[signal]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    pub unit: ThresholdUnit,
    pub green_enter: f64,
    pub green_exit: f64,
    pub red_enter: f64,
    pub red_exit: f64,
    /// Red at or below this is OpenADR level 3.
    pub special: f64,
    /// A level holds at least this long before it may change.
    pub min_dwell_minutes: u32,
    /// PV performance ratio (inverter, wiring, temperature, soiling losses).
    pub performance_ratio: f64,
    /// Orientation assumed for the community's arrays.
    pub tilt_deg: f64,
    pub azimuth_deg: f64,
    /// How fast the cloudiness learned from recent hours fades to climatology (e-folding, hours).
    pub cloud_memory_hours: f64,
    /// Clear-sky index (actual / clear-sky production) used as climatology until two weeks of
    /// history give one.
    pub climatology: f64,
    /// Mean consumption assumed when there is no history at all, kW.
    pub fallback_consumption_kw: f64,
    /// Alerts per target (the community topic, each site) per local day, at most.
    pub max_alerts_per_day: u32,
    /// Green windows starting within this many hours are announced.
    pub alert_lookahead_hours: u32,
    /// Shortest forecast green window worth an alert, hours.
    pub min_window_hours: u32,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            unit: ThresholdUnit::Fraction,
            green_enter: 0.10,
            green_exit: 0.02,
            red_enter: -0.20,
            red_exit: -0.10,
            special: -0.60,
            min_dwell_minutes: 15,
            performance_ratio: 0.80,
            tilt_deg: 30.0,
            azimuth_deg: 180.0,
            cloud_memory_hours: 4.0,
            climatology: 0.60,
            fallback_consumption_kw: 0.0,
            max_alerts_per_day: 4,
            alert_lookahead_hours: 24,
            min_window_hours: 1,
        }
    }
}

impl SignalConfig {
    /// Problems a technician must fix, as text (the central config check adds the location).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.green_exit.is_nan()
            || self.green_enter.is_nan()
            || self.green_exit > self.green_enter
        {
            p.push("signal: green_exit must not exceed green_enter".to_string());
        }
        if self.red_enter.is_nan() || self.red_exit.is_nan() || self.red_enter > self.red_exit {
            p.push("signal: red_exit must not be below red_enter".to_string());
        }
        if self.red_exit.is_nan() || self.green_exit.is_nan() || self.red_exit >= self.green_exit {
            p.push("signal: red_exit must be below green_exit".to_string());
        }
        if !(0.0..=1.0).contains(&self.performance_ratio) || self.performance_ratio == 0.0 {
            p.push("signal: performance_ratio must be in (0, 1]".to_string());
        }
        if self.cloud_memory_hours.is_nan() || self.cloud_memory_hours <= 0.0 {
            p.push("signal: cloud_memory_hours must be positive".to_string());
        }
        p
    }
}

/// `[[flex]]`: a flexible load of a site (bus charging, refrigeration, heat pumps).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexLoad {
    /// The site that runs it (receives targeted alerts on `site/{site}/alerts`).
    pub site: String,
    pub name: String,
    pub power_kw: f64,
    /// How many hours of its running it can move.
    pub shift_hours: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_every_default() {
        let c: SignalConfig = toml::from_str("").unwrap();
        assert_eq!(c, SignalConfig::default());
        assert!(c.problems().is_empty());
    }

    #[test]
    fn crossed_thresholds_are_reported() {
        let c: SignalConfig = toml::from_str("green_enter = 0.0\ngreen_exit = 0.1").unwrap();
        assert_eq!(c.problems().len(), 1);
        assert!(toml::from_str::<SignalConfig>("colour = 1").is_err());
    }
}
