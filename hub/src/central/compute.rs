//! The compute loop: live community figures from the latest power of each mapped meter, and the
//! recomputation of dirty settlement periods with the pure energy rules (`energy`, `balance`).
//!
//! It only moves data between the store and the pure functions; it never changes a reading.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};

use super::balance;
use super::config::{CentralConfig, MeterMap, Role};
use super::energy::{
    self, CounterSample, EnergyOptions, Flags, MeterData, Period, PeriodEnergy, PowerSample, Range,
    Replacement,
};
use super::store::{Reader, StoreError};
use crate::wire::Balance;

/// A reading older than this does not count in the live figures.
pub const LIVE_FRESH_SECS: i64 = 120;
/// Counter samples further apart than this are a gap (spread and flagged estimated).
pub const MAX_SAMPLE_GAP_SECS: i64 = 15 * 60;

/// The community as the computations see it: who measures what, where.
#[derive(Debug, Clone)]
pub struct Model {
    pub meters: HashMap<(String, String), MeterMap>,
    pub pod_substation: HashMap<String, String>,
    pub pod_member: HashMap<String, String>,
    pub eligible_pods: HashSet<String>,
    pub substations: Vec<String>,
    pub period: Period,
    /// Declared meter replacements by (site, meter), in time order.
    pub replacements: HashMap<(String, String), Vec<Replacement>>,
}

impl Model {
    pub fn new(cfg: &CentralConfig) -> Self {
        Model {
            meters: cfg.meter_index(),
            pod_substation: cfg.pod_substation(),
            pod_member: cfg
                .members
                .iter()
                .map(|m| (m.pod.clone(), m.id.clone()))
                .collect(),
            eligible_pods: cfg
                .plants
                .iter()
                .filter(|p| p.eligible)
                .map(|p| p.pod.clone())
                .collect(),
            substations: cfg.substations.iter().map(|s| s.id.clone()).collect(),
            period: Period::from_secs(cfg.period_minutes * 60).unwrap_or(Period::HOUR),
            replacements: replacements_of(cfg),
        }
    }
}

fn replacements_of(cfg: &CentralConfig) -> HashMap<(String, String), Vec<Replacement>> {
    let mut out: HashMap<(String, String), Vec<Replacement>> = HashMap::new();
    for r in &cfg.replacements {
        out.entry((r.site.clone(), r.meter.clone()))
            .or_default()
            .push(Replacement {
                at: r.at,
                imp: r.imp,
                exp: r.exp,
            });
    }
    for list in out.values_mut() {
        list.sort_by_key(|r| r.at);
    }
    out
}

/// Power (or energy) of one POD from its meters, by role; all values ≥ 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodFlows {
    /// From the grid meter: (import, export); `None` when the POD has no grid meter.
    pub grid: Option<(f64, f64)>,
    pub production: f64,
    /// From consumption meters; `None` when the POD has none.
    pub consumption: Option<f64>,
    /// Batteries' net power, positive charging (neither production nor consumption).
    pub storage: f64,
}

impl PodFlows {
    /// (injection, withdrawal): from the grid meter, or netted from production and consumption.
    pub fn exchange(&self) -> (f64, f64) {
        match self.grid {
            Some((imp, exp)) => (exp, imp),
            None => {
                let net = self.consumption.unwrap_or(0.0) + self.storage - self.production;
                (f64::max(0.0, -net), f64::max(0.0, net))
            }
        }
    }

    /// What the POD's loads use: measured, or inferred as withdrawal − injection + production −
    /// battery charging (`balance::inferred_consumption`'s rule on power).
    pub fn consumed(&self) -> f64 {
        match (self.consumption, self.grid) {
            (Some(c), _) => c,
            (None, Some((imp, exp))) => f64::max(0.0, imp - exp + self.production - self.storage),
            (None, None) => 0.0,
        }
    }
}

/// Per substation: (injection, eligible injection, withdrawal, production, consumption).
pub fn per_substation(
    model: &Model,
    pods: &BTreeMap<String, PodFlows>,
) -> BTreeMap<String, [f64; 5]> {
    let mut out: BTreeMap<String, [f64; 5]> = model
        .substations
        .iter()
        .map(|s| (s.clone(), [0.0; 5]))
        .collect();
    for (pod, f) in pods {
        let Some(sub) = model.pod_substation.get(pod) else {
            continue;
        };
        let (inj, wd) = f.exchange();
        let e = out.entry(sub.clone()).or_insert([0.0; 5]);
        e[0] += inj;
        if model.eligible_pods.contains(pod) {
            e[1] += inj;
        }
        e[2] += wd;
        e[3] += f.production;
        e[4] += f.consumed();
    }
    out
}

