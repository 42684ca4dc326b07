//! The compute loop: live community figures from the latest power of each mapped meter, and the
//! recomputation of dirty settlement periods with the pure energy rules (`energy`, `balance`).
//!
//! It only moves data between the store and the pure functions; it never changes a reading.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};

use super::balance;
use super::config::{CentralConfig, MeterMap, Role};
use super::energy::{self, CounterSample, EnergyOptions, Flags, Period, PeriodEnergy, Range};
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
        }
    }
}

/// Power (or energy) of one POD from its meters, by role; all values ≥ 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodFlows {
    /// From the grid meter: (import, export); `None` when the POD has no grid meter.
    pub grid: Option<(f64, f64)>,
    pub production: f64,
    /// From consumption meters; `None` when the POD has none.
    pub consumption: Option<f64>,
}

impl PodFlows {
    /// (injection, withdrawal): from the grid meter, or netted from production and consumption.
    pub fn exchange(&self) -> (f64, f64) {
        match self.grid {
            Some((imp, exp)) => (exp, imp),
            None => {
                let net = self.consumption.unwrap_or(0.0) - self.production;
                (f64::max(0.0, -net), f64::max(0.0, net))
            }
        }
    }

    /// What the POD's loads use: measured, or inferred as withdrawal − injection + production.
    pub fn consumed(&self) -> f64 {
        match (self.consumption, self.grid) {
            (Some(c), _) => c,
            (None, Some((imp, exp))) => f64::max(0.0, imp - exp + self.production),
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
            Role::Storage => {}
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
/// period only when `include_open`. Returns how many were recomputed.
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
    for start_s in &dirty {
        let (meters, balance) = settle_period(reader, model, &ids, *start_s)?;
        reader.save_period(*start_s, &meters, &balance)?;
    }
    Ok(dirty.len())
}

/// Energy per meter, per POD and per substation of the period starting at `start_s`: counter
/// samples from the store through `energy::meter_periods`, then `balance::pod_periods` and
/// `balance::community_balance`. A POD without a grid meter is netted per minute.
pub fn settle_period(
    reader: &Reader,
    model: &Model,
    ids: &HashMap<(String, String), i64>,
    start_s: i64,
) -> Result<(Vec<(i64, PeriodEnergy)>, balance::Balance), StoreError> {
    let period = model.period;
    let from = ts(start_s * 1000);
    let range = Range::new(from, from + period.duration());
    let opts = EnergyOptions {
        max_gap: chrono::Duration::seconds(MAX_SAMPLE_GAP_SECS),
    };
    let mut by_pod: BTreeMap<&str, Vec<&MeterMap>> = BTreeMap::new();
    for m in model.meters.values() {
        if m.role != Role::Storage {
            by_pod.entry(m.pod.as_str()).or_default().push(m);
        }
    }
    let mut per_meter = Vec::new();
    let mut series = Vec::new();
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
            let samples: Vec<CounterSample> = match ids.get(&(m.site.clone(), m.meter.clone())) {
                Some(id) => reader
                    .counter_samples(
                        *id,
                        range.from.timestamp_millis(),
                        range.to.timestamp_millis(),
                    )?
                    .into_iter()
                    .map(|s| CounterSample::new(ts(s.ts_ms), s.imp_wh, s.exp_wh))
                    .collect(),
                None => Vec::new(),
            };
            let Ok(e) = energy::meter_periods(&samples, range, step, &opts) else {
                continue;
            };
            if let Some(id) = ids.get(&(m.site.clone(), m.meter.clone())) {
                per_meter.push((*id, sum_steps(from, &e)));
            }
            let role = match m.role {
                Role::Grid => balance::MeterRole::Grid,
                Role::Production => balance::MeterRole::Production,
                _ => balance::MeterRole::Consumption,
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
    Ok((per_meter, balance::community_balance(&series)))
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
    fn stale_readings_are_left_out_of_the_live_figures() {
        let now = Utc::now();
        let old = now - chrono::Duration::seconds(LIVE_FRESH_SECS + 1);
        let latest = HashMap::from([(("c".to_string(), "grid".to_string()), (old, 4000.0))]);
        let b = live_balance(&model(), &latest, now);
        assert_eq!((b.withdrawal_w, b.meters_fresh), (0.0, 0));
    }
}
