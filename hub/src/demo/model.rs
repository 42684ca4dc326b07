//! The community model: each building's PV and loads at any instant, what each meter sees (import
//! positive), and meter counters integrated from that power. Pure: time is an argument, the seed
//! fixes the weather and the noise; the only mutable part is the depot's charging plan (an input).

use std::sync::RwLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use socer_drivers::reading::{Quality, Reading, Values};

use super::load::{ChargeWindow, LoadKind, Moment};
use super::scenario::{BuildingSpec, Measured, Scenario};
use super::weather::{hash3, Weather};
use crate::solar::{self, Orientation, Site};

/// Ground reflectance used for the tilted-plane irradiance (grass, roofs).
const ALBEDO: f64 = 0.2;

/// The simulated community.
#[derive(Debug)]
pub struct Community {
    pub scenario: Scenario,
    seed: u64,
    site: Site,
    tz: Tz,
    weather: Weather,
    /// Per building, per load: the load's parameters (charging windows can be replaced).
    loads: RwLock<Vec<Vec<LoadKind>>>,
}

/// A building's power at one instant, W (all non-negative).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildingPower {
    pub pv_w: f64,
    pub loads_w: Vec<f64>,
}

impl BuildingPower {
    pub fn consumption_w(&self) -> f64 {
        self.loads_w.iter().sum()
    }
    /// The POD exchange, import positive.
    pub fn grid_w(&self) -> f64 {
        self.consumption_w() - self.pv_w
    }
    /// What a meter measuring `what` reads, import positive (a generator's output is negative).
    pub fn measured_w(&self, what: Measured) -> f64 {
        match what {
            Measured::Grid => self.grid_w(),
            Measured::Pv => -self.pv_w,
            Measured::Load(i) => self.loads_w.get(i).copied().unwrap_or(0.0),
        }
    }
}

