//! Consumption profiles by kind of building (households, shop, factory, office, school, bus depot):
//! power in W as a pure function of local time, season and the sun. No clock, no I/O; noise comes
//! from a seeded hash so a seed replays the same day.

use chrono::{Datelike, NaiveDateTime, Timelike, Weekday};
use serde::Deserialize;

use super::weather::{hash3, unit};

/// A time of day window `from`–`to` ("HH:MM"), wrapping past midnight when `to` < `from`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: String,
    pub to: String,
}

impl Window {
    /// Whether the minute of day `m` falls inside the window.
    pub fn contains(&self, m: u32) -> bool {
        let (Some(a), Some(b)) = (hhmm(&self.from), hhmm(&self.to)) else {
            return false;
        };
        if a <= b {
            (a..b).contains(&m)
        } else {
            m >= a || m < b
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for s in [&self.from, &self.to] {
            if hhmm(s).is_none() {
                return Err(format!("`{s}` is not a time of day HH:MM"));
            }
        }
        Ok(())
    }
}

/// Minutes since midnight of "HH:MM" (24:00 allowed as the end of the day).
pub fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
}

/// When the depot's buses charge and at what power: the flexible load a load-shift signal moves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeWindow {
    pub from: String,
    pub to: String,
    pub kw: f64,
    /// Only on weekdays (Monday–Friday); otherwise every day.
    #[serde(default)]
    pub weekdays_only: bool,
}

/// A consumer inside a building; `name` lets a sub-meter measure it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoadSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: LoadKind,
}

/// The kinds of consumption the demo knows, with their sizes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadKind {
    /// Apartments, each `kwh_per_year` (about 2,700 on a 3 kW contract), evening-peaked.
    Household {
        apartments: u32,
        #[serde(default = "default_household_kwh")]
        kwh_per_year: f64,
    },
    /// A condominium's lifts, pumps, and stair and garden lights (on while the sun is down).
    CommonServices { base_kw: f64, lighting_kw: f64 },
    /// Refrigeration around the clock (more in summer) and the store while open.
    Supermarket {
        refrigeration_kw: f64,
        store_kw: f64,
        open: Window,
        sunday: Option<Window>,
    },
    /// Production shifts on weekdays (Saturday runs the first shift when `saturday`).
    Factory {
        base_kw: f64,
        shift_kw: f64,
        shifts: Vec<Window>,
        #[serde(default)]
        saturday: bool,
    },
    /// Offices and the town hall: weekday opening hours, cooling in summer.
    Office {
        base_kw: f64,
        peak_kw: f64,
        open: Window,
    },
    /// A school: weekdays in the school year (mid-September to mid-June, no Christmas week).
    School { base_kw: f64, peak_kw: f64 },
    /// The bus depot: workshop on weekdays, and charging in the windows given (flexible).
    BusDepot {
        base_kw: f64,
        workshop_kw: f64,
        charging: Vec<ChargeWindow>,
    },
}

fn default_household_kwh() -> f64 {
    2_700.0
}

/// What a load needs to know about the moment: local time and whether it is dark.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub local: NaiveDateTime,
    pub sun_elevation_deg: f64,
}

impl Moment {
    fn minute(&self) -> u32 {
        self.local.hour() * 60 + self.local.minute()
    }
    fn weekday(&self) -> Weekday {
        self.local.weekday()
    }
    fn is_workday(&self) -> bool {
        !matches!(self.weekday(), Weekday::Sat | Weekday::Sun)
    }
    /// 1 at the height of summer (late July), 0 from October to April.
    fn summer(&self) -> f64 {
        let x =
            (2.0 * std::f64::consts::PI * (f64::from(self.local.ordinal()) - 205.0) / 365.0).cos();
        ((x - 0.5) / 0.5).max(0.0)
    }
    /// +1 in mid-January, −1 in mid-July.
    fn winter(&self) -> f64 {
        (2.0 * std::f64::consts::PI * (f64::from(self.local.ordinal()) - 15.0) / 365.0).cos()
    }
}

