//! The community energy balance: per member POD injection and withdrawal, per primary substation
//! the shared energy, and each POD's contribution to it.
//!
//! Pure: no I/O, no clock. Shared energy never exceeds the eligible injection or the withdrawal of
//! its substation, and contributions always add up exactly (to the mWh) to the shared energy.
//!
//! # API (called by the central hub)
//! 1. [`pod_periods`]`(meters, range, step, period) -> Result<Vec<PodPeriod>, BalanceError>`: for
//!    one POD, from its meters' energy per `step` (each from
//!    [`energy::meter_periods`](crate::energy::meter_periods) over the same `range` with period
//!    `step`), the POD's injection, withdrawal, production and consumption per settlement
//!    `period`. `step` must divide `period`; it is the netting granularity for a POD without a
//!    grid meter (use the reading interval, e.g. [`Period::MINUTE`]). A POD with a grid meter can
//!    pass `step == period`.
//! 2. [`community_balance`]`(pods) -> Balance`: from every member POD's [`PodSeries`] (same
//!    periods), the per-substation and community figures and the per-POD contributions.
//! 3. [`Balance::member_totals`] sums contributions per member; [`apportion`] is the exact
//!    largest-remainder split used throughout (also by the incentive).
//!
//! # Rules (DESIGN.md, "Community energy rules"; ARERA TIAD)
//! - With a grid meter (role `grid`): withdrawal (*prelievo*) = imported, injection
//!   (*immissione*) = exported, per period. Several grid meters on one POD are summed.
//! - Without one: per step, withdrawal = max(0, consumption − production) and injection =
//!   max(0, production − consumption), then summed over the period.
//! - Production = Σ exported by `production` meters (`None` when the POD has none).
//!   Consumption = Σ imported by `consumption` meters; a POD without consumption meters but with
//!   a grid meter has its consumption inferred per step from the energy balance of the POD:
//!   withdrawal − injection + production (never below 0). A grid-only POD that exports has
//!   generation nobody meters: its inferred consumption is flagged `estimated`.
//! - Storage (role `storage`: import = charged, export = discharged) is neither production nor
//!   consumption. Behind a grid meter it leaves withdrawal and injection as metered, and the
//!   inferred consumption is withdrawal − injection + production − charged + discharged
//!   ([`inferred_consumption`]); without a grid meter it nets with the loads and the plants
//!   ([`netted_exchange`]).
//! - Per substation and period: shared = min(Σ injection of PODs hosting an eligible plant,
//!   Σ withdrawal of all member PODs).
//! - Contributions, per substation and period: the shared energy is split among PODs pro rata of
//!   withdrawal (as consumers) and, separately, pro rata of eligible injection (as producers);
//!   each side sums exactly to the shared energy.
//! - Flags: a POD period takes the flags of the meters its injection/withdrawal come from (a
//!   missing step is `incomplete`); a substation or community period takes the union of its PODs'.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::energy::{EnergyError, Flags, Period, PeriodEnergy, Range};

/// Errors of the balance: caller mistakes, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error(transparent)]
    Energy(#[from] EnergyError),
    #[error("a POD needs a grid meter, or production/consumption meters to net")]
    NoMeters,
}

/// What a meter measures on its POD (DESIGN.md, site config roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterRole {
    /// The POD exchange meter: import = withdrawal, export = injection.
    Grid,
    /// A generator: produced energy = its export.
    Production,
    /// A load: consumed energy = its import.
    Consumption,
    /// A battery: charged = its import, discharged = its export; never production or consumption.
    Storage,
}

/// What a POD's loads used, from its grid exchange, its production and its battery: whatever came
/// in (from the grid, the plants and the battery giving back) less what went out (to the grid and
/// into the battery). Never below 0 (a period's metering error cannot make loads produce).
pub fn inferred_consumption(
    withdrawal: u64,
    injection: u64,
    production: u64,
    charged: u64,
    discharged: u64,
) -> u64 {
    (withdrawal + production + discharged).saturating_sub(injection + charged)
}

/// (withdrawal, injection) of a POD without a grid meter, netted per step: the loads and the
/// battery's charging draw, the plants and the battery's discharging supply.
pub fn netted_exchange(
    consumption: u64,
    production: u64,
    charged: u64,
    discharged: u64,
) -> (u64, u64) {
    let (draw, supply) = (consumption + charged, production + discharged);
    (draw.saturating_sub(supply), supply.saturating_sub(draw))
}

