//! The hourly forecast of the community's surplus: PV from clear-sky irradiance × peak power ×
//! performance ratio × a cloudiness factor learned from recent hours (fading to climatology),
//! minus consumption per weekday and hour learned from history.
//!
//! Pure: history, time and place are arguments; nothing here reads a store or a clock.

use chrono::{DateTime, Datelike, Duration, DurationRound, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::level::Thresholds;
use crate::solar::{self, Orientation, Site};
use crate::wire::{ForecastSlot, Level};

/// The community's PV as the forecast sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PvModel {
    pub site: Site,
    pub peak_kw: f64,
    pub performance_ratio: f64,
    pub orientation: Orientation,
}

impl PvModel {
    /// Clear-sky energy of the hour starting at `start`, kWh: the mean of four quarter-hour
    /// midpoints of the plane-of-array power.
    pub fn clear_sky_kwh(&self, start: DateTime<Utc>) -> f64 {
        (0..4)
            .map(|q| {
                let t = start + Duration::minutes(7 * 60 / 8 + 15 * q) - Duration::seconds(30);
                let sun = solar::sun_position(self.site, t);
                let poa = solar::plane_of_array(
                    sun,
                    solar::clear_sky_ghi(sun),
                    1.0,
                    self.orientation,
                    0.2,
                );
                solar::pv_power_w(self.peak_kw, poa, self.performance_ratio) / 1000.0
            })
            .sum::<f64>()
            / 4.0
    }
}

/// One past hour of the community: what it produced and what its loads used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourSample {
    pub start: DateTime<Utc>,
    pub production_kwh: f64,
    pub consumption_kwh: f64,
}

/// Everything the forecast depends on besides history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastParams {
    pub pv: PvModel,
    pub tz: Tz,
    /// E-folding time of the learned cloudiness, hours.
    pub cloud_memory_hours: f64,
    /// Clear-sky index used until history gives one.
    pub climatology: f64,
    /// Mean consumption assumed with no history at all, kW.
    pub fallback_consumption_kw: f64,
}

/// History spanning this long gives 48 slots instead of 24.
pub const LONG_HISTORY: Duration = Duration::days(7);
/// An hour counts as daylight for learning clouds when clear-sky makes at least this share of the
/// peak power (low sun: ratios there are noise).
const DAYLIGHT_SHARE: f64 = 0.05;
/// Learn the current cloudiness from daylight hours at most this old.
const RECENT: Duration = Duration::hours(18);
/// Recent daylight hours the current cloudiness is learned from.
const RECENT_HOURS: usize = 3;
/// Climatology is learned from this much history, once it has `CLIMATE_MIN_HOURS` daylight hours.
const CLIMATE_SPAN: Duration = Duration::days(14);
const CLIMATE_MIN_HOURS: usize = 24;
/// The clear-sky index is kept in this range (a bright broken sky can exceed clear-sky a little).
const INDEX_RANGE: (f64, f64) = (0.0, 1.2);

/// A relative consumption shape per local hour (mean 1): a mixed community of homes (evening peak)
/// and businesses (daytime), used while history is short.
pub const FALLBACK_PROFILE: [f64; 24] = [
    0.62, 0.56, 0.53, 0.52, 0.53, 0.60, 0.78, 1.00, 1.15, 1.20, 1.22, 1.22, 1.18, 1.15, 1.14, 1.13,
    1.14, 1.22, 1.38, 1.47, 1.38, 1.15, 0.92, 0.73,
];

/// A local hour gets its own climatology once history has this many daylight samples of it.
const HOURLY_MIN_DAYS: usize = 5;

/// The latest daylight hours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    /// Their clear-sky index: actual / clear-sky production.
    pub index: f64,
    /// How they compare with what climatology expected of those hours (1: as usual).
    pub factor: f64,
    /// The end of the last of them.
    pub seen: DateTime<Utc>,
}

/// What production says about the sky: recently, and usually.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CloudEstimate {
    pub recent: Option<Recent>,
    /// Long-run clear-sky index: learned, or the configured one.
    pub climatology: f64,
    /// Per local hour, the long-run index of that hour: the valley's horizon, the arrays'
    /// orientation and the usual afternoon clouds shape the day, which one number cannot.
    pub hourly: [Option<f64>; 24],
    pub tz: Tz,
}

