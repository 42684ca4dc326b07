//! Measures the load-shift signal on the demo community (`socer demo`'s model, no network):
//! 1. mean absolute error of the next-hour and next-day surplus forecast against persistence;
//! 2. the community's shared energy over a week with the bus depot's charging as configured, and
//!    with it following the targeted alerts through the plan of `socer demo`'s depot controller
//!    (`socer::demo::flex::plan`), stepped hourly instead of live.
//!
//! Run: `cargo run -p socer --example signal_measure -- [START_DATE] [SEED]` (default 2026-04-01 1).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

use socer::central::signal::alerts::{AlertConfig, Alerts};
use socer::central::signal::config::{FlexLoad, SignalConfig};
use socer::central::signal::forecast::{self, ForecastParams, HourSample, PvModel};
use socer::central::signal::level::{Hysteresis, Thresholds};
use socer::demo::flex::{self, Depot, GreenWindow};
use socer::demo::model::Community;
use socer::demo::scenario::Scenario;
use socer::solar::{Orientation, Site};
use socer::wire::AlertKind;

/// Samples per hour when integrating power into energy.
const SAMPLES: i64 = 12;

/// One simulated hour: community production and consumption, and per substation the eligible
/// injection and the withdrawal (kWh).
struct Hour {
    sample: HourSample,
    subs: BTreeMap<String, (f64, f64)>,
}

fn simulate_hour(c: &Community, start: DateTime<Utc>) -> Hour {
    let dt_h = 1.0 / SAMPLES as f64;
    let (mut prod, mut cons) = (0.0, 0.0);
    let mut subs: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for i in 0..SAMPLES {
        let t = start + Duration::seconds(3600 / SAMPLES * i + 3600 / SAMPLES / 2);
        for (b, spec) in c.buildings().iter().enumerate() {
            let p = c.building_power(b, t);
            prod += p.pv_w / 1000.0 * dt_h;
            cons += p.consumption_w() / 1000.0 * dt_h;
            let g = p.grid_w() / 1000.0 * dt_h;
            let e = subs.entry(spec.substation.clone()).or_default();
            // Every demo plant is eligible: its POD's injection counts.
            e.0 += (-g).max(0.0);
            e.1 += g.max(0.0);
        }
    }
    Hour {
        sample: HourSample {
            start,
            production_kwh: prod,
            consumption_kwh: cons,
        },
        subs,
    }
}

fn params(c: &Community, cfg: &SignalConfig) -> ForecastParams {
    let s = &c.scenario.community;
    ForecastParams {
        pv: PvModel {
            site: Site {
                lat_deg: s.latitude,
                lon_deg: s.longitude,
            },
            peak_kw: c
                .buildings()
                .iter()
                .filter_map(|b| b.pv.as_ref())
                .map(|p| p.peak_kw)
                .sum(),
            performance_ratio: cfg.performance_ratio,
            orientation: Orientation {
                tilt_deg: cfg.tilt_deg,
                azimuth_deg: cfg.azimuth_deg,
            },
        },
        tz: s.timezone.parse().unwrap_or(chrono_tz::Europe::Rome),
        cloud_memory_hours: cfg.cloud_memory_hours,
        climatology: cfg.climatology,
        fallback_consumption_kw: cfg.fallback_consumption_kw,
    }
}

/// History the hub would have at `now`: the last 15 days of hours.
fn history_at(hours: &[Hour], now: DateTime<Utc>) -> Vec<HourSample> {
    hours
        .iter()
        .filter(|h| h.sample.start < now && now - h.sample.start <= Duration::days(15))
        .map(|h| h.sample)
        .collect()
}

fn surplus(h: &HourSample) -> f64 {
    h.production_kwh - h.consumption_kwh
}