impl Community {
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let site = Site {
            lat_deg: scenario.community.latitude,
            lon_deg: scenario.community.longitude,
        };
        // `Scenario::parse` checked the zone; Rome is the community's zone if it ever is not.
        let tz = scenario
            .community
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Europe::Rome);
        let weather = Weather::new(seed, &scenario.weather);
        let loads = scenario
            .buildings
            .iter()
            .map(|b| b.loads.iter().map(|l| l.kind.clone()).collect())
            .collect();
        Self {
            scenario,
            seed,
            site,
            tz,
            weather,
            loads: RwLock::new(loads),
        }
    }

    pub fn buildings(&self) -> &[BuildingSpec] {
        &self.scenario.buildings
    }

    /// The community's time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    pub fn weather(&self) -> &Weather {
        &self.weather
    }

    /// Replace the charging windows of `building`'s depot load(s); `false` if it has none.
    pub fn set_charging(&self, building: &str, windows: Vec<ChargeWindow>) -> bool {
        let Some(b) = self.buildings().iter().position(|b| b.id == building) else {
            return false;
        };
        let mut loads = self.loads.write().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        for l in &mut loads[b] {
            any |= l.set_charging(windows.clone());
        }
        any
    }

    /// The charging windows of `building`'s depot load(s) now (empty if it has none).
    pub fn charging(&self, building: &str) -> Vec<ChargeWindow> {
        let Some(b) = self.buildings().iter().position(|b| b.id == building) else {
            return Vec::new();
        };
        let loads = self.loads.read().unwrap_or_else(|e| e.into_inner());
        loads[b]
            .iter()
            .filter_map(LoadKind::charging)
            .flatten()
            .cloned()
            .collect()
    }

    /// PV output of building `b` at `t`, W.
    pub fn pv_w(&self, b: usize, t: DateTime<Utc>) -> f64 {
        let sun = solar::sun_position(self.site, t);
        self.pv_w_with_sun(b, t, sun)
    }

    fn pv_w_with_sun(&self, b: usize, t: DateTime<Utc>, sun: solar::SunPosition) -> f64 {
        let Some(pv) = self.buildings().get(b).and_then(|b| b.pv.as_ref()) else {
            return 0.0;
        };
        if sun.elevation_deg <= 0.0 {
            return 0.0;
        }
        let cloud = self.weather.cloud_factor(t);
        let ghi = solar::clear_sky_ghi(sun) * cloud;
        let panel = Orientation {
            tilt_deg: pv.tilt_deg,
            azimuth_deg: pv.azimuth_deg,
        };
        let poa = solar::plane_of_array(sun, ghi, cloud, panel, ALBEDO);
        solar::pv_power_w(pv.peak_kw, poa, pv.performance_ratio)
    }

    /// Every power of building `b` at `t`.
    pub fn building_power(&self, b: usize, t: DateTime<Utc>) -> BuildingPower {
        let sun = solar::sun_position(self.site, t);
        let at = Moment {
            local: t.with_timezone(&self.tz).naive_local(),
            sun_elevation_deg: sun.elevation_deg,
        };
        let loads = self.loads.read().unwrap_or_else(|e| e.into_inner());
        let loads_w = loads
            .get(b)
            .map(|ls| {
                ls.iter()
                    .enumerate()
                    .map(|(i, l)| l.power_w(at, self.seed, salt(b, i)))
                    .collect()
            })
            .unwrap_or_default();
        BuildingPower {
            pv_w: self.pv_w_with_sun(b, t, sun),
            loads_w,
        }
    }

    /// What meter `m` of building `b` reads at `t`, W, import positive.
    pub fn meter_power_w(&self, b: usize, m: usize, t: DateTime<Utc>) -> f64 {
        let Some(spec) = self.buildings().get(b) else {
            return 0.0;
        };
        let Some(what) = spec.meters.get(m).and_then(|m| spec.measured(m)) else {
            return 0.0;
        };
        self.building_power(b, t).measured_w(what)
    }

    /// Plausible counters for the meters of building `b` (in scenario order), installed long
    /// before `at`: a year of this model's energy, sampled every 97 minutes (so hours of the day
    /// are covered evenly), scaled by the years since the plant (or 2023) began.
    pub fn initial_counters(&self, b: usize, at: DateTime<Utc>) -> Vec<Counter> {
        let Some(spec) = self.buildings().get(b) else {
            return Vec::new();
        };
        let since = spec
            .pv
            .as_ref()
            .map(|p| p.commissioned)
            .unwrap_or_else(|| chrono::NaiveDate::from_ymd_opt(2023, 1, 1).unwrap_or_default());
        let years = ((at.date_naive() - since).num_days() as f64 / 365.0).max(0.1);
        let what: Vec<Option<Measured>> = spec.meters.iter().map(|m| spec.measured(m)).collect();
        let mut year = vec![Counter::default(); what.len()];
        let step = chrono::Duration::minutes(97);
        let mut t = at - chrono::Duration::days(365);
        while t < at {
            let p = self.building_power(b, t);
            for (c, w) in year.iter_mut().zip(&what) {
                c.add(
                    w.map_or(0.0, |w| p.measured_w(w)),
                    step.num_seconds() as f64,
                );
            }
            t += step;
        }
        year.into_iter()
            .map(|c| Counter {
                imp_wh: (c.imp_wh * years).round(),
                exp_wh: (c.exp_wh * years).round(),
            })
            .collect()
    }
}

fn salt(b: usize, l: usize) -> u64 {
    hash3(0x10AD, b as u64, l as u64)
}

/// A meter's two energy counters, Wh.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    pub imp_wh: f64,
    pub exp_wh: f64,
}

impl Counter {
    /// Add `p_w` held for `dt_s` seconds: import when positive, export when negative.
    pub fn add(&mut self, p_w: f64, dt_s: f64) {
        let wh = p_w * dt_s / 3600.0;
        if wh >= 0.0 {
            self.imp_wh += wh;
        } else {
            self.exp_wh -= wh;
        }
    }
}