/// Live figures from the latest power per (site, meter). Pure.
pub fn live_balance(
    model: &Model,
    latest: &HashMap<(String, String), (DateTime<Utc>, f64)>,
    now: DateTime<Utc>,
) -> Balance {
    let (pods, fresh) = live_pods(model, latest, now);
    let subs = per_substation(model, &pods);
    let sum = |i: usize| subs.values().map(|v| v[i]).sum::<f64>();
    let (injection_w, withdrawal_w) = (sum(0), sum(2));
    Balance {
        ts: now,
        production_w: sum(3),
        consumption_w: sum(4),
        injection_w,
        withdrawal_w,
        surplus_w: injection_w - withdrawal_w,
        shared_w: subs.values().map(|v| v[1].min(v[2])).sum(),
        meters_fresh: fresh,
        meters_total: model.meters.len() as u32,
    }
}

/// Live flows per POD from the latest power per (site, meter), and how many meters were fresh.
pub fn live_pods(
    model: &Model,
    latest: &HashMap<(String, String), (DateTime<Utc>, f64)>,
    now: DateTime<Utc>,
) -> (BTreeMap<String, PodFlows>, u32) {
    let mut pods: BTreeMap<String, PodFlows> = BTreeMap::new();
    let mut fresh = 0u32;
    for (key, m) in &model.meters {
        let Some((ts, p_w)) = latest.get(key) else {
            continue;
        };
        if (now - *ts).num_seconds() > LIVE_FRESH_SECS {
            continue;
        }
        fresh += 1;
        let f = pods.entry(m.pod.clone()).or_default();
        match m.role {
            Role::Grid => f.grid = Some((p_w.max(0.0), (-p_w).max(0.0))),
            Role::Production => f.production += (-p_w).max(0.0),
            Role::Consumption => *f.consumption.get_or_insert(0.0) += p_w.max(0.0),
            Role::Storage => f.storage += p_w,
        }
    }
    (pods, fresh)
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Recompute up to `limit` dirty periods that have started by `now`, oldest first; the still-open
/// period only when `include_open`. Returns how many dirty periods were recomputed.
///
/// A glitch or a spike is only told from a reset or a rise by the samples after it, so the
/// samples of a dirty period can change the figures of the periods just before it: those back to
/// the period of the [`energy::MAX_ANOMALY_RUN`]`+1`-th sample before it are recomputed too.
pub fn recompute_dirty(
    reader: &mut Reader,
    model: &Model,
    now: DateTime<Utc>,
    limit: usize,
    include_open: bool,
) -> Result<usize, StoreError> {
    let open_start = model.period.floor(now).timestamp();
    let dirty: Vec<i64> = reader
        .dirty_periods(limit * 4)?
        .into_iter()
        .filter(|s| *s < open_start || (include_open && *s == open_start))
        .take(limit)
        .collect();
    if dirty.is_empty() {
        return Ok(0);
    }
    let ids: HashMap<(String, String), i64> = reader
        .meters()?
        .into_iter()
        .map(|k| ((k.site, k.name), k.id))
        .collect();
    let period_s = i64::from(model.period.secs());
    let mut done: HashSet<i64> = HashSet::new();
    for start_s in &dirty {
        let settled = settle_period(reader, model, &ids, *start_s)?;
        reader.save_period(*start_s, &settled.meters, &settled.balance)?;
        done.insert(*start_s);
        let Some(back_ms) = settled.lookback_ms else {
            continue;
        };
        let from = model.period.floor(ts(back_ms)).timestamp();
        // Never further back than a late reading marks (62 days of quarter-hours).
        let from = from.max(*start_s - MAX_LOOKBACK_PERIODS * period_s);
        let mut s = from;
        while s < *start_s {
            if done.insert(s) && !dirty.contains(&s) {
                let e = settle_period(reader, model, &ids, s)?;
                reader.save_period(s, &e.meters, &e.balance)?;
            }
            s += period_s;
        }
    }
    Ok(dirty.len())
}

/// At start: mark for recomputation the stored periods that a changed energy setting touches,
/// then remember the settings. A meter whose bound changed (or that was computed before bounds
/// were remembered) has all its stored periods marked; a replacement declared, changed or
/// withdrawn marks the periods from a few samples before its time to a few after. Returns how many
/// periods were newly marked.
pub fn mark_changed_settings(reader: &mut Reader, model: &Model) -> Result<usize, StoreError> {
    let stored = reader.energy_settings()?;
    let ids: HashMap<(String, String), i64> = reader
        .meters()?
        .into_iter()
        .map(|k| ((k.site, k.name), k.id))
        .collect();
    let period_s = i64::from(model.period.secs());
    let none = Vec::new();
    let mut now_settings = HashMap::new();
    let mut marked = 0;
    let mut keys: Vec<&(String, String)> = model.meters.keys().collect();
    keys.sort();
    for key in keys {
        let m = &model.meters[key];
        let name = format!("{}/{}", key.0, key.1);
        let bound = format!("{}", m.max_power_w);
        let reps = model.replacements.get(key).unwrap_or(&none);
        let reps_text = format!("{reps:?}");
        let (bound_key, reps_key) = (format!("bound:{name}"), format!("replacements:{name}"));
        let bound_changed = stored.get(&bound_key) != Some(&bound);
        let old_reps = stored
            .get(&reps_key)
            .cloned()
            .unwrap_or_else(|| "[]".into());
        now_settings.insert(bound_key, bound);
        now_settings.insert(reps_key, reps_text.clone());
        let Some(&id) = ids.get(key) else {
            continue;
        };
        if bound_changed {
            if let Some((first, last)) = reader.sample_span(id)? {
                marked +=
                    reader.mark_dirty(first.div_euclid(1000), last.div_euclid(1000), period_s)?;
            }
        } else if old_reps != reps_text {
            // The replacements as they were are not kept beyond their text: re-settle around
            // every replacement now declared, and around any time the old text names.
            let mut times: Vec<i64> = reps.iter().map(|r| r.at.timestamp_millis()).collect();
            times.extend(rfc3339_times(&old_reps));
            for t in times {
                let around = reader.counter_samples_around(id, t, t, energy::CONTEXT_SAMPLES)?;
                let first = around.first().map_or(t, |s| s.ts_ms.min(t));
                let last = around.last().map_or(t, |s| s.ts_ms.max(t));
                marked +=
                    reader.mark_dirty(first.div_euclid(1000), last.div_euclid(1000), period_s)?;
            }
        }
    }
    reader.save_energy_settings(&now_settings)?;
    Ok(marked)
}

/// The instants a `Debug` text of replacements names (`at: 2026-03-14T09:20:00Z`), ms.
fn rfc3339_times(text: &str) -> Vec<i64> {
    text.split("at: ")
        .skip(1)
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.timestamp_millis())
        .collect()
}