impl CloudEstimate {
    /// The usual clear-sky index at `t`.
    pub fn usual(&self, t: DateTime<Utc>) -> f64 {
        self.hourly[t.with_timezone(&self.tz).hour() as usize].unwrap_or(self.climatology)
    }

    /// The clear-sky index expected at `t`: the usual one, scaled by how the latest hours stood
    /// from usual, that scaling fading with the time since they were seen.
    pub fn at(&self, t: DateTime<Utc>, memory_hours: f64) -> f64 {
        let usual = self.usual(t);
        match self.recent {
            None => usual,
            Some(r) => {
                let ahead_h = ((t - r.seen).num_seconds().max(0) as f64) / 3600.0;
                usual * (1.0 + (r.factor - 1.0) * (-ahead_h / memory_hours).exp())
            }
        }
    }
}

fn ratio(hours: &[(f64, f64)]) -> Option<f64> {
    let clear: f64 = hours.iter().map(|h| h.1).sum();
    let actual: f64 = hours.iter().map(|h| h.0).sum();
    (clear > 0.0).then(|| (actual / clear).clamp(INDEX_RANGE.0, INDEX_RANGE.1))
}

/// Learn the sky from history (any order) at `now`.
pub fn estimate_clouds(
    p: &ForecastParams,
    history: &[HourSample],
    now: DateTime<Utc>,
) -> CloudEstimate {
    let mut daylight: Vec<(DateTime<Utc>, f64, f64)> = history
        .iter()
        .filter(|h| h.start + Duration::hours(1) <= now)
        .filter_map(|h| {
            let clear = p.pv.clear_sky_kwh(h.start);
            (clear >= DAYLIGHT_SHARE * p.pv.peak_kw).then_some((h.start, h.production_kwh, clear))
        })
        .collect();
    daylight.sort_by_key(|h| h.0);
    let climate: Vec<&(DateTime<Utc>, f64, f64)> = daylight
        .iter()
        .filter(|h| now - h.0 <= CLIMATE_SPAN)
        .collect();
    let pairs = |hs: &[&(DateTime<Utc>, f64, f64)]| -> Vec<(f64, f64)> {
        hs.iter().map(|h| (h.1, h.2)).collect()
    };
    let climatology = if climate.len() >= CLIMATE_MIN_HOURS {
        ratio(&pairs(&climate)).unwrap_or(p.climatology)
    } else {
        p.climatology
    };
    let mut hourly = [None; 24];
    for (hr, slot) in hourly.iter_mut().enumerate() {
        let of_hour: Vec<&(DateTime<Utc>, f64, f64)> = climate
            .iter()
            .filter(|h| h.0.with_timezone(&p.tz).hour() as usize == hr)
            .copied()
            .collect();
        if of_hour.len() >= HOURLY_MIN_DAYS {
            *slot = ratio(&pairs(&of_hour));
        }
    }
    let mut est = CloudEstimate {
        recent: None,
        climatology,
        hourly,
        tz: p.tz,
    };
    let recent: Vec<&(DateTime<Utc>, f64, f64)> = daylight
        .iter()
        .rev()
        .take_while(|h| now - h.0 <= RECENT)
        .take(RECENT_HOURS)
        .collect();
    if let (Some(last), Some(index)) = (recent.first(), ratio(&pairs(&recent))) {
        let actual: f64 = recent.iter().map(|h| h.1).sum();
        let usual: f64 = recent.iter().map(|h| h.2 * est.usual(h.0)).sum();
        let factor = if usual > 0.0 {
            (actual / usual).clamp(0.0, MAX_FACTOR)
        } else {
            1.0
        };
        est.recent = Some(Recent {
            index,
            factor,
            seen: last.0 + Duration::hours(1),
        });
    }
    est
}

/// The recent hours may stand at most this many times above usual (a bright day after a dull
/// fortnight).
const MAX_FACTOR: f64 = 3.0;

/// Expected consumption per local weekday and hour, kWh, learned from history.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionModel {
    /// [weekday from Monday][local hour].
    pub kwh: [[f64; 24]; 7],
}

/// 0 for Monday–Friday, 1 Saturday, 2 Sunday (weekday from Monday = 0).
fn day_type(d: usize) -> usize {
    d.saturating_sub(4).min(2)
}