/// Relative household demand by hour of a working day and of a weekend day (means are normalised).
const HOUSEHOLD_WORKDAY: [f64; 24] = [
    0.55, 0.45, 0.42, 0.40, 0.40, 0.45, 0.75, 1.15, 1.00, 0.80, 0.75, 0.80, 1.00, 1.00, 0.80, 0.75,
    0.80, 1.10, 1.50, 1.90, 2.00, 1.75, 1.30, 0.85,
];
const HOUSEHOLD_WEEKEND: [f64; 24] = [
    0.60, 0.50, 0.45, 0.42, 0.40, 0.42, 0.50, 0.70, 1.00, 1.20, 1.20, 1.30, 1.50, 1.40, 1.10, 0.95,
    0.95, 1.10, 1.40, 1.80, 1.90, 1.70, 1.30, 0.90,
];

fn mean(xs: &[f64; 24]) -> f64 {
    xs.iter().sum::<f64>() / 24.0
}

/// Hourly shape interpolated linearly between hour centres, normalised to a mean of 1.
fn shape(table: &[f64; 24], minute: u32) -> f64 {
    let x = f64::from(minute) / 60.0 - 0.5;
    let i = x.floor();
    let frac = x - i;
    let a = table[(i as i64).rem_euclid(24) as usize];
    let b = table[((i as i64) + 1).rem_euclid(24) as usize];
    (a + (b - a) * frac) / mean(table)
}

/// A soft on/off: 1 inside the window, ramping over `ramp_min` minutes at both ends.
fn on(window: &Window, minute: u32, ramp_min: u32) -> f64 {
    let (Some(a), Some(b)) = (hhmm(&window.from), hhmm(&window.to)) else {
        return 0.0;
    };
    if !window.contains(minute) {
        return 0.0;
    }
    let into = (minute + 1440 - a) % 1440 + 1;
    let left = (b % 1440 + 1440 - minute) % 1440;
    (f64::from(into.min(left)) / f64::from(ramp_min.max(1))).min(1.0)
}

impl LoadKind {
    /// Power drawn at `at`, W (never negative). `salt` and `seed` make the noise per load.
    pub fn power_w(&self, at: Moment, seed: u64, salt: u64) -> f64 {
        let minute = at.minute();
        // ±5 % noise per 5-minute slot, the same for a given seed and load.
        let slot = at.local.and_utc().timestamp().div_euclid(300) as u64;
        let noise = 1.0 + 0.10 * (unit(hash3(seed, salt, slot)) - 0.5);
        let kw = match self {
            LoadKind::Household {
                apartments,
                kwh_per_year,
            } => {
                let table = if at.is_workday() {
                    &HOUSEHOLD_WORKDAY
                } else {
                    &HOUSEHOLD_WEEKEND
                };
                let mean_kw = kwh_per_year / 8760.0;
                f64::from(*apartments) * mean_kw * shape(table, minute) * (1.0 + 0.12 * at.winter())
            }
            LoadKind::CommonServices {
                base_kw,
                lighting_kw,
            } => {
                let dark = if at.sun_elevation_deg < -3.0 {
                    1.0
                } else {
                    0.0
                };
                // Lift use follows the household pattern.
                base_kw * (0.6 + 0.4 * shape(&HOUSEHOLD_WORKDAY, minute)) + lighting_kw * dark
            }
            LoadKind::Supermarket {
                refrigeration_kw,
                store_kw,
                open,
                sunday,
            } => {
                let window = if at.weekday() == Weekday::Sun {
                    sunday.as_ref()
                } else {
                    Some(open)
                };
                let store = window.map_or(0.0, |w| on(w, minute, 60));
                refrigeration_kw * (1.0 + 0.30 * at.summer())
                    + store_kw * store * (1.0 + 0.35 * at.summer())
            }
            LoadKind::Factory {
                base_kw,
                shift_kw,
                shifts,
                saturday,
            } => {
                let active: &[Window] = match at.weekday() {
                    Weekday::Sun => &[],
                    Weekday::Sat if *saturday => &shifts[..shifts.len().min(1)],
                    Weekday::Sat => &[],
                    _ => shifts,
                };
                let running = active.iter().map(|w| on(w, minute, 20)).fold(0.0, f64::max);
                base_kw + shift_kw * running
            }
            LoadKind::Office {
                base_kw,
                peak_kw,
                open,
            } => {
                let open = if at.is_workday() {
                    on(open, minute, 45)
                } else {
                    0.0
                };
                base_kw + peak_kw * open * (1.0 + 0.40 * at.summer() + 0.10 * at.winter().max(0.0))
            }
            LoadKind::School { base_kw, peak_kw } => {
                let in_term = school_term(at.local);
                let open = Window {
                    from: "07:45".into(),
                    to: "16:30".into(),
                };
                let open = if in_term && at.is_workday() {
                    on(&open, minute, 30)
                } else {
                    0.0
                };
                base_kw + peak_kw * open * (1.0 + 0.15 * at.winter().max(0.0))
            }
            LoadKind::BusDepot {
                base_kw,
                workshop_kw,
                charging,
            } => {
                let workshop = Window {
                    from: "07:00".into(),
                    to: "18:00".into(),
                };
                let workshop = if at.is_workday() {
                    on(&workshop, minute, 30)
                } else {
                    0.0
                };
                let charge: f64 = charging
                    .iter()
                    .filter(|c| at.is_workday() || !c.weekdays_only)
                    .map(|c| {
                        c.kw * on(
                            &Window {
                                from: c.from.clone(),
                                to: c.to.clone(),
                            },
                            minute,
                            10,
                        )
                    })
                    .sum();
                // Charging power is set by the chargers, not noisy: undo the noise on that part.
                return ((base_kw + workshop_kw * workshop) * 1000.0 * noise + charge * 1000.0)
                    .max(0.0);
            }
        };
        (kw * 1000.0 * noise).max(0.0)
    }