/// One meter's energy per step, as returned by `energy::meter_periods`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSteps {
    pub role: MeterRole,
    pub steps: Vec<PeriodEnergy>,
}

/// One POD in one settlement period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PodPeriod {
    pub start: DateTime<Utc>,
    pub injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub production_mwh: Option<u64>,
    pub consumption_mwh: Option<u64>,
    /// Flags of the injection and withdrawal figures.
    pub flags: Flags,
    /// Flags of the production and consumption figures.
    pub prod_cons_flags: Flags,
}

/// Injection, withdrawal, production and consumption of one POD per period of `range`.
pub fn pod_periods(
    meters: &[MeterSteps],
    range: Range,
    step: Period,
    period: Period,
) -> Result<Vec<PodPeriod>, BalanceError> {
    if period.secs() % step.secs() != 0 {
        return Err(EnergyError::StepNotDivisor {
            step_secs: step.secs(),
            period_secs: period.secs(),
        }
        .into());
    }
    let starts = range.starts(period)?;
    let has = |r: MeterRole| meters.iter().any(|m| m.role == r);
    let (has_grid, has_prod, has_cons) = (
        has(MeterRole::Grid),
        has(MeterRole::Production),
        has(MeterRole::Consumption),
    );
    if !has_grid && !has_prod && !has_cons {
        return Err(BalanceError::NoMeters);
    }
    let by_start: Vec<(MeterRole, BTreeMap<DateTime<Utc>, &PeriodEnergy>)> = meters
        .iter()
        .map(|m| (m.role, m.steps.iter().map(|s| (s.start, s)).collect()))
        .collect();
    let steps_per_period = period.secs() / step.secs();
    let mut out = Vec::with_capacity(starts.len());
    for start in starts {
        let mut p = PodPeriod {
            start,
            injection_mwh: 0,
            withdrawal_mwh: 0,
            production_mwh: has_prod.then_some(0),
            consumption_mwh: (has_cons || has_grid).then_some(0),
            flags: Flags::NONE,
            prod_cons_flags: Flags::NONE,
        };
        for k in 0..steps_per_period {
            let t = start + step.duration() * k as i32;
            let (mut grid_imp, mut grid_exp, mut prod, mut cons) = (0u64, 0u64, 0u64, 0u64);
            let (mut charged, mut discharged) = (0u64, 0u64);
            let (mut grid_f, mut prod_f, mut cons_f) = (Flags::NONE, Flags::NONE, Flags::NONE);
            let mut stor_f = Flags::NONE;
            for (role, steps) in &by_start {
                let (e, f) = match steps.get(&t) {
                    Some(s) => ((s.imported_mwh, s.exported_mwh), s.flags),
                    None => ((0, 0), Flags::INCOMPLETE),
                };
                match role {
                    MeterRole::Grid => {
                        grid_imp += e.0;
                        grid_exp += e.1;
                        grid_f = grid_f.merge(f);
                    }
                    MeterRole::Production => {
                        prod += e.1;
                        prod_f = prod_f.merge(f);
                    }
                    MeterRole::Consumption => {
                        cons += e.0;
                        cons_f = cons_f.merge(f);
                    }
                    MeterRole::Storage => {
                        charged += e.0;
                        discharged += e.1;
                        stor_f = stor_f.merge(f);
                    }
                }
            }
            if has_grid {
                p.withdrawal_mwh += grid_imp;
                p.injection_mwh += grid_exp;
                p.flags = p.flags.merge(grid_f);
            } else {
                let (w, i) = netted_exchange(cons, prod, charged, discharged);
                p.withdrawal_mwh += w;
                p.injection_mwh += i;
                p.flags = p.flags.merge(prod_f).merge(cons_f).merge(stor_f);
            }
            if !has_cons && has_grid {
                // The POD's energy balance: what came in from the grid, the plants and the
                // battery, less what went out to the grid and into the battery, was used behind
                // the meter.
                cons = inferred_consumption(grid_imp, grid_exp, prod, charged, discharged);
                cons_f = grid_f.merge(stor_f);
                // Export the battery's discharge cannot explain comes from an unmetered plant.
                if !has_prod && grid_exp > discharged {
                    cons_f = cons_f.merge(Flags {
                        estimated: true,
                        ..Flags::NONE
                    });
                }
            }
            p.production_mwh = p.production_mwh.map(|x| x + prod);
            p.consumption_mwh = p.consumption_mwh.map(|x| x + cons);
            p.prod_cons_flags = p.prod_cons_flags.merge(prod_f).merge(cons_f);
        }
        out.push(p);
    }
    Ok(out)
}