fn forecast_accuracy(start: DateTime<Utc>, seed: u64) {
    let c = Community::new(Scenario::builtin().expect("built-in scenario"), seed);
    let cfg = SignalConfig::default();
    let p = params(&c, &cfg);
    let th = Thresholds::from_config(&cfg);
    let warmup = 14;
    let eval_days = 28;
    let hours: Vec<Hour> = (0..(warmup + eval_days + 2) * 24)
        .map(|i| simulate_hour(&c, start + Duration::hours(i)))
        .collect();
    let by_start: BTreeMap<DateTime<Utc>, &HourSample> =
        hours.iter().map(|h| (h.sample.start, &h.sample)).collect();
    let (mut n, mut f1, mut p1, mut f24, mut p24) = (0usize, 0.0, 0.0, 0.0, 0.0);
    let (mut nd, mut f1d, mut p1d, mut f24d, mut p24d) = (0usize, 0.0, 0.0, 0.0, 0.0);
    // Next-hour errors of the two parts, forecast and persistence: production, consumption.
    let (mut ep, mut pp, mut ec, mut pc) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..eval_days * 24 {
        let now = start + Duration::hours(warmup * 24 + i);
        let hist = history_at(&hours, now);
        let fc = forecast::forecast(&p, &th, &hist, now);
        let (Some(last), Some(next), Some(day)) = (
            by_start.get(&(now - Duration::hours(1))),
            by_start.get(&now),
            by_start.get(&(now + Duration::hours(23))),
        ) else {
            continue;
        };
        // Next hour: the slot starting now; next day: the slot starting 23 h on. Persistence: the
        // last observed hour for the next hour, and the same hour a day earlier for the next day.
        let (Some(s0), Some(s23)) = (fc.first(), fc.get(23)) else {
            continue;
        };
        let e = |f: f64, a: &HourSample| (f - surplus(a)).abs();
        n += 1;
        ep += (s0.production_kwh - next.production_kwh).abs();
        pp += (last.production_kwh - next.production_kwh).abs();
        ec += (s0.consumption_kwh - next.consumption_kwh).abs();
        pc += (last.consumption_kwh - next.consumption_kwh).abs();
        f1 += e(s0.surplus_kwh, next);
        p1 += e(surplus(last), next);
        f24 += e(s23.surplus_kwh, day);
        p24 += e(surplus(last), day);
        if p.pv.clear_sky_kwh(now) > 0.05 * p.pv.peak_kw {
            nd += 1;
            f1d += e(s0.surplus_kwh, next);
            p1d += e(surplus(last), next);
        }
        if p.pv.clear_sky_kwh(now + Duration::hours(23)) > 0.05 * p.pv.peak_kw {
            f24d += e(s23.surplus_kwh, day);
            p24d += e(surplus(last), day);
        }
    }
    let nf = n as f64;
    println!(
        "forecast accuracy, demo community (seed {seed}), {eval_days} days from {} after {warmup} days of history, {n} forecasts",
        (start + Duration::days(warmup)).date_naive()
    );
    println!("  installed PV {:.1} kWp", p.pv.peak_kw);
    println!(
        "  next hour: MAE forecast {:.1} kWh, persistence {:.1} kWh, improvement {:.0} %",
        f1 / nf,
        p1 / nf,
        100.0 * (1.0 - f1 / p1)
    );
    println!(
        "  next day (23 h ahead): MAE forecast {:.1} kWh, persistence (24 h earlier) {:.1} kWh, improvement {:.0} %",
        f24 / nf,
        p24 / nf,
        100.0 * (1.0 - f24 / p24)
    );
    println!(
        "  next hour by part: production MAE {:.1} (persistence {:.1}), consumption MAE {:.1} (persistence {:.1}) kWh",
        ep / nf,
        pp / nf,
        ec / nf,
        pc / nf
    );
    println!(
        "  daylight hours only ({nd}): next hour {:.0} % better, next day {:.0} % better",
        100.0 * (1.0 - f1d / p1d),
        100.0 * (1.0 - f24d / p24d)
    );
}