/// Share each neighbouring hour takes in the smoothing (light: loads switch on and off by the clock).
const SMOOTH: f64 = 0.1;

/// Weight of a sample `weeks` old: recent weeks count more.
fn age_weight(weeks: f64) -> f64 {
    0.7f64.powf(weeks)
}

/// Learn the weekly consumption profile. Each weekday-hour blends its own (recency-weighted) mean
/// with the mean of that hour over all days, by how many samples it has; hours never seen take the
/// fallback profile scaled to the history's mean; then each day is smoothed over ±1 hour.
pub fn consumption_model(
    p: &ForecastParams,
    history: &[HourSample],
    now: DateTime<Utc>,
) -> ConsumptionModel {
    let mut wd = [[(0.0f64, 0.0f64, 0u32); 24]; 7];
    // Per day type (Monday–Friday, Saturday, Sunday) and hour.
    let mut hod = [[(0.0f64, 0.0f64); 24]; 3];
    let (mut total, mut n) = (0.0, 0usize);
    for h in history.iter().filter(|h| h.start < now) {
        let local = h.start.with_timezone(&p.tz);
        let (d, hr) = (
            local.weekday().num_days_from_monday() as usize,
            local.hour() as usize,
        );
        let w = age_weight((now - h.start).num_hours() as f64 / 168.0);
        let c = h.consumption_kwh.max(0.0);
        wd[d][hr].0 += w * c;
        wd[d][hr].1 += w;
        wd[d][hr].2 += 1;
        hod[day_type(d)][hr].0 += w * c;
        hod[day_type(d)][hr].1 += w;
        total += c;
        n += 1;
    }
    let scale = if n > 0 {
        total / n as f64
    } else {
        p.fallback_consumption_kw
    };
    let mut raw = [[0.0; 24]; 7];
    for (d, day) in raw.iter_mut().enumerate() {
        for (hr, v) in day.iter_mut().enumerate() {
            let (ts, tw) = hod[day_type(d)][hr];
            let all = if tw > 0.0 {
                ts / tw
            } else {
                FALLBACK_PROFILE[hr] * scale
            };
            let (s, w, k) = wd[d][hr];
            *v = if k > 0 {
                let own = s / w;
                let alpha = f64::from(k) / (f64::from(k) + 1.0);
                alpha * own + (1.0 - alpha) * all
            } else {
                all
            };
        }
    }
    // Smooth along the week (circular), so a Monday 00:00 leans on Sunday 23:00.
    let flat: Vec<f64> = raw.iter().flatten().copied().collect();
    let len = flat.len();
    let mut kwh = [[0.0; 24]; 7];
    for (i, v) in kwh.iter_mut().flatten().enumerate() {
        *v = SMOOTH * flat[(i + len - 1) % len]
            + (1.0 - 2.0 * SMOOTH) * flat[i]
            + SMOOTH * flat[(i + 1) % len];
    }
    ConsumptionModel { kwh }
}

impl ConsumptionModel {
    pub fn at(&self, t: DateTime<Utc>, tz: Tz) -> f64 {
        let local = t.with_timezone(&tz);
        self.kwh[local.weekday().num_days_from_monday() as usize][local.hour() as usize]
    }
}

/// The slots to forecast at `now`: from the next hour boundary, 48 when history spans a week,
/// else 24.
pub fn slot_starts(history: &[HourSample], now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let first = history.iter().map(|h| h.start).min();
    let n = if first.is_some_and(|f| now - f >= LONG_HISTORY) {
        48
    } else {
        24
    };
    let floor = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let start = if floor == now {
        now
    } else {
        floor + Duration::hours(1)
    };
    (0..n).map(|i| start + Duration::hours(i)).collect()
}