/// One member POD over the balance range.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSeries {
    pub pod: String,
    pub member: String,
    /// The primary substation (*cabina primaria*) the POD belongs to.
    pub substation: String,
    /// The POD hosts an eligible plant: its injection counts toward shared energy.
    pub eligible_injection: bool,
    pub periods: Vec<PodPeriod>,
}

/// A primary substation in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubstationPeriod {
    pub substation: String,
    pub start: DateTime<Utc>,
    /// Injection of every member POD.
    pub injection_mwh: u64,
    /// Injection of the PODs hosting eligible plants: what shared energy can come from.
    pub eligible_injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_mwh: u64,
    /// Σ over PODs that have production meters.
    pub production_mwh: u64,
    /// Σ over PODs with consumption meters or a grid meter (inferred, see the module doc).
    pub consumption_mwh: u64,
    pub flags: Flags,
}

/// The whole community in one period: substations summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommunityPeriod {
    pub start: DateTime<Utc>,
    pub injection_mwh: u64,
    pub eligible_injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_mwh: u64,
    pub production_mwh: u64,
    pub consumption_mwh: u64,
    pub flags: Flags,
}

/// One POD in one period, with its part of its substation's shared energy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodShare {
    pub pod: String,
    pub member: String,
    pub substation: String,
    pub start: DateTime<Utc>,
    pub injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub eligible_injection: bool,
    /// Its part of the shared energy, pro rata of withdrawal.
    pub shared_as_consumer_mwh: u64,
    /// Its part of the shared energy, pro rata of eligible injection (0 if not eligible).
    pub shared_as_producer_mwh: u64,
    pub flags: Flags,
}

/// A member's contributions summed over its PODs and the balance range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberTotals {
    pub member: String,
    pub injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_as_consumer_mwh: u64,
    pub shared_as_producer_mwh: u64,
}

/// Everything [`community_balance`] computes; vectors are sorted by (start, substation, pod).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Balance {
    pub substations: Vec<SubstationPeriod>,
    pub community: Vec<CommunityPeriod>,
    pub pods: Vec<PodShare>,
}

impl Balance {
    /// Contributions per member over the whole balance, sorted by member id.
    pub fn member_totals(&self) -> Vec<MemberTotals> {
        let mut m: BTreeMap<&str, MemberTotals> = BTreeMap::new();
        for p in &self.pods {
            let t = m.entry(&p.member).or_insert_with(|| MemberTotals {
                member: p.member.clone(),
                injection_mwh: 0,
                withdrawal_mwh: 0,
                shared_as_consumer_mwh: 0,
                shared_as_producer_mwh: 0,
            });
            t.injection_mwh += p.injection_mwh;
            t.withdrawal_mwh += p.withdrawal_mwh;
            t.shared_as_consumer_mwh += p.shared_as_consumer_mwh;
            t.shared_as_producer_mwh += p.shared_as_producer_mwh;
        }
        m.into_values().collect()
    }
}