/// Readings of every meter of building `b` from `from` to `to`: counters integrated at
/// `integrate_s` steps, a reading every `every_s`. Counters start at `start` (per meter) and the
/// returned counters are where they end, for the live simulator to continue from.
///
/// `serve(m, counters)` gives what meter `m`'s device shows for its exact counters (its
/// registers' resolution and rounding, [`super::meters::Register`]): the history holds what the
/// live device would have served at each instant, so the live readings continue it without a
/// step back.
// The two cadences and the register view are what the backfill and the catch-up differ in.
#[allow(clippy::too_many_arguments)]
pub fn history(
    community: &Community,
    b: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    every_s: i64,
    integrate_s: i64,
    start: &[Counter],
    serve: &dyn Fn(usize, Counter) -> (Option<f64>, Option<f64>),
) -> (Vec<Reading>, Vec<Counter>) {
    let spec = &community.buildings()[b];
    let mut counters = start.to_vec();
    counters.resize(spec.meters.len(), Counter::default());
    let what: Vec<Option<Measured>> = spec.meters.iter().map(|m| spec.measured(m)).collect();
    let mut readings = Vec::new();
    let mut t = from;
    let step = chrono::Duration::seconds(integrate_s.max(1));
    let mut since_reading = 0;
    while t < to {
        // Midpoint rule: the power at the middle of the step, held over the step.
        let p = community.building_power(b, t + step / 2);
        for (c, w) in counters.iter_mut().zip(&what) {
            c.add(w.map_or(0.0, |w| p.measured_w(w)), integrate_s as f64);
        }
        t += step;
        since_reading += integrate_s;
        if since_reading >= every_s {
            since_reading = 0;
            let p_now = community.building_power(b, t);
            for (i, ((m, c), w)) in spec.meters.iter().zip(&counters).zip(&what).enumerate() {
                let (e_imp_wh, e_exp_wh) = serve(i, *c);
                readings.push(Reading {
                    meter: m.name.clone(),
                    ts: t,
                    mono_ms: 0,
                    values: Values {
                        p_w: Some(round1(w.map_or(0.0, |w| p_now.measured_w(w)))),
                        e_imp_wh,
                        e_exp_wh,
                        ..Values::default()
                    },
                    quality: Quality::Good,
                    missing: vec![],
                    energy_integrated: false,
                });
            }
        }
    }
    (readings, counters)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn community(seed: u64) -> Community {
        Community::new(Scenario::builtin().unwrap(), seed)
    }

    fn idx(c: &Community, id: &str) -> usize {
        c.buildings().iter().position(|b| b.id == id).unwrap()
    }

    #[test]
    fn pv_yields_1100_to_1200_kwh_per_kwp_in_a_year_at_sondrio() {
        // Tessuti's array (15° tilt, 160° azimuth), hourly midpoint steps, averaged over three seeds.
        let mut total = 0.0;
        for seed in [1, 2, 3] {
            let c = community(seed);
            let b = idx(&c, "tessuti");
            let mut t = at("2025-01-01T00:30:00Z");
            while t < at("2026-01-01T00:00:00Z") {
                total += c.pv_w(b, t) / 1000.0;
                t += chrono::Duration::hours(1);
            }
        }
        let per_kwp = total / 3.0 / 300.0;
        eprintln!("yield {per_kwp:.0} kWh/kWp");
        assert!((1_050.0..1_250.0).contains(&per_kwp), "{per_kwp} kWh/kWp");
    }

    #[test]
    fn the_grid_meter_sees_consumption_minus_production() {
        let c = community(5);
        let b = idx(&c, "domus-1");
        let t = at("2026-06-21T10:00:00Z");
        let p = c.building_power(b, t);
        let spec = &c.buildings()[b];
        let grid = spec
            .meters
            .iter()
            .position(|m| m.measures == "grid")
            .unwrap();
        let pv = spec.meters.iter().position(|m| m.measures == "pv").unwrap();
        assert!((c.meter_power_w(b, grid, t) - (p.consumption_w() - p.pv_w)).abs() < 1e-9);
        assert!((c.meter_power_w(b, pv, t) + p.pv_w).abs() < 1e-9);
        assert!(p.pv_w > 0.0 && p.consumption_w() > 0.0);
    }

    #[test]
    fn there_is_no_pv_at_night_and_the_bank_has_none() {
        let c = community(5);
        for b in 0..c.buildings().len() {
            assert_eq!(c.pv_w(b, at("2026-06-21T23:00:00Z")), 0.0);
        }
        assert_eq!(c.pv_w(idx(&c, "bps"), at("2026-06-21T11:00:00Z")), 0.0);
    }

    #[test]
    fn history_counters_are_the_integral_of_power_and_never_go_back() {
        let c = community(9);
        let b = idx(&c, "stps");
        let from = at("2026-05-04T00:00:00Z");
        let to = from + chrono::Duration::days(1);
        let floor = |_: usize, c: Counter| (Some(c.imp_wh.floor()), Some(c.exp_wh.floor()));
        let (readings, end) = history(&c, b, from, to, 300, 60, &[], &floor);
        let meters = c.buildings()[b].meters.len();
        assert_eq!(readings.len(), 288 * meters);
        // The grid counter's net equals the integral of grid power at the same steps.
        let mut net_wh = 0.0;
        let mut t = from;
        while t < to {
            net_wh += c
                .building_power(b, t + chrono::Duration::seconds(30))
                .grid_w()
                / 60.0;
            t += chrono::Duration::seconds(60);
        }
        assert!(
            (end[0].imp_wh - end[0].exp_wh - net_wh).abs() < 1e-6,
            "{:?} vs {net_wh}",
            end[0]
        );
        for m in &c.buildings()[b].meters {
            let series: Vec<&Reading> = readings.iter().filter(|r| r.meter == m.name).collect();
            for w in series.windows(2) {
                assert!(w[1].values.e_imp_wh >= w[0].values.e_imp_wh);
                assert!(w[1].values.e_exp_wh >= w[0].values.e_exp_wh);
                assert!(w[1].ts > w[0].ts);
            }
        }
        // A sunny Monday in May: the depot's PV exported something, its chargers imported a lot.
        assert!(end[1].exp_wh > 0.0);
        assert!(end[2].imp_wh > 1_000_000.0, "chargers {:?}", end[2]);
    }

    #[test]
    fn no_hour_of_a_demo_day_injects_more_than_the_installed_pv() {
        // A clear June day: per substation and hour, the grid meters' export counters rise by
        // at most the substation's PV peak × 1 h (and export at night is nil).
        let c = community(4);
        let from = at("2026-06-21T00:00:00Z");
        let to = from + chrono::Duration::days(1);
        let floor = |_: usize, c: Counter| (Some(c.imp_wh.floor()), Some(c.exp_wh.floor()));
        let mut per_hour: std::collections::BTreeMap<(String, i64), f64> = Default::default();
        let mut peak: std::collections::BTreeMap<String, f64> = Default::default();
        for (b, spec) in c.buildings().iter().enumerate() {
            *peak.entry(spec.substation.clone()).or_default() +=
                spec.pv.as_ref().map_or(0.0, |p| p.peak_kw * 1000.0);
            let grid = spec
                .meters
                .iter()
                .position(|m| m.measures == "grid")
                .unwrap();
            let (readings, _) = history(&c, b, from, to, 300, 60, &[], &floor);
            let series: Vec<&Reading> = readings
                .iter()
                .filter(|r| r.meter == spec.meters[grid].name)
                .collect();
            for w in series.windows(2) {
                let wh = w[1].values.e_exp_wh.unwrap() - w[0].values.e_exp_wh.unwrap();
                let hour = (w[1].ts - chrono::Duration::seconds(1)).timestamp() / 3600;
                *per_hour.entry((spec.substation.clone(), hour)).or_default() += wh;
            }
        }
        let mut sunny = 0.0f64;
        for ((sub, hour), wh) in &per_hour {
            assert!(
                *wh <= peak[sub] + 1.0,
                "{sub}, hour {hour}: {wh} Wh > {} Wh",
                peak[sub]
            );
            sunny = sunny.max(*wh);
        }
        assert!(sunny > 0.0, "some export on a June day");
    }

    #[test]
    fn moving_the_depot_charging_changes_its_power_at_once() {
        let c = community(2);
        let b = idx(&c, "stps");
        let t = at("2026-11-25T01:00:00Z"); // a Wednesday, 02:00 in Sondrio
        let before = c.building_power(b, t).consumption_w();
        assert!(c.set_charging(
            "stps",
            vec![ChargeWindow {
                from: "12:00".into(),
                to: "15:00".into(),
                kw: 150.0,
                weekdays_only: false
            }]
        ));
        let after = c.building_power(b, t).consumption_w();
        assert!(before - after > 170_000.0, "before {before} after {after}");
        assert!(!c.set_charging("bps", vec![]));
    }

    #[test]
    fn the_same_seed_gives_the_same_power() {
        let (a, b) = (community(77), community(77));
        let t = at("2026-03-10T10:17:00Z");
        for i in 0..a.buildings().len() {
            assert_eq!(a.building_power(i, t), b.building_power(i, t));
        }
    }

    #[test]
    fn initial_counters_hold_the_years_since_commissioning() {
        let c = community(3);
        let b = idx(&c, "tessuti");
        // Commissioned 2024-02-12: two years of a 300 kWp plant at about 1,150 kWh/kWp.
        let counters = c.initial_counters(b, at("2026-02-12T00:00:00Z"));
        let pv = c.buildings()[b]
            .meters
            .iter()
            .position(|m| m.measures == "pv")
            .unwrap();
        let exported_mwh = counters[pv].exp_wh / 1e6;
        assert!((600.0..800.0).contains(&exported_mwh), "{exported_mwh} MWh");
        assert_eq!(counters[pv].imp_wh, 0.0);
        assert_eq!(counters.len(), c.buildings()[b].meters.len());
    }
}