/// The forecast at `now`. With no history and no fallback consumption nothing is known of what
/// the community uses: the slots forecast production, but none is called green or red (rather
/// than every sunny hour a surplus, and alerts sent on it).
pub fn forecast(
    p: &ForecastParams,
    th: &Thresholds,
    history: &[HourSample],
    now: DateTime<Utc>,
) -> Vec<ForecastSlot> {
    let consumption_known = !history.is_empty() || p.fallback_consumption_kw > 0.0;
    let clouds = estimate_clouds(p, history, now);
    let cons = consumption_model(p, history, now);
    slot_starts(history, now)
        .into_iter()
        .map(|start| {
            let k = clouds.at(start + Duration::minutes(30), p.cloud_memory_hours);
            let production_kwh = p.pv.clear_sky_kwh(start) * k;
            let consumption_kwh = cons.at(start, p.tz);
            let surplus_kwh = production_kwh - consumption_kwh;
            // One hour: kWh over the slot is its mean kW.
            let level = if consumption_known {
                th.instant(surplus_kwh, consumption_kwh)
            } else {
                Level::Yellow
            };
            ForecastSlot {
                start,
                production_kwh,
                consumption_kwh,
                surplus_kwh,
                level,
                openadr_level: th.openadr(level, surplus_kwh, consumption_kwh),
            }
        })
        .collect()
}