/// Shared energy per substation and period, community totals and per-POD contributions. A POD
/// without an entry for a period that other PODs have counts as zero there and makes that
/// substation period `incomplete`.
pub fn community_balance(pods: &[PodSeries]) -> Balance {
    let starts: BTreeSet<DateTime<Utc>> = pods
        .iter()
        .flat_map(|p| p.periods.iter().map(|x| x.start))
        .collect();
    let substations: BTreeSet<&str> = pods.iter().map(|p| p.substation.as_str()).collect();
    let indexed: Vec<BTreeMap<DateTime<Utc>, &PodPeriod>> = pods
        .iter()
        .map(|p| p.periods.iter().map(|x| (x.start, x)).collect())
        .collect();
    let mut out = Balance::default();
    for &start in &starts {
        let mut c = CommunityPeriod {
            start,
            injection_mwh: 0,
            eligible_injection_mwh: 0,
            withdrawal_mwh: 0,
            shared_mwh: 0,
            production_mwh: 0,
            consumption_mwh: 0,
            flags: Flags::NONE,
        };
        for &sub in &substations {
            let members: Vec<usize> = (0..pods.len())
                .filter(|&i| pods[i].substation == sub)
                .collect();
            let mut s = SubstationPeriod {
                substation: sub.to_string(),
                start,
                injection_mwh: 0,
                eligible_injection_mwh: 0,
                withdrawal_mwh: 0,
                shared_mwh: 0,
                production_mwh: 0,
                consumption_mwh: 0,
                flags: Flags::NONE,
            };
            let mut rows: Vec<PodShare> = Vec::with_capacity(members.len());
            for &i in &members {
                let pod = &pods[i];
                let (inj, wd, flags) = match indexed[i].get(&start) {
                    Some(p) => {
                        s.production_mwh += p.production_mwh.unwrap_or(0);
                        s.consumption_mwh += p.consumption_mwh.unwrap_or(0);
                        (p.injection_mwh, p.withdrawal_mwh, p.flags)
                    }
                    None => (0, 0, Flags::INCOMPLETE),
                };
                s.injection_mwh += inj;
                if pod.eligible_injection {
                    s.eligible_injection_mwh += inj;
                }
                s.withdrawal_mwh += wd;
                s.flags = s.flags.merge(flags);
                rows.push(PodShare {
                    pod: pod.pod.clone(),
                    member: pod.member.clone(),
                    substation: sub.to_string(),
                    start,
                    injection_mwh: inj,
                    withdrawal_mwh: wd,
                    eligible_injection: pod.eligible_injection,
                    shared_as_consumer_mwh: 0,
                    shared_as_producer_mwh: 0,
                    flags,
                });
            }
            s.shared_mwh = s.eligible_injection_mwh.min(s.withdrawal_mwh);
            let wd: Vec<u64> = rows.iter().map(|r| r.withdrawal_mwh).collect();
            let inj: Vec<u64> = rows
                .iter()
                .map(|r| {
                    if r.eligible_injection {
                        r.injection_mwh
                    } else {
                        0
                    }
                })
                .collect();
            for (r, (a, b)) in rows.iter_mut().zip(
                apportion(s.shared_mwh, &wd)
                    .into_iter()
                    .zip(apportion(s.shared_mwh, &inj)),
            ) {
                r.shared_as_consumer_mwh = a;
                r.shared_as_producer_mwh = b;
            }
            rows.sort_by(|a, b| a.pod.cmp(&b.pod));
            out.pods.extend(rows);
            c.injection_mwh += s.injection_mwh;
            c.eligible_injection_mwh += s.eligible_injection_mwh;
            c.withdrawal_mwh += s.withdrawal_mwh;
            c.shared_mwh += s.shared_mwh;
            c.production_mwh += s.production_mwh;
            c.consumption_mwh += s.consumption_mwh;
            c.flags = c.flags.merge(s.flags);
            out.substations.push(s);
        }
        out.community.push(c);
    }
    out
}