    /// The depot's charging windows now; `None` for any other kind.
    pub fn charging(&self) -> Option<&[ChargeWindow]> {
        match self {
            LoadKind::BusDepot { charging, .. } => Some(charging),
            _ => None,
        }
    }

    /// Replace the depot's charging windows (the load-shift input); `false` for any other kind.
    pub fn set_charging(&mut self, windows: Vec<ChargeWindow>) -> bool {
        match self {
            LoadKind::BusDepot { charging, .. } => {
                *charging = windows;
                true
            }
            _ => false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let windows: Vec<Window> = match self {
            LoadKind::Supermarket { open, sunday, .. } => std::iter::once(open.clone())
                .chain(sunday.clone())
                .collect(),
            LoadKind::Factory { shifts, .. } => shifts.clone(),
            LoadKind::Office { open, .. } => vec![open.clone()],
            LoadKind::BusDepot { charging, .. } => charging
                .iter()
                .map(|c| Window {
                    from: c.from.clone(),
                    to: c.to.clone(),
                })
                .collect(),
            _ => vec![],
        };
        windows.iter().try_for_each(Window::validate)
    }
}

/// Italian school year: mid-September to mid-June, without the Christmas holidays.
fn school_term(local: NaiveDateTime) -> bool {
    let (m, d) = (local.month(), local.day());
    match m {
        7 | 8 => false,
        6 => d <= 10,
        9 => d >= 12,
        12 => d < 23,
        1 => d > 6,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn moment(date: &str, hh: u32, mm: u32, elevation: f64) -> Moment {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        Moment {
            local: d.and_hms_opt(hh, mm, 0).unwrap(),
            sun_elevation_deg: elevation,
        }
    }

    fn w(from: &str, to: &str) -> Window {
        Window {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let night = w("22:00", "05:00");
        assert!(night.contains(23 * 60));
        assert!(night.contains(4 * 60 + 59));
        assert!(!night.contains(5 * 60));
        assert!(!night.contains(12 * 60));
        assert!(w("08:00", "20:30").contains(20 * 60 + 29));
        assert!(!w("08:00", "20:30").contains(20 * 60 + 30));
        assert_eq!(hhmm("24:00"), Some(1440));
        assert_eq!(hhmm("25:00"), None);
        assert!(w("8h", "20:00").validate().is_err());
    }

    #[test]
    fn a_household_uses_about_2700_kwh_a_year_and_peaks_in_the_evening() {
        let flat = LoadKind::Household {
            apartments: 1,
            kwh_per_year: 2_700.0,
        };
        let start = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let mut kwh = 0.0;
        let mut by_hour = [0.0; 24];
        for step in 0..(365 * 24 * 4) {
            let local = start + chrono::Duration::minutes(15 * step);
            let p = flat.power_w(
                Moment {
                    local,
                    sun_elevation_deg: 0.0,
                },
                1,
                1,
            );
            kwh += p / 1000.0 * 0.25;
            by_hour[local.hour() as usize] += p;
        }
        assert!((kwh - 2_700.0).abs() < 60.0, "{kwh} kWh");
        let peak = (0..24)
            .max_by(|a, b| by_hour[*a].total_cmp(&by_hour[*b]))
            .unwrap();
        assert!((19..=21).contains(&peak), "peak hour {peak}");
    }

    #[test]
    fn the_factory_runs_shifts_on_weekdays_only() {
        let f = LoadKind::Factory {
            base_kw: 30.0,
            shift_kw: 250.0,
            shifts: vec![w("06:00", "14:00"), w("14:00", "22:00")],
            saturday: false,
        };
        // 2026-11-25 is a Wednesday, 2026-11-29 a Sunday.
        let weekday = f.power_w(moment("2026-11-25", 10, 0, 20.0), 1, 1);
        let night = f.power_w(moment("2026-11-25", 23, 30, -30.0), 1, 1);
        let sunday = f.power_w(moment("2026-11-29", 10, 0, 20.0), 1, 1);
        assert!((265_000.0..295_000.0).contains(&weekday), "{weekday}");
        assert!((28_000.0..32_000.0).contains(&night), "{night}");
        assert!((28_000.0..32_000.0).contains(&sunday), "{sunday}");
    }

    #[test]
    fn the_supermarket_keeps_refrigeration_on_when_closed_and_more_in_summer() {
        let s = LoadKind::Supermarket {
            refrigeration_kw: 45.0,
            store_kw: 60.0,
            open: w("08:00", "20:30"),
            sunday: Some(w("09:00", "13:00")),
        };
        let closed_winter = s.power_w(moment("2026-01-14", 2, 0, -40.0), 1, 1);
        let closed_summer = s.power_w(moment("2026-07-22", 2, 0, -20.0), 1, 1);
        let open_winter = s.power_w(moment("2026-01-14", 12, 0, 20.0), 1, 1);
        assert!(
            (42_000.0..48_000.0).contains(&closed_winter),
            "{closed_winter}"
        );
        assert!(closed_summer > 1.2 * closed_winter, "{closed_summer}");
        assert!(open_winter > closed_winter + 50_000.0, "{open_winter}");
    }

    #[test]
    fn depot_charging_follows_its_windows_and_can_be_moved() {
        let mut d = LoadKind::BusDepot {
            base_kw: 8.0,
            workshop_kw: 20.0,
            charging: vec![ChargeWindow {
                from: "22:00".into(),
                to: "05:00".into(),
                kw: 180.0,
                weekdays_only: false,
            }],
        };
        let night = d.power_w(moment("2026-11-25", 1, 0, -50.0), 1, 1);
        let noon = d.power_w(moment("2026-11-25", 12, 0, 20.0), 1, 1);
        assert!(night > 180_000.0 && night < 190_000.0, "{night}");
        assert!(noon < 30_000.0, "{noon}");
        assert!(d.set_charging(vec![ChargeWindow {
            from: "11:00".into(),
            to: "14:00".into(),
            kw: 120.0,
            weekdays_only: true
        }]));
        let noon = d.power_w(moment("2026-11-25", 12, 0, 20.0), 1, 1);
        let night = d.power_w(moment("2026-11-25", 1, 0, -50.0), 1, 1);
        assert!(noon > 140_000.0, "{noon}");
        assert!(night < 10_000.0, "{night}");
    }

    #[test]
    fn offices_and_schools_are_quiet_at_weekends_and_schools_in_august() {
        let bank = LoadKind::Office {
            base_kw: 3.0,
            peak_kw: 15.0,
            open: w("08:15", "16:45"),
        };
        let school = LoadKind::School {
            base_kw: 2.0,
            peak_kw: 25.0,
        };
        assert!(bank.power_w(moment("2026-11-25", 11, 0, 20.0), 1, 1) > 15_000.0);
        assert!(bank.power_w(moment("2026-11-28", 11, 0, 20.0), 1, 1) < 3_300.0);
        assert!(school.power_w(moment("2026-11-25", 11, 0, 20.0), 1, 1) > 25_000.0);
        assert!(school.power_w(moment("2026-08-12", 11, 0, 60.0), 1, 1) < 2_200.0);
    }

    #[test]
    fn common_lights_come_on_after_sunset() {
        let c = LoadKind::CommonServices {
            base_kw: 1.0,
            lighting_kw: 0.8,
        };
        let day = c.power_w(moment("2026-11-25", 12, 0, 20.0), 1, 1);
        let night = c.power_w(moment("2026-11-25", 12, 0, -10.0), 1, 1);
        assert!(
            (night - day - 800.0).abs() < 120.0,
            "day {day} night {night}"
        );
    }
}