/// Helper for tests and tools: the UTC instant of a local wall time (the earlier one at a DST fold).
pub fn local(tz: Tz, y: i32, m: u32, d: u32, h: u32) -> Option<DateTime<Utc>> {
    tz.with_ymd_and_hms(y, m, d, h, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::super::config::SignalConfig;
    use super::*;
    use crate::solar::{SONDRIO, SOUTH_30};
    use crate::wire::Level;

    fn params() -> ForecastParams {
        ForecastParams {
            pv: PvModel {
                site: SONDRIO,
                peak_kw: 100.0,
                performance_ratio: 0.8,
                orientation: SOUTH_30,
            },
            tz: chrono_tz::Europe::Rome,
            cloud_memory_hours: 4.0,
            climatology: 0.6,
            fallback_consumption_kw: 20.0,
        }
    }

    fn th() -> Thresholds {
        Thresholds::from_config(&SignalConfig::default())
    }

    /// `days` days of history before `now` where the sky gives `index(hour)` of clear-sky and the
    /// loads use a flat 20 kW.
    fn history(
        p: &ForecastParams,
        now: DateTime<Utc>,
        days: i64,
        index: impl Fn(DateTime<Utc>) -> f64,
    ) -> Vec<HourSample> {
        (1..=days * 24)
            .rev()
            .map(|i| {
                let start = now - Duration::hours(i);
                HourSample {
                    start,
                    production_kwh: p.pv.clear_sky_kwh(start) * index(start),
                    consumption_kwh: 20.0,
                }
            })
            .collect()
    }

    #[test]
    fn no_history_and_no_fallback_consumption_call_no_slot_green() {
        // What a hub sees in its first minutes (the demo before its backfill has arrived):
        // nothing known of consumption, so no slot may claim a surplus.
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = ForecastParams {
            fallback_consumption_kw: 0.0,
            ..params()
        };
        let blind = forecast(&p, &th(), &[], now);
        assert_eq!(blind.len(), 24);
        assert!(blind.iter().any(|s| s.production_kwh > 10.0));
        assert!(blind.iter().all(|s| s.level == Level::Yellow), "{blind:?}");
        // With a fallback profile the same empty store still forecasts, and dark hours use power.
        let slots = forecast(&params(), &th(), &[], now);
        assert!(slots.len() >= 24);
        assert!(slots
            .iter()
            .filter(|s| s.production_kwh == 0.0)
            .all(|s| s.consumption_kwh > 0.0 && s.level != Level::Green));
    }

    #[test]
    fn clear_sky_hour_at_june_noon_is_near_the_plant_rating() {
        let p = params();
        let noon = local(p.tz, 2026, 6, 21, 13).unwrap();
        let kwh = p.pv.clear_sky_kwh(noon - Duration::minutes(30));
        // 100 kWp × PR 0.8 × about 0.95–1.0 kW/m² on a 30° south plane.
        assert!((70.0..85.0).contains(&kwh), "{kwh}");
        let night = local(p.tz, 2026, 6, 21, 1).unwrap();
        assert_eq!(p.pv.clear_sky_kwh(night), 0.0);
    }

    #[test]
    fn a_clear_morning_forecasts_a_clear_noon_and_a_green_window() {
        let p = params();
        let now = local(p.tz, 2026, 6, 10, 10).unwrap();
        let h = history(&p, now, 3, |_| 1.0);
        let clouds = estimate_clouds(&p, &h, now);
        let k = clouds.recent.unwrap().index;
        assert!((k - 1.0).abs() < 1e-9, "{k}");
        let f = forecast(&p, &th(), &h, now);
        assert_eq!(f.len(), 24);
        assert_eq!(f[0].start, now);
        let noon = f
            .iter()
            .find(|s| s.start == local(p.tz, 2026, 6, 10, 12).unwrap())
            .unwrap();
        let clear = p.pv.clear_sky_kwh(noon.start);
        // Two hours ahead the index has faded only part way to climatology (4 h memory): above
        // 0.6 + 0.4·e^(−2.5/4) of clear-sky.
        assert!(
            noon.production_kwh > clear * 0.8,
            "{} vs {clear}",
            noon.production_kwh
        );
        assert!((noon.consumption_kwh - 20.0).abs() < 1e-9);
        assert_eq!(noon.level, Level::Green);
        assert_eq!(noon.openadr_level, 0);
        let midnight = f
            .iter()
            .find(|s| s.start == local(p.tz, 2026, 6, 11, 0).unwrap())
            .unwrap();
        assert_eq!(midnight.production_kwh, 0.0);
        assert_eq!(midnight.level, Level::Red);
    }

    #[test]
    fn an_overcast_morning_forecasts_a_dim_afternoon() {
        let p = params();
        let now = local(p.tz, 2026, 6, 10, 11).unwrap();
        // Two clear days, then a thick overcast this morning (8 % of clear-sky).
        let today = local(p.tz, 2026, 6, 10, 0).unwrap();
        let h = history(&p, now, 3, |t| if t >= today { 0.08 } else { 1.0 });
        let clouds = estimate_clouds(&p, &h, now);
        let r = clouds.recent.unwrap();
        let (k, seen) = (r.index, r.seen);
        assert!((k - 0.08).abs() < 1e-9, "{k}");
        assert_eq!(seen, now);
        let f = forecast(&p, &th(), &h, now);
        let s = f.iter().find(|s| s.start == now).unwrap();
        let clear = p.pv.clear_sky_kwh(now);
        // Half an hour ahead: still mostly overcast, far below climatology.
        // Climatology was learned from the two clear days and this morning.
        let clim = clouds.climatology;
        assert!(clim > 0.7 && clim < 1.0, "{clim}");
        let expected = clear * (clim + (0.08 - clim) * (-0.5f64 / 4.0).exp());
        assert!(
            (s.production_kwh - expected).abs() < 1e-6,
            "{} vs {expected}",
            s.production_kwh
        );
        assert!(s.production_kwh < clear * 0.2);
        assert_ne!(s.level, Level::Green);
        // Tomorrow morning the memory has faded: near climatology.
        let tomorrow = f
            .iter()
            .find(|s| s.start == local(p.tz, 2026, 6, 11, 10).unwrap())
            .unwrap();
        let ratio = tomorrow.production_kwh / p.pv.clear_sky_kwh(tomorrow.start);
        assert!((ratio - clim).abs() < 0.01, "{ratio} vs {clim}");
    }

    #[test]
    fn broken_clouds_average_out_over_recent_hours() {
        let p = params();
        let now = local(p.tz, 2026, 6, 10, 12).unwrap();
        // Alternating bright and dark hours this morning: the index is their clear-sky-weighted mean.
        let h = history(&p, now, 2, |t| if t.hour() % 2 == 0 { 0.9 } else { 0.3 });
        let clouds = estimate_clouds(&p, &h, now);
        let k = clouds.recent.unwrap().index;
        let last3: Vec<HourSample> = h.iter().rev().take(3).copied().collect();
        let expected = last3.iter().map(|s| s.production_kwh).sum::<f64>()
            / last3
                .iter()
                .map(|s| p.pv.clear_sky_kwh(s.start))
                .sum::<f64>();
        assert!((k - expected).abs() < 1e-9, "{k} vs {expected}");
        assert!(k > 0.3 && k < 0.9, "{k}");
    }

    #[test]
    fn at_night_the_last_afternoon_has_faded_to_climatology_by_morning() {
        let p = params();
        let now = local(p.tz, 2026, 6, 10, 3).unwrap();
        let h = history(&p, now, 1, |_| 0.2);
        let clouds = estimate_clouds(&p, &h, now);
        let r = clouds.recent.unwrap();
        let (k, seen) = (r.index, r.seen);
        assert!((k - 0.2).abs() < 1e-9);
        let nine = local(p.tz, 2026, 6, 10, 9).unwrap();
        // Climatology is still the configured one (one day is below the learning minimum).
        let at9 = clouds.at(nine, 4.0);
        assert!(at9 > 0.55 && at9 < 0.6, "{at9} (seen {seen})");
    }

    #[test]
    fn two_weeks_of_history_teach_climatology_and_give_48_slots() {
        let p = params();
        let now = local(p.tz, 2026, 6, 20, 3).unwrap();
        let h = history(&p, now, 14, |_| 0.75);
        let clouds = estimate_clouds(&p, &h, now);
        assert!((clouds.climatology - 0.75).abs() < 1e-9);
        assert_eq!(forecast(&p, &th(), &h, now).len(), 48);
    }

    #[test]
    fn a_shaded_morning_is_learned_per_hour() {
        let p = params();
        let now = local(p.tz, 2026, 6, 20, 3).unwrap();
        // A week where the mountains to the east shade the arrays until 10:00 local.
        let h = history(&p, now, 7, |t| {
            if t.with_timezone(&p.tz).hour() < 10 {
                0.4
            } else {
                0.9
            }
        });
        let clouds = estimate_clouds(&p, &h, now);
        let at = |hr| clouds.usual(local(p.tz, 2026, 6, 20, hr).unwrap());
        assert!((at(8) - 0.4).abs() < 1e-9, "{}", at(8));
        assert!((at(14) - 0.9).abs() < 1e-9, "{}", at(14));
        // Yesterday afternoon was as usual: the factor is 1, so tomorrow keeps the shape.
        let r = clouds.recent.unwrap();
        assert!((r.factor - 1.0).abs() < 1e-9, "{}", r.factor);
        let f = forecast(&p, &th(), &h, now);
        let slot = |hr| {
            f.iter()
                .find(|s| s.start == local(p.tz, 2026, 6, 20, hr).unwrap())
                .unwrap()
        };
        let ratio = |hr| slot(hr).production_kwh / p.pv.clear_sky_kwh(slot(hr).start);
        assert!((ratio(8) - 0.4).abs() < 1e-9 && (ratio(14) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn consumption_follows_weekday_and_hour_from_history() {
        let p = params();
        let now = local(p.tz, 2026, 6, 22, 0).unwrap(); // a Monday
                                                        // Three weeks: weekdays 30 kWh from 8 to 18, else 10; weekends 10 all day.
        let h: Vec<HourSample> = (1..=21 * 24)
            .rev()
            .map(|i| {
                let start = now - Duration::hours(i);
                let l = start.with_timezone(&p.tz);
                let busy = l.weekday().num_days_from_monday() < 5 && (8..18).contains(&l.hour());
                HourSample {
                    start,
                    production_kwh: 0.0,
                    consumption_kwh: if busy { 30.0 } else { 10.0 },
                }
            })
            .collect();
        let m = consumption_model(&p, &h, now);
        let mon_noon = m.at(local(p.tz, 2026, 6, 22, 12).unwrap(), p.tz);
        let sun_noon = m.at(local(p.tz, 2026, 6, 28, 12).unwrap(), p.tz);
        let mon_night = m.at(local(p.tz, 2026, 6, 22, 3).unwrap(), p.tz);
        assert!(mon_noon > 25.0, "{mon_noon}");
        assert!(sun_noon < 17.0, "{sun_noon}");
        assert!(mon_night < 12.0, "{mon_night}");
    }

    #[test]
    fn no_history_falls_back_to_the_profile_at_the_configured_mean() {
        let p = params();
        let now = local(p.tz, 2026, 6, 22, 0).unwrap();
        let m = consumption_model(&p, &[], now);
        let mean = m.kwh.iter().flatten().sum::<f64>() / 168.0;
        let profile_mean = FALLBACK_PROFILE.iter().sum::<f64>() / 24.0;
        assert!((mean - 20.0 * profile_mean).abs() < 1e-9, "{mean}");
        assert!(
            m.at(local(p.tz, 2026, 6, 22, 19).unwrap(), p.tz)
                > m.at(now + Duration::hours(3), p.tz)
        );
        // With no history the cloudiness is climatology.
        let c = estimate_clouds(&p, &[], now);
        assert_eq!((c.recent, c.climatology), (None, 0.6));
    }
}