/// Split `total` pro rata of `weights` into whole units that add up exactly to `total`: each
/// gets the floor of its exact share, and the units left over go one each to the largest
/// remainders (ties to the earlier index). All zero weights give all zeros (nothing to split on).
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let num = u128::from(total) * u128::from(w);
            // num / sum ≤ total, so it fits in u64.
            ((num / sum) as u64, num % sum)
        })
        .collect();
    let mut out: Vec<u64> = exact.iter().map(|e| e.0).collect();
    let left = total - out.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    // `left` < number of weights, since each floor lost less than one unit.
    for &i in order.iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 3, h, m, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn steps(start: DateTime<Utc>, step: Period, imp_exp: &[(u64, u64)]) -> Vec<PeriodEnergy> {
        imp_exp
            .iter()
            .enumerate()
            .map(|(k, &(i, e))| PeriodEnergy {
                start: start + step.duration() * k as i32,
                imported_mwh: i,
                exported_mwh: e,
                flags: Flags::NONE,
            })
            .collect()
    }

    #[test]
    fn grid_meter_gives_withdrawal_and_injection_directly() {
        let m = [MeterSteps {
            role: MeterRole::Grid,
            steps: steps(at(10, 0), Period::HOUR, &[(500, 200), (0, 900)]),
        }];
        let p = pod_periods(
            &m,
            Range::new(at(10, 0), at(12, 0)),
            Period::HOUR,
            Period::HOUR,
        )
        .unwrap_or_default();
        assert_eq!((p[0].withdrawal_mwh, p[0].injection_mwh), (500, 200));
        assert_eq!((p[1].withdrawal_mwh, p[1].injection_mwh), (0, 900));
        // No production meter: production unknown; consumption inferred from the exchange.
        // Hour 1: 500 in, 200 out → 300 used, but 200 went out with no plant metered: estimated.
        assert_eq!(
            (p[0].production_mwh, p[0].consumption_mwh),
            (None, Some(300))
        );
        assert!(p[0].prod_cons_flags.estimated);
        // Hour 2: nothing in, 900 out → 0 used (never negative).
        assert_eq!(p[1].consumption_mwh, Some(0));
    }

    #[test]
    fn grid_and_production_meters_give_consumption_from_the_pod_balance() {
        // Hour 1: grid import 400, export 100, PV produced 700 → loads used 400 − 100 + 700 = 1000.
        // Hour 2: grid import 300, export 0, PV 0 → 300, and nothing is estimated.
        let m = [
            MeterSteps {
                role: MeterRole::Grid,
                steps: steps(at(10, 0), Period::HOUR, &[(400, 100), (300, 0)]),
            },
            MeterSteps {
                role: MeterRole::Production,
                steps: steps(at(10, 0), Period::HOUR, &[(0, 700), (0, 0)]),
            },
        ];
        let p = pod_periods(
            &m,
            Range::new(at(10, 0), at(12, 0)),
            Period::HOUR,
            Period::HOUR,
        )
        .unwrap_or_default();
        assert_eq!(
            (p[0].production_mwh, p[0].consumption_mwh),
            (Some(700), Some(1000))
        );
        assert_eq!(p[1].consumption_mwh, Some(300));
        assert!(!p[0].prod_cons_flags.any() && !p[1].prod_cons_flags.any());
    }

    #[test]
    fn without_grid_meter_nets_per_step_not_per_period() {
        // Four 15-min steps: production 0, 100, 300, 0; consumption 200, 100, 100, 50.
        // Per step: withdrawal 200, 0, 0, 50 = 250; injection 0, 0, 200, 0 = 200.
        // (Netting the hour as a whole would give withdrawal 50, injection 0: wrong.)
        let q = Period::QUARTER_HOUR;
        let m = [
            MeterSteps {
                role: MeterRole::Production,
                steps: steps(at(10, 0), q, &[(0, 0), (0, 100), (0, 300), (0, 0)]),
            },
            MeterSteps {
                role: MeterRole::Consumption,
                steps: steps(at(10, 0), q, &[(200, 0), (100, 0), (100, 0), (50, 0)]),
            },
        ];
        let p =
            pod_periods(&m, Range::new(at(10, 0), at(11, 0)), q, Period::HOUR).unwrap_or_default();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].withdrawal_mwh, p[0].injection_mwh), (250, 200));
        assert_eq!(
            (p[0].production_mwh, p[0].consumption_mwh),
            (Some(400), Some(450))
        );
    }

    #[test]
    fn a_missing_step_marks_the_period_incomplete() {
        let mut s = steps(
            at(10, 0),
            Period::QUARTER_HOUR,
            &[(1, 0), (1, 0), (1, 0), (1, 0)],
        );
        s.remove(2);
        let m = [MeterSteps {
            role: MeterRole::Grid,
            steps: s,
        }];
        let p = pod_periods(
            &m,
            Range::new(at(10, 0), at(11, 0)),
            Period::QUARTER_HOUR,
            Period::HOUR,
        )
        .unwrap_or_default();
        assert_eq!(p[0].withdrawal_mwh, 3);
        assert!(p[0].flags.incomplete);
    }

    #[test]
    fn a_battery_behind_the_grid_meter_is_neither_production_nor_consumption() {
        // By hand, one hour: the grid meter imports 1200 and exports 300 mWh, the PV produces
        // 2500, the battery stores 900 and gives back 400. What came into the building:
        // 1200 + 2500 + 400 = 4100; what left it other than into the loads: 300 + 900 = 1200;
        // so the loads used 2900. Without the battery rule the old balance would say 3400.
        let m = [
            MeterSteps {
                role: MeterRole::Grid,
                steps: steps(at(10, 0), Period::HOUR, &[(1200, 300)]),
            },
            MeterSteps {
                role: MeterRole::Production,
                steps: steps(at(10, 0), Period::HOUR, &[(0, 2500)]),
            },
            MeterSteps {
                role: MeterRole::Storage,
                steps: steps(at(10, 0), Period::HOUR, &[(900, 400)]),
            },
        ];
        let p = pod_periods(
            &m,
            Range::new(at(10, 0), at(11, 0)),
            Period::HOUR,
            Period::HOUR,
        )
        .unwrap_or_default();
        assert_eq!((p[0].withdrawal_mwh, p[0].injection_mwh), (1200, 300));
        assert_eq!(
            p[0].production_mwh,
            Some(2500),
            "the discharge is not production"
        );
        assert_eq!(p[0].consumption_mwh, Some(2900));
        assert!(!p[0].prod_cons_flags.estimated);
        assert_eq!(inferred_consumption(1200, 300, 2500, 900, 400), 2900);
    }

    #[test]
    fn a_battery_leaves_metered_consumption_alone_and_explains_a_grid_only_export() {
        // Consumption metered: the battery changes nothing of production or consumption.
        let with_cons = [
            MeterSteps {
                role: MeterRole::Grid,
                steps: steps(at(10, 0), Period::HOUR, &[(100, 600)]),
            },
            MeterSteps {
                role: MeterRole::Consumption,
                steps: steps(at(10, 0), Period::HOUR, &[(700, 0)]),
            },
            MeterSteps {
                role: MeterRole::Storage,
                steps: steps(at(10, 0), Period::HOUR, &[(0, 1200)]),
            },
        ];
        let r = Range::new(at(10, 0), at(11, 0));
        let p = pod_periods(&with_cons, r, Period::HOUR, Period::HOUR).unwrap_or_default();
        assert_eq!(
            (p[0].production_mwh, p[0].consumption_mwh),
            (None, Some(700))
        );
        // Grid and battery only: the export is the battery's discharge, not an unmetered plant.
        // 50 in + 800 discharged − 600 out − 0 charged = 250 used.
        let grid_bat = [
            MeterSteps {
                role: MeterRole::Grid,
                steps: steps(at(10, 0), Period::HOUR, &[(50, 600)]),
            },
            MeterSteps {
                role: MeterRole::Storage,
                steps: steps(at(10, 0), Period::HOUR, &[(0, 800)]),
            },
        ];
        let p = pod_periods(&grid_bat, r, Period::HOUR, Period::HOUR).unwrap_or_default();
        assert_eq!(p[0].consumption_mwh, Some(250));
        assert!(!p[0].prod_cons_flags.estimated);
    }

    #[test]
    fn a_battery_without_a_grid_meter_nets_with_loads_and_plants_per_step() {
        // Minute 1: loads 1000, PV 3000, charging 1500 → 500 injected.
        // Minute 2: loads 800, no PV, discharging 600 → 200 withdrawn.
        let m = [
            MeterSteps {
                role: MeterRole::Production,
                steps: steps(at(10, 0), Period::MINUTE, &[(0, 3000), (0, 0)]),
            },
            MeterSteps {
                role: MeterRole::Consumption,
                steps: steps(at(10, 0), Period::MINUTE, &[(1000, 0), (800, 0)]),
            },
            MeterSteps {
                role: MeterRole::Storage,
                steps: steps(at(10, 0), Period::MINUTE, &[(1500, 0), (0, 600)]),
            },
        ];
        let two = Period::from_secs(120).unwrap_or(Period::HOUR);
        let p = pod_periods(&m, Range::new(at(10, 0), at(10, 2)), Period::MINUTE, two)
            .unwrap_or_default();
        assert_eq!((p[0].withdrawal_mwh, p[0].injection_mwh), (200, 500));
        assert_eq!(
            (p[0].production_mwh, p[0].consumption_mwh),
            (Some(3000), Some(1800))
        );
        assert_eq!(netted_exchange(1000, 3000, 1500, 0), (0, 500));
        assert_eq!(netted_exchange(800, 0, 0, 600), (200, 0));
    }

    #[test]
    fn step_must_divide_the_period_and_a_pod_needs_meters() {
        let r = Range::new(at(10, 0), at(11, 0));
        let forty = Period::from_secs(40 * 60).unwrap_or(Period::HOUR);
        assert!(matches!(
            pod_periods(&[], r, forty, Period::HOUR),
            Err(BalanceError::Energy(_))
        ));
        assert_eq!(
            pod_periods(&[], r, Period::HOUR, Period::HOUR),
            Err(BalanceError::NoMeters)
        );
    }

    fn pod(id: &str, member: &str, sub: &str, eligible: bool, inj: u64, wd: u64) -> PodSeries {
        PodSeries {
            pod: id.into(),
            member: member.into(),
            substation: sub.into(),
            eligible_injection: eligible,
            periods: vec![PodPeriod {
                start: at(12, 0),
                injection_mwh: inj,
                withdrawal_mwh: wd,
                production_mwh: None,
                consumption_mwh: None,
                flags: Flags::NONE,
                prod_cons_flags: Flags::NONE,
            }],
        }
    }

    #[test]
    fn only_eligible_injection_is_shared_and_only_within_a_substation() {
        // Substation A: eligible plant injects 1000, an old plant 5000, consumers withdraw 3000.
        // Substation B: a consumer withdraws 800, no plant: nothing shared there.
        let b = community_balance(&[
            pod("A-plant", "m1", "A", true, 1000, 0),
            pod("A-old", "m2", "A", false, 5000, 0),
            pod("A-home", "m3", "A", false, 0, 3000),
            pod("B-home", "m4", "B", false, 0, 800),
        ]);
        assert_eq!(b.substations.len(), 2);
        assert_eq!(b.substations[0].shared_mwh, 1000);
        assert_eq!(b.substations[0].injection_mwh, 6000);
        assert_eq!(b.substations[1].shared_mwh, 0);
        assert_eq!(b.community[0].shared_mwh, 1000);
        assert_eq!(b.community[0].withdrawal_mwh, 3800);
        let home = b
            .pods
            .iter()
            .find(|p| p.pod == "A-home")
            .map(|p| p.shared_as_consumer_mwh);
        assert_eq!(home, Some(1000));
        let old = b
            .pods
            .iter()
            .find(|p| p.pod == "A-old")
            .map(|p| p.shared_as_producer_mwh);
        assert_eq!(old, Some(0));
    }

    #[test]
    fn contributions_are_pro_rata_and_exact() {
        // Shared = min(900, 100+200+400) = 700: consumers 100/700, 200/700, 400/700 → 100, 200, 400.
        // Producers: two plants 300 and 600 of 900 → 233.33 and 466.67 → 233 and 467 (largest
        // remainder gets the leftover unit).
        let b = community_balance(&[
            pod("p1", "a", "S", true, 300, 0),
            pod("p2", "b", "S", true, 600, 0),
            pod("c1", "c", "S", false, 0, 100),
            pod("c2", "d", "S", false, 0, 200),
            pod("c3", "e", "S", false, 0, 400),
        ]);
        let get = |id: &str| {
            b.pods
                .iter()
                .find(|p| p.pod == id)
                .map(|p| (p.shared_as_consumer_mwh, p.shared_as_producer_mwh))
        };
        assert_eq!(get("p1"), Some((0, 233)));
        assert_eq!(get("p2"), Some((0, 467)));
        assert_eq!(get("c1"), Some((100, 0)));
        assert_eq!(get("c3"), Some((400, 0)));
    }

    #[test]
    fn a_pod_missing_a_period_makes_its_substation_incomplete() {
        let mut late = pod("late", "x", "S", false, 0, 100);
        late.periods[0].start = at(13, 0);
        let b = community_balance(&[pod("p", "y", "S", true, 50, 0), late]);
        assert_eq!(b.community.len(), 2);
        assert!(b.substations.iter().all(|s| s.flags.incomplete));
    }

    #[test]
    fn apportion_handles_ties_and_zero_weights() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(10, &[0, 0]), vec![0, 0]);
        assert_eq!(apportion(7, &[0, 5, 0]), vec![0, 7, 0]);
        assert_eq!(apportion(0, &[3, 4]), vec![0, 0]);
    }

    fn arb_pods() -> impl Strategy<Value = Vec<PodSeries>> {
        prop::collection::vec(
            (
                0u8..3,
                any::<bool>(),
                0u64..5_000_000,
                0u64..5_000_000,
                0u8..4,
            ),
            1..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (sub, elig, inj, wd, member))| {
                    let mut p = pod(
                        &format!("pod{i}"),
                        &format!("m{member}"),
                        &format!("S{sub}"),
                        elig,
                        inj,
                        wd,
                    );
                    let mut second = p.periods[0];
                    second.start = at(13, 0);
                    second.injection_mwh = wd / 3;
                    second.withdrawal_mwh = inj / 2;
                    p.periods.push(second);
                    p
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_battery_rule_recovers_the_loads_of_any_consistent_building(
            loads in 0u64..10_000_000,
            pv in 0u64..10_000_000,
            charged in 0u64..10_000_000,
            discharged in 0u64..10_000_000,
        ) {
            // The grid meter of a building sees what its loads, plants and battery leave over.
            let (w, i) = netted_exchange(loads, pv, charged, discharged);
            prop_assert!(w == 0 || i == 0);
            prop_assert_eq!(w as i128 - i as i128,
                loads as i128 + charged as i128 - pv as i128 - discharged as i128);
            prop_assert_eq!(inferred_consumption(w, i, pv, charged, discharged), loads);
        }

        #[test]
        fn apportion_sums_exactly_and_is_within_one_unit_of_pro_rata(
            total in 0u64..10_000_000_000, weights in prop::collection::vec(0u64..1_000_000_000, 1..20),
        ) {
            let out = apportion(total, &weights);
            let sum: u64 = weights.iter().sum();
            if sum == 0 {
                prop_assert!(out.iter().all(|&x| x == 0));
            } else {
                prop_assert_eq!(out.iter().sum::<u64>(), total);
                for (o, w) in out.iter().zip(&weights) {
                    let exact = total as f64 * *w as f64 / sum as f64;
                    prop_assert!((*o as f64 - exact).abs() < 1.0 + 1e-6 * exact);
                }
            }
        }

        #[test]
        fn shared_is_bounded_and_contributions_sum_to_it(pods in arb_pods()) {
            let b = community_balance(&pods);
            for s in &b.substations {
                prop_assert!(s.shared_mwh <= s.eligible_injection_mwh.min(s.withdrawal_mwh));
                prop_assert!(s.eligible_injection_mwh <= s.injection_mwh);
                let rows: Vec<&PodShare> = b.pods.iter().filter(|p| p.start == s.start && p.substation == s.substation).collect();
                prop_assert_eq!(rows.iter().map(|p| p.shared_as_consumer_mwh).sum::<u64>(), s.shared_mwh);
                prop_assert_eq!(rows.iter().map(|p| p.shared_as_producer_mwh).sum::<u64>(), s.shared_mwh);
                for p in rows {
                    prop_assert!(p.shared_as_consumer_mwh <= p.withdrawal_mwh);
                    let producer_cap = if p.eligible_injection { p.injection_mwh } else { 0 };
                    prop_assert!(p.shared_as_producer_mwh <= producer_cap);
                }
            }
            for c in &b.community {
                let subs: u64 = b.substations.iter().filter(|s| s.start == c.start).map(|s| s.shared_mwh).sum();
                prop_assert_eq!(c.shared_mwh, subs);
                prop_assert!(c.shared_mwh <= c.eligible_injection_mwh.min(c.withdrawal_mwh));
            }
            let total: u64 = b.community.iter().map(|c| c.shared_mwh).sum();
            let members = b.member_totals();
            prop_assert_eq!(members.iter().map(|m| m.shared_as_consumer_mwh).sum::<u64>(), total);
            prop_assert_eq!(members.iter().map(|m| m.shared_as_producer_mwh).sum::<u64>(), total);
        }

        #[test]
        fn netting_per_step_conserves_energy_and_never_nets_below_the_hour(
            prod in prop::collection::vec(0u64..100_000, 4), cons in prop::collection::vec(0u64..100_000, 4),
        ) {
            let q = Period::QUARTER_HOUR;
            let pe: Vec<(u64, u64)> = prod.iter().map(|&p| (0, p)).collect();
            let ce: Vec<(u64, u64)> = cons.iter().map(|&c| (c, 0)).collect();
            let m = [
                MeterSteps { role: MeterRole::Production, steps: steps(at(10, 0), q, &pe) },
                MeterSteps { role: MeterRole::Consumption, steps: steps(at(10, 0), q, &ce) },
            ];
            let p = pod_periods(&m, Range::new(at(10, 0), at(11, 0)), q, Period::HOUR)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (tp, tc): (u64, u64) = (prod.iter().sum(), cons.iter().sum());
            // Energy balance of the POD: injection − withdrawal = production − consumption.
            prop_assert_eq!(p[0].injection_mwh as i128 - p[0].withdrawal_mwh as i128, tp as i128 - tc as i128);
            // Netting per step can only exceed netting per hour.
            prop_assert!(p[0].withdrawal_mwh >= tc.saturating_sub(tp));
        }
    }
}