/// Most periods recomputed before a dirty one because of what its samples show.
const MAX_LOOKBACK_PERIODS: i64 = 24 * 4 * 62;

/// A settled period: energy per meter, the community balance, and the earliest sample time whose
/// period may change with this period's samples (see [`recompute_dirty`]).
pub struct Settled {
    pub meters: Vec<(i64, PeriodEnergy)>,
    pub balance: balance::Balance,
    pub lookback_ms: Option<i64>,
}

/// Energy per meter, per POD and per substation of the period starting at `start_s`: counter
/// samples (with [`energy::CONTEXT_SAMPLES`] on each side), per-minute power and declared
/// replacements from the store and the config through `energy::meter_periods_with` (bounded by
/// each meter's `max_power_w`), then `balance::pod_periods` and `balance::community_balance`. A
/// POD without a grid meter is netted per minute.
pub fn settle_period(
    reader: &Reader,
    model: &Model,
    ids: &HashMap<(String, String), i64>,
    start_s: i64,
) -> Result<Settled, StoreError> {
    let period = model.period;
    let from = ts(start_s * 1000);
    let range = Range::new(from, from + period.duration());
    let gap = EnergyOptions {
        max_gap: chrono::Duration::seconds(MAX_SAMPLE_GAP_SECS),
        max_power_w: energy::DEFAULT_MAX_POWER_W,
    };
    let mut by_pod: BTreeMap<&str, Vec<&MeterMap>> = BTreeMap::new();
    for m in model.meters.values() {
        by_pod.entry(m.pod.as_str()).or_default().push(m);
    }
    // A POD with nothing but batteries has no exchange of its own to settle.
    by_pod.retain(|_, ms| ms.iter().any(|m| m.role != Role::Storage));
    let mut per_meter = Vec::new();
    let mut series = Vec::new();
    let mut lookback_ms: Option<i64> = None;
    let no_replacements = Vec::new();
    for (pod, meters) in by_pod {
        let Some(member) = model.pod_member.get(pod) else {
            continue;
        };
        let Some(substation) = model.pod_substation.get(pod) else {
            continue;
        };
        let has_grid = meters.iter().any(|m| m.role == Role::Grid);
        let step = if has_grid { period } else { Period::MINUTE };
        let mut steps = Vec::with_capacity(meters.len());
        for m in meters {
            let key = (m.site.clone(), m.meter.clone());
            let id = ids.get(&key).copied();
            let (samples, power) = match id {
                Some(id) => meter_inputs(reader, id, range)?,
                None => (Vec::new(), Vec::new()),
            };
            let before: Vec<i64> = samples
                .iter()
                .map(|s| s.ts.timestamp_millis())
                .filter(|t| *t < range.from.timestamp_millis())
                .collect();
            // Only a counter that goes down near the boundary can be judged anew from here.
            let back = before
                .len()
                .checked_sub(energy::MAX_ANOMALY_RUN + 1)
                .map(|i| before[i])
                .or(before.first().copied())
                .filter(|_| energy::unsettled_near(&samples, range.from));
            if let Some(t) = back {
                lookback_ms = Some(lookback_ms.map_or(t, |l| l.min(t)));
            }
            let data = MeterData {
                samples: &samples,
                power: &power,
                replacements: model.replacements.get(&key).unwrap_or(&no_replacements),
            };
            let opts = gap.with_max_power_w(m.max_power_w);
            let Ok(e) = energy::meter_periods_with(&data, range, step, &opts) else {
                continue;
            };
            if let Some(id) = id {
                per_meter.push((id, sum_steps(from, &e)));
            }
            let role = match m.role {
                Role::Grid => balance::MeterRole::Grid,
                Role::Production => balance::MeterRole::Production,
                Role::Consumption => balance::MeterRole::Consumption,
                Role::Storage => balance::MeterRole::Storage,
            };
            steps.push(balance::MeterSteps { role, steps: e });
        }
        match balance::pod_periods(&steps, range, step, period) {
            Ok(periods) => series.push(balance::PodSeries {
                pod: pod.to_string(),
                member: member.clone(),
                substation: substation.clone(),
                eligible_injection: model.eligible_pods.contains(pod),
                periods,
            }),
            Err(e) => tracing::warn!("POD {pod}: {e}"),
        }
    }
    Ok(Settled {
        meters: per_meter,
        balance: balance::community_balance(&series),
        lookback_ms,
    })
}