/// Shared energy over the week after two weeks of warm-up from `start`, with the depot's charging
/// fixed, or following the targeted alerts through the demo's own controller plan
/// (`socer::demo::flex::plan`, re-planned every hour as alerts arrive); also on how many service
/// days charge was moved.
fn shared_week(start: DateTime<Utc>, seed: u64, follow: bool) -> (f64, usize) {
    let c = Community::new(Scenario::builtin().expect("built-in scenario"), seed);
    let depot = c
        .buildings()
        .iter()
        .find_map(Depot::of)
        .expect("the scenario has a bus depot");
    let cfg = SignalConfig::default();
    let p = params(&c, &cfg);
    let th = Thresholds::from_config(&cfg);
    c.set_charging("stps", depot.fixed_schedule());
    let mut alerts = Alerts::new(AlertConfig {
        community: "socer".into(),
        tz: p.tz,
        max_per_day: cfg.max_alerts_per_day,
        lookahead: Duration::hours(24),
        min_window: Duration::hours(1),
        // What `socer demo` writes into the central config for the depot.
        flex: vec![FlexLoad {
            site: "stps".into(),
            name: flex::FLEX_NAME.into(),
            power_kw: depot.charger_kw,
            shift_hours: depot.shift_hours,
        }],
    });
    let mut level = Hysteresis::new(Duration::minutes(15));
    let mut windows: BTreeMap<DateTime<Utc>, GreenWindow> = BTreeMap::new();
    let mut moved_days = std::collections::BTreeSet::new();
    let mut hours: Vec<Hour> = Vec::new();
    // Two weeks of history first (charging as configured), then the measured week.
    let warmup = 14 * 24;
    let mut shared = 0.0;
    for i in 0..(warmup + 7 * 24) {
        let now = start + Duration::hours(i);
        if follow && i >= warmup {
            let hist = history_at(&hours, now);
            let fc = forecast::forecast(&p, &th, &hist, now);
            let last = hours.last().map(|h| h.sample);
            let live = last.map_or(0.0, |h| surplus(&h));
            let cons = last.map_or(0.0, |h| h.consumption_kwh);
            let (lv, _) = level.update(&th, live, cons, now);
            for a in alerts
                .step(now, lv, live, &fc)
                .into_iter()
                .filter(|a| a.site.as_deref() == Some("stps"))
            {
                let w = GreenWindow::from_alert(&a, flex::FLEX_NAME, now);
                match windows.get_mut(&w.start) {
                    Some(known) => known.update(w, a.kind),
                    None if a.kind != AlertKind::Close => {
                        windows.insert(w.start, w);
                    }
                    None => {}
                }
            }
            let all: Vec<GreenWindow> = windows.values().cloned().collect();
            let plan = flex::plan(&depot, &all, now, p.tz);
            if plan.moved_kwh > 0.0 {
                // The service day starts at the buses' departure.
                let local = now.with_timezone(&p.tz) - Duration::minutes(depot.ready_by_min.into());
                moved_days.insert(local.date_naive());
            }
            c.set_charging("stps", plan.windows);
        }
        let h = simulate_hour(&c, now);
        if i >= warmup {
            shared += h.subs.values().map(|(inj, wd)| inj.min(*wd)).sum::<f64>();
        }
        hours.push(h);
    }
    (shared, moved_days.len())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let date = args
        .get(1)
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap_or_default());
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default());
    forecast_accuracy(start, seed);
    let (fixed, _) = shared_week(start, seed, false);
    let (follow, moved) = shared_week(start, seed, true);
    println!(
        "shared energy over the week after {} (seed {seed}): depot as configured {fixed:.0} kWh, following alerts {follow:.0} kWh ({:+.1} %, charge moved on {moved} days)",
        (start + Duration::days(14)).date_naive(),
        100.0 * (follow / fixed - 1.0)
    );
}