/// A meter's counter samples around `range` and its per-minute power over their span.
fn meter_inputs(
    reader: &Reader,
    id: i64,
    range: Range,
) -> Result<(Vec<CounterSample>, Vec<PowerSample>), StoreError> {
    let samples: Vec<CounterSample> = reader
        .counter_samples_around(
            id,
            range.from.timestamp_millis(),
            range.to.timestamp_millis(),
            energy::CONTEXT_SAMPLES,
        )?
        .into_iter()
        .map(|s| CounterSample::new(ts(s.ts_ms), s.imp_wh, s.exp_wh))
        .collect();
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok((samples, Vec::new()));
    };
    let power = reader
        .power_samples(id, first.ts.timestamp_millis(), last.ts.timestamp_millis())?
        .into_iter()
        .map(|(start_ms, p_w)| PowerSample {
            start: ts(start_ms),
            end: ts(start_ms + 60_000),
            p_w,
        })
        .collect();
    Ok((samples, power))
}

/// One meter's steps summed into its period figure.
fn sum_steps(start: DateTime<Utc>, steps: &[PeriodEnergy]) -> PeriodEnergy {
    steps.iter().fold(
        PeriodEnergy {
            start,
            imported_mwh: 0,
            exported_mwh: 0,
            flags: Flags::NONE,
        },
        |a, s| PeriodEnergy {
            start,
            imported_mwh: a.imported_mwh + s.imported_mwh,
            exported_mwh: a.exported_mwh + s.exported_mwh,
            flags: a.flags.merge(s.flags),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let mm = |site: &str, meter: &str, pod: &str, role| {
            (
                (site.to_string(), meter.to_string()),
                MeterMap {
                    site: site.into(),
                    meter: meter.into(),
                    pod: pod.into(),
                    role,
                    max_power_w: 2e6,
                },
            )
        };
        Model {
            meters: HashMap::from([
                mm("a", "grid", "P1", Role::Grid),
                mm("a", "pv", "P1", Role::Production),
                mm("b", "load", "P2", Role::Consumption),
                mm("c", "grid", "P3", Role::Grid),
            ]),
            pod_substation: HashMap::from([
                ("P1".into(), "S1".into()),
                ("P2".into(), "S1".into()),
                ("P3".into(), "S2".into()),
            ]),
            pod_member: HashMap::new(),
            eligible_pods: HashSet::from(["P1".to_string()]),
            substations: vec!["S1".into(), "S2".into()],
            period: Period::HOUR,
            replacements: HashMap::new(),
        }
    }

    #[test]
    fn live_balance_nets_by_pod_and_shares_within_a_substation() {
        let now = Utc::now();
        let fresh = now - chrono::Duration::seconds(5);
        let latest = HashMap::from([
            // P1 exports 3 kW to the grid while its PV makes 5 kW: it uses 2 kW itself.
            (("a".to_string(), "grid".to_string()), (fresh, -3000.0)),
            (("a".to_string(), "pv".to_string()), (fresh, -5000.0)),
            // P2 (no grid meter) draws 1 kW; P3 (other substation) draws 4 kW.
            (("b".to_string(), "load".to_string()), (fresh, 1000.0)),
            (("c".to_string(), "grid".to_string()), (fresh, 4000.0)),
        ]);
        let b = live_balance(&model(), &latest, now);
        assert_eq!(b.production_w, 5000.0);
        assert_eq!(b.consumption_w, 2000.0 + 1000.0 + 4000.0);
        assert_eq!(b.injection_w, 3000.0);
        assert_eq!(b.withdrawal_w, 5000.0);
        assert_eq!(b.surplus_w, -2000.0);
        // S1: min(3000 eligible injection, 1000 withdrawal); S2 has no injection.
        assert_eq!(b.shared_w, 1000.0);
        assert_eq!((b.meters_fresh, b.meters_total), (4, 4));
    }

    #[test]
    fn a_charging_battery_is_not_counted_as_the_buildings_consumption_live() {
        // P1: grid exports 1 kW, PV makes 5 kW, the battery charges at 3 kW: loads use 1 kW.
        let mut m = model();
        m.meters.insert(
            ("a".to_string(), "bat".to_string()),
            MeterMap {
                site: "a".into(),
                meter: "bat".into(),
                pod: "P1".into(),
                role: Role::Storage,
                max_power_w: 2e6,
            },
        );
        let now = Utc::now();
        let fresh = now - chrono::Duration::seconds(5);
        let latest = HashMap::from([
            (("a".to_string(), "grid".to_string()), (fresh, -1000.0)),
            (("a".to_string(), "pv".to_string()), (fresh, -5000.0)),
            (("a".to_string(), "bat".to_string()), (fresh, 3000.0)),
        ]);
        let b = live_balance(&m, &latest, now);
        assert_eq!(b.production_w, 5000.0);
        assert_eq!(b.consumption_w, 1000.0);
        assert_eq!(b.injection_w, 1000.0);
        // Without a grid meter the battery nets: P2's load of 1 kW fed by a 400 W discharge.
        let p2 = PodFlows {
            consumption: Some(1000.0),
            storage: -400.0,
            ..PodFlows::default()
        };
        assert_eq!(p2.exchange(), (0.0, 600.0));
        assert_eq!(p2.consumed(), 1000.0);
    }

    #[test]
    fn stale_readings_are_left_out_of_the_live_figures() {
        let now = Utc::now();
        let old = now - chrono::Duration::seconds(LIVE_FRESH_SECS + 1);
        let latest = HashMap::from([(("c".to_string(), "grid".to_string()), (old, 4000.0))]);
        let b = live_balance(&model(), &latest, now);
        assert_eq!((b.withdrawal_w, b.meters_fresh), (0.0, 0));
    }
}
