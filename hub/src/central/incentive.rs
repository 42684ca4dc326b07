//! The incentive on shared energy: allotment to plants oldest first, the TIP and the ARERA
//! valorisation, the part reserved to non-business members, and the monthly report (model + CSV).
//!
//! Pure: no I/O, no clock. It must never allot a plant more than its own injection, nor more than
//! its substation's shared energy, and every money split adds up exactly to its total.
//!
//! # API (called by the central hub)
//! - [`monthly_report`]`(label, range, &Balance, &[Plant], &IncentiveParams) ->
//!   Result<MonthlyReport, IncentiveError>`: everything for one month (or any range: the label is
//!   free text); only the balance periods inside `range` count. Serialize it for the JSON report.
//! - [`report_csv`]`(&MonthlyReport) -> String`: the CSV report (columns below).
//! - [`allot`]`(&Balance, &[Plant], &IncentiveParams) -> Result<Allotment, IncentiveError>`: the
//!   per-period detail the report is built from (for `/api/v1/incentive` per hour, if wanted).
//! - [`month_range`]`(year, month, tz) -> Option<Range>`: a calendar month in local time (use
//!   `chrono_tz::Europe::Rome`) as a UTC range, for `monthly_report`.
//!
//! # Units
//! Energy in mWh (`u64`, `_mwh`), money in micro-euros (`u64`, `_ueur`), tariffs in €/MWh (f64).
//! Each plant-period incentive and each substation-period valorisation is rounded once to the µ€;
//! every split after that is exact ([`apportion`]). The CSV shows kWh with 3 decimals and euros
//! with 2 (rounded half up); the JSON model keeps the exact figures.
//!
//! # Rules (DESIGN.md "Community energy rules"; DM MASE 414/2023; ARERA TIAD)
//! - Per substation and period, the shared energy is allotted to the eligible plants of that
//!   substation **oldest commissioning date first** (ties by plant id), each at most its own
//!   injection in that period. A plant's injection is its POD's injection; plants sharing a POD
//!   split it pro rata of their power. Shared energy left over (a POD marked eligible without a
//!   plant listed here) is reported as `unallotted`, never paid. A plant on a POD the balance
//!   does not mark eligible is an error ([`IncentiveError::IneligiblePod`]).
//! - Incentive of a plant in a period = allotted × TIP(plant, Pz of that period's hour); with
//!   15-minute periods each quarter uses its hour's price.
//! - ARERA valorisation per substation and period = shared × CUAf (an input: 11.22 €/MWh for 2024).
//! - Social part (*tariffa premio eccedentaria*): the incentive on the shared energy above 55 % of
//!   the injected energy (45 % for plants with a capital grant) goes to non-business members or
//!   social purposes. The GSE computes it yearly "aggregating the incentivised plants in two
//!   sets" (tariff only: 55 %; tariff + capital grant: 45 %; GSE communiqué 2024, as quoted by
//!   consenergygroup.it). So, per set over the report range: excess = max(0, Σ allotted −
//!   t · Σ injection), social = Σ incentive × excess / Σ allotted (the set's average tariff on the
//!   excess). Each plant is shown its share: social pro rata of its incentive, excess pro rata of
//!   its allotted energy (exact splits). A monthly report gives the month's estimate; for the
//!   yearly figure call [`monthly_report`] with the year's range.
//! - Members: per substation and period, the incentive of its plants and the valorisation are
//!   split among PODs pro rata of their shared-energy contributions (as consumers, pro rata of
//!   withdrawal; as producers, pro rata of eligible injection), then summed per member. The two
//!   bases are shown side by side; how the community shares the money is its statute's choice.
//!
//! # CSV columns (English, `,` separator, `.` decimal point, one header line)
//! `record,id,substation,injection_kwh,eligible_injection_kwh,withdrawal_kwh,shared_kwh,`
//! `shared_as_consumer_kwh,shared_as_producer_kwh,incentive_eur,incentive_as_consumer_eur,`
//! `incentive_as_producer_eur,valorisation_eur,social_eur,estimated_periods,incomplete_periods,flags`
//!
//! `record` is `community` (id = the label), `substation`, `plant` (shared_kwh = allotted; flags
//! = `social_threshold=55%`/`45%`; social = its share), `social_set` (id = `55%` or `45%`;
//! shared_kwh = allotted; flags = `excess_kwh=…`), `member` (valorisation = as consumer), or
//! `period` (id = the period start in RFC 3339 UTC, flags = `estimated|counter_reset|incomplete|implausible`:
//! one row per period with any flag). Cells that do not apply are empty.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use super::balance::{apportion, Balance};
use super::energy::{Flags, Range};
use super::tariff::{tip_eur_per_mwh, PlantTariff, Prices, TariffError};

/// Errors of the incentive computation, naming the plant or hour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IncentiveError {
    #[error(transparent)]
    Tariff(#[from] TariffError),
    #[error("plant `{plant}` is on POD `{pod}`, which is not in the balance")]
    UnknownPod { plant: String, pod: String },
    #[error(
        "plant `{plant}` is on POD `{pod}`, whose injection the balance does not count as eligible"
    )]
    IneligiblePod { plant: String, pod: String },
    #[error("plant `{0}` is listed twice")]
    DuplicatePlant(String),
    #[error("plant `{plant}`: {msg}")]
    BadPlant { plant: String, msg: String },
    #[error("CUAf of {0} €/MWh is not a finite, non-negative value")]
    BadCuaf(f64),
}

/// An eligible plant of the community.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plant {
    pub id: String,
    /// The POD its energy is injected through.
    pub pod: String,
    /// Its commissioning date (*data di entrata in esercizio*): older plants are allotted first.
    pub commissioned: NaiveDate,
    pub tariff: PlantTariff,
}

/// The market inputs of a month.
#[derive(Debug, Clone, PartialEq)]
pub struct IncentiveParams {
    pub prices: Prices,
    /// ARERA unit valorisation CUAf (TRASe + BTAU), €/MWh.
    pub cuaf_eur_per_mwh: f64,
}

/// One plant in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlantPeriod {
    pub plant: String,
    pub substation: String,
    pub start: DateTime<Utc>,
    pub injection_mwh: u64,
    pub allotted_mwh: u64,
    /// The zonal price of the period's hour; `None` when missing and not needed (nothing allotted).
    pub pz_eur_per_mwh: Option<f64>,
    pub tip_eur_per_mwh: Option<f64>,
    pub incentive_ueur: u64,
    pub flags: Flags,
}

/// One substation in one period: what is paid on its shared energy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubstationMoney {
    pub substation: String,
    pub start: DateTime<Utc>,
    pub shared_mwh: u64,
    pub allotted_mwh: u64,
    pub incentive_ueur: u64,
    pub valorisation_ueur: u64,
}

/// One POD in one period: its part of the money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodMoney {
    pub pod: String,
    pub member: String,
    pub start: DateTime<Utc>,
    pub incentive_as_consumer_ueur: u64,
    pub incentive_as_producer_ueur: u64,
    pub valorisation_as_consumer_ueur: u64,
}

/// The per-period detail of the incentive.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Allotment {
    pub plants: Vec<PlantPeriod>,
    pub substations: Vec<SubstationMoney>,
    pub pods: Vec<PodMoney>,
}

/// Allot each substation period's shared energy to its plants, price it, split it among PODs.
pub fn allot(
    balance: &Balance,
    plants: &[Plant],
    params: &IncentiveParams,
) -> Result<Allotment, IncentiveError> {
    if !(params.cuaf_eur_per_mwh.is_finite() && params.cuaf_eur_per_mwh >= 0.0) {
        return Err(IncentiveError::BadCuaf(params.cuaf_eur_per_mwh));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in plants {
        if !seen.insert(p.id.as_str()) {
            return Err(IncentiveError::DuplicatePlant(p.id.clone()));
        }
        let bad = |msg: String| IncentiveError::BadPlant {
            plant: p.id.clone(),
            msg,
        };
        let t = &p.tariff;
        if !(t.power_kw.is_finite() && t.power_kw > 0.0) {
            return Err(bad(format!(
                "power {} kW is not a positive number",
                t.power_kw
            )));
        }
        if !(t.grant_share.is_finite() && (0.0..=1.0).contains(&t.grant_share)) {
            return Err(bad(format!(
                "grant share {} is not between 0 and 1",
                t.grant_share
            )));
        }
    }
    // The substation of each POD, from the balance itself.
    let pod_sub: BTreeMap<&str, &str> = balance
        .pods
        .iter()
        .map(|p| (p.pod.as_str(), p.substation.as_str()))
        .collect();
    let ineligible: std::collections::BTreeSet<&str> = balance
        .pods
        .iter()
        .filter(|x| !x.eligible_injection)
        .map(|x| x.pod.as_str())
        .collect();
    for p in plants {
        if !pod_sub.contains_key(p.pod.as_str()) {
            return Err(IncentiveError::UnknownPod {
                plant: p.id.clone(),
                pod: p.pod.clone(),
            });
        }
        // Shared energy counts only eligible injection: a plant elsewhere would be paid on
        // energy the balance never counted.
        if ineligible.contains(p.pod.as_str()) {
            return Err(IncentiveError::IneligiblePod {
                plant: p.id.clone(),
                pod: p.pod.clone(),
            });
        }
    }
    let mut order: Vec<&Plant> = plants.iter().collect();
    order.sort_by(|a, b| {
        a.commissioned
            .cmp(&b.commissioned)
            .then_with(|| a.id.cmp(&b.id))
    });

    // The PODs of each (start, substation), in balance order.
    let mut pods_at: BTreeMap<(DateTime<Utc>, &str), Vec<usize>> = BTreeMap::new();
    for (i, p) in balance.pods.iter().enumerate() {
        pods_at
            .entry((p.start, p.substation.as_str()))
            .or_default()
            .push(i);
    }

    let mut out = Allotment::default();
    for s in &balance.substations {
        let rows = pods_at
            .get(&(s.start, s.substation.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Each plant's injection: its POD's, split by power among plants on the same POD.
        let here: Vec<&Plant> = order
            .iter()
            .copied()
            .filter(|p| pod_sub.get(p.pod.as_str()) == Some(&s.substation.as_str()))
            .collect();
        let mut injection: BTreeMap<&str, u64> = BTreeMap::new();
        let mut flags_of: BTreeMap<&str, Flags> = BTreeMap::new();
        for &i in rows {
            let pod = &balance.pods[i];
            let on_pod: Vec<&Plant> = here.iter().copied().filter(|p| p.pod == pod.pod).collect();
            let weights: Vec<u64> = on_pod
                .iter()
                .map(|p| power_weight(p.tariff.power_kw))
                .collect();
            let split = if on_pod.len() == 1 {
                vec![pod.injection_mwh]
            } else {
                apportion(pod.injection_mwh, &weights)
            };
            for (p, e) in on_pod.iter().zip(split) {
                injection.insert(p.id.as_str(), e);
                flags_of.insert(p.id.as_str(), pod.flags);
            }
        }
        // A missing price only matters when there is something to pay on.
        let pz = if s.shared_mwh > 0 && !here.is_empty() {
            Some(params.prices.pz_at(s.start)?)
        } else {
            params.prices.pz_at(s.start).ok()
        };
        let mut left = s.shared_mwh;
        let mut incentive_sub = 0u64;
        for p in &here {
            let inj = injection.get(p.id.as_str()).copied().unwrap_or(0);
            let allotted = left.min(inj);
            left -= allotted;
            let tip = pz.map(|pz| tip_eur_per_mwh(&p.tariff, pz));
            let incentive_ueur = tip.map_or(0, |tip| eur_per_mwh_times(tip, allotted));
            incentive_sub += incentive_ueur;
            out.plants.push(PlantPeriod {
                plant: p.id.clone(),
                substation: s.substation.clone(),
                start: s.start,
                injection_mwh: inj,
                allotted_mwh: allotted,
                pz_eur_per_mwh: pz,
                tip_eur_per_mwh: tip,
                incentive_ueur,
                flags: flags_of
                    .get(p.id.as_str())
                    .copied()
                    .unwrap_or(Flags::INCOMPLETE),
            });
        }
        let valorisation = eur_per_mwh_times(params.cuaf_eur_per_mwh, s.shared_mwh);
        out.substations.push(SubstationMoney {
            substation: s.substation.clone(),
            start: s.start,
            shared_mwh: s.shared_mwh,
            allotted_mwh: s.shared_mwh - left,
            incentive_ueur: incentive_sub,
            valorisation_ueur: valorisation,
        });
        let cons: Vec<u64> = rows
            .iter()
            .map(|&i| balance.pods[i].shared_as_consumer_mwh)
            .collect();
        let prod: Vec<u64> = rows
            .iter()
            .map(|&i| balance.pods[i].shared_as_producer_mwh)
            .collect();
        let (ic, ip, vc) = (
            apportion(incentive_sub, &cons),
            apportion(incentive_sub, &prod),
            apportion(valorisation, &cons),
        );
        for (k, &i) in rows.iter().enumerate() {
            let pod = &balance.pods[i];
            out.pods.push(PodMoney {
                pod: pod.pod.clone(),
                member: pod.member.clone(),
                start: s.start,
                incentive_as_consumer_ueur: ic[k],
                incentive_as_producer_ueur: ip[k],
                valorisation_as_consumer_ueur: vc[k],
            });
        }
    }
    Ok(out)
}

/// Power as an integer weight (W) for splitting a shared POD's injection.
fn power_weight(power_kw: f64) -> u64 {
    if power_kw.is_finite() && power_kw > 0.0 {
        (power_kw * 1000.0).round() as u64
    } else {
        0
    }
}

/// €/MWh × mWh in µ€, rounded to the nearest µ€ (€/MWh × mWh = 1e-9 €, = 1e-3 µ€).
fn eur_per_mwh_times(eur_per_mwh: f64, mwh: u64) -> u64 {
    let v = (eur_per_mwh * mwh as f64 / 1000.0).round();
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// A calendar month in the given time zone, as a UTC range (hour-aligned for Italy).
pub fn month_range<Tz: TimeZone>(year: i32, month: u32, tz: &Tz) -> Option<Range> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let from = tz
        .from_local_datetime(&first.and_hms_opt(0, 0, 0)?)
        .single()?
        .with_timezone(&Utc);
    let to = tz
        .from_local_datetime(&next.and_hms_opt(0, 0, 0)?)
        .single()?
        .with_timezone(&Utc);
    Some(Range { from, to })
}

/// Community totals of the report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CommunityMonth {
    pub injection_mwh: u64,
    pub eligible_injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_mwh: u64,
    pub production_mwh: u64,
    pub consumption_mwh: u64,
    pub incentive_ueur: u64,
    pub valorisation_ueur: u64,
    pub social_ueur: u64,
    /// Shared energy no listed plant could take (a configuration mismatch): not paid.
    pub unallotted_mwh: u64,
    pub periods: usize,
    pub estimated_periods: usize,
    pub incomplete_periods: usize,
    pub counter_reset_periods: usize,
}

/// One substation over the report range.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SubstationMonth {
    pub substation: String,
    pub injection_mwh: u64,
    pub eligible_injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_mwh: u64,
    pub incentive_ueur: u64,
    pub valorisation_ueur: u64,
    pub estimated_periods: usize,
    pub incomplete_periods: usize,
}

/// One plant over the report range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlantMonth {
    pub plant: String,
    pub pod: String,
    pub substation: String,
    pub power_kw: f64,
    pub commissioned: NaiveDate,
    pub injection_mwh: u64,
    pub allotted_mwh: u64,
    pub incentive_ueur: u64,
    /// 55, or 45 for a plant with a capital grant: the set it is counted in.
    pub social_threshold_pct: u8,
    /// Its share of its set's allotted energy above the threshold.
    pub excess_mwh: u64,
    /// Its share of its set's social part.
    pub social_ueur: u64,
    pub estimated_periods: usize,
    pub incomplete_periods: usize,
}

/// One of the two sets of plants the social part is computed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocialSet {
    /// 55 (tariff only) or 45 (tariff and capital grant).
    pub threshold_pct: u8,
    pub plants: Vec<String>,
    pub injection_mwh: u64,
    pub allotted_mwh: u64,
    pub incentive_ueur: u64,
    /// Allotted energy above the threshold (rounded down to the mWh).
    pub excess_mwh: u64,
    pub social_ueur: u64,
}

/// One member over the report range.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MemberMonth {
    pub member: String,
    pub injection_mwh: u64,
    pub withdrawal_mwh: u64,
    pub shared_as_consumer_mwh: u64,
    pub shared_as_producer_mwh: u64,
    pub incentive_as_consumer_ueur: u64,
    pub incentive_as_producer_ueur: u64,
    pub valorisation_as_consumer_ueur: u64,
}

/// A community period with a flag: the report states which hours are uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlaggedPeriod {
    pub start: DateTime<Utc>,
    pub flags: Flags,
}

/// The monthly report: serialize for JSON, [`report_csv`] for CSV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthlyReport {
    pub label: String,
    pub range: Range,
    pub cuaf_eur_per_mwh: f64,
    pub community: CommunityMonth,
    pub substations: Vec<SubstationMonth>,
    pub plants: Vec<PlantMonth>,
    /// The 55 % set, then the 45 % set (a set without plants is left out).
    pub social_sets: Vec<SocialSet>,
    pub members: Vec<MemberMonth>,
    pub flagged_periods: Vec<FlaggedPeriod>,
}

/// The report of the balance periods inside `range`; see the module doc for the rules.
pub fn monthly_report(
    label: &str,
    range: Range,
    balance: &Balance,
    plants: &[Plant],
    params: &IncentiveParams,
) -> Result<MonthlyReport, IncentiveError> {
    let inside = |t: &DateTime<Utc>| *t >= range.from && *t < range.to;
    let b = Balance {
        substations: balance
            .substations
            .iter()
            .filter(|s| inside(&s.start))
            .cloned()
            .collect(),
        community: balance
            .community
            .iter()
            .filter(|c| inside(&c.start))
            .cloned()
            .collect(),
        pods: balance
            .pods
            .iter()
            .filter(|p| inside(&p.start))
            .cloned()
            .collect(),
    };
    let a = allot(&b, plants, params)?;

    let mut community = CommunityMonth {
        periods: b.community.len(),
        ..CommunityMonth::default()
    };
    let mut flagged = Vec::new();
    for c in &b.community {
        community.injection_mwh += c.injection_mwh;
        community.eligible_injection_mwh += c.eligible_injection_mwh;
        community.withdrawal_mwh += c.withdrawal_mwh;
        community.shared_mwh += c.shared_mwh;
        community.production_mwh += c.production_mwh;
        community.consumption_mwh += c.consumption_mwh;
        community.estimated_periods += usize::from(c.flags.estimated);
        community.incomplete_periods += usize::from(c.flags.incomplete);
        community.counter_reset_periods += usize::from(c.flags.counter_reset);
        if c.flags.any() {
            flagged.push(FlaggedPeriod {
                start: c.start,
                flags: c.flags,
            });
        }
    }

    let mut subs: BTreeMap<&str, SubstationMonth> = BTreeMap::new();
    for s in &b.substations {
        let m = subs
            .entry(&s.substation)
            .or_insert_with(|| SubstationMonth {
                substation: s.substation.clone(),
                ..Default::default()
            });
        m.injection_mwh += s.injection_mwh;
        m.eligible_injection_mwh += s.eligible_injection_mwh;
        m.withdrawal_mwh += s.withdrawal_mwh;
        m.shared_mwh += s.shared_mwh;
        m.estimated_periods += usize::from(s.flags.estimated);
        m.incomplete_periods += usize::from(s.flags.incomplete);
    }
    for s in &a.substations {
        if let Some(m) = subs.get_mut(s.substation.as_str()) {
            m.incentive_ueur += s.incentive_ueur;
            m.valorisation_ueur += s.valorisation_ueur;
        }
        community.incentive_ueur += s.incentive_ueur;
        community.valorisation_ueur += s.valorisation_ueur;
        community.unallotted_mwh += s.shared_mwh - s.allotted_mwh;
    }

    let mut plant_rows = Vec::with_capacity(plants.len());
    for p in plants {
        let periods: Vec<&PlantPeriod> = a.plants.iter().filter(|x| x.plant == p.id).collect();
        let injection_mwh: u64 = periods.iter().map(|x| x.injection_mwh).sum();
        let allotted_mwh: u64 = periods.iter().map(|x| x.allotted_mwh).sum();
        let incentive_ueur: u64 = periods.iter().map(|x| x.incentive_ueur).sum();
        let pct: u8 = if p.tariff.grant_share > 0.0 { 45 } else { 55 };
        plant_rows.push(PlantMonth {
            plant: p.id.clone(),
            pod: p.pod.clone(),
            substation: periods
                .first()
                .map(|x| x.substation.clone())
                .unwrap_or_default(),
            power_kw: p.tariff.power_kw,
            commissioned: p.commissioned,
            injection_mwh,
            allotted_mwh,
            incentive_ueur,
            social_threshold_pct: pct,
            excess_mwh: 0,
            social_ueur: 0,
            estimated_periods: periods.iter().filter(|x| x.flags.estimated).count(),
            incomplete_periods: periods.iter().filter(|x| x.flags.incomplete).count(),
        });
    }
    let mut social_sets = Vec::new();
    for pct in [55u8, 45] {
        let idx: Vec<usize> = (0..plant_rows.len())
            .filter(|&i| plant_rows[i].social_threshold_pct == pct)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let sum = |f: fn(&PlantMonth) -> u64| idx.iter().map(|&i| f(&plant_rows[i])).sum::<u64>();
        let (injection_mwh, allotted_mwh, incentive_ueur) = (
            sum(|p| p.injection_mwh),
            sum(|p| p.allotted_mwh),
            sum(|p| p.incentive_ueur),
        );
        let (excess_mwh, social_ueur) =
            social_part(allotted_mwh, injection_mwh, incentive_ueur, pct);
        let by_incentive: Vec<u64> = idx.iter().map(|&i| plant_rows[i].incentive_ueur).collect();
        let by_allotted: Vec<u64> = idx.iter().map(|&i| plant_rows[i].allotted_mwh).collect();
        let shares = apportion(social_ueur, &by_incentive);
        let excess = apportion(excess_mwh, &by_allotted);
        for (k, &i) in idx.iter().enumerate() {
            plant_rows[i].social_ueur = shares[k];
            plant_rows[i].excess_mwh = excess[k];
        }
        community.social_ueur += social_ueur;
        social_sets.push(SocialSet {
            threshold_pct: pct,
            plants: idx.iter().map(|&i| plant_rows[i].plant.clone()).collect(),
            injection_mwh,
            allotted_mwh,
            incentive_ueur,
            excess_mwh,
            social_ueur,
        });
    }
    plant_rows.sort_by(|x, y| {
        x.commissioned
            .cmp(&y.commissioned)
            .then_with(|| x.plant.cmp(&y.plant))
    });

    let mut members: BTreeMap<String, MemberMonth> = b
        .member_totals()
        .into_iter()
        .map(|t| {
            let m = MemberMonth {
                member: t.member.clone(),
                injection_mwh: t.injection_mwh,
                withdrawal_mwh: t.withdrawal_mwh,
                shared_as_consumer_mwh: t.shared_as_consumer_mwh,
                shared_as_producer_mwh: t.shared_as_producer_mwh,
                ..Default::default()
            };
            (t.member, m)
        })
        .collect();
    for pm in &a.pods {
        if let Some(m) = members.get_mut(&pm.member) {
            m.incentive_as_consumer_ueur += pm.incentive_as_consumer_ueur;
            m.incentive_as_producer_ueur += pm.incentive_as_producer_ueur;
            m.valorisation_as_consumer_ueur += pm.valorisation_as_consumer_ueur;
        }
    }

    Ok(MonthlyReport {
        label: label.to_string(),
        range,
        cuaf_eur_per_mwh: params.cuaf_eur_per_mwh,
        community,
        substations: subs.into_values().collect(),
        plants: plant_rows,
        social_sets,
        members: members.into_values().collect(),
        flagged_periods: flagged,
    })
}

/// The excess over `pct` % of the injection and the incentive on it:
/// excess = max(0, allotted − pct/100 · injection); social = incentive × excess / allotted.
pub fn social_part(
    allotted_mwh: u64,
    injection_mwh: u64,
    incentive_ueur: u64,
    pct: u8,
) -> (u64, u64) {
    let num = (100 * u128::from(allotted_mwh))
        .saturating_sub(u128::from(pct) * u128::from(injection_mwh));
    if num == 0 || allotted_mwh == 0 {
        return (0, 0);
    }
    let den = 100 * u128::from(allotted_mwh);
    let excess = (num / 100) as u64;
    // Rounded half up; num ≤ den, so the result ≤ incentive.
    let social = ((u128::from(incentive_ueur) * num * 2 + den) / (2 * den)) as u64;
    (excess, social)
}

/// The CSV report; see the module doc for the columns.
pub fn report_csv(r: &MonthlyReport) -> String {
    let mut out = String::from(
        "record,id,substation,injection_kwh,eligible_injection_kwh,withdrawal_kwh,shared_kwh,\
         shared_as_consumer_kwh,shared_as_producer_kwh,incentive_eur,incentive_as_consumer_eur,\
         incentive_as_producer_eur,valorisation_eur,social_eur,estimated_periods,incomplete_periods,flags\n",
    );
    let c = &r.community;
    let row = |out: &mut String, cells: [String; 17]| {
        let line: Vec<String> = cells.iter().map(|s| csv_cell(s)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    };
    let e = String::new;
    row(
        &mut out,
        [
            "community".into(),
            r.label.clone(),
            e(),
            kwh(c.injection_mwh),
            kwh(c.eligible_injection_mwh),
            kwh(c.withdrawal_mwh),
            kwh(c.shared_mwh),
            e(),
            e(),
            eur(c.incentive_ueur),
            e(),
            e(),
            eur(c.valorisation_ueur),
            eur(c.social_ueur),
            c.estimated_periods.to_string(),
            c.incomplete_periods.to_string(),
            if c.unallotted_mwh > 0 {
                format!("unallotted_kwh={}", kwh(c.unallotted_mwh))
            } else {
                e()
            },
        ],
    );
    for s in &r.substations {
        row(
            &mut out,
            [
                "substation".into(),
                s.substation.clone(),
                s.substation.clone(),
                kwh(s.injection_mwh),
                kwh(s.eligible_injection_mwh),
                kwh(s.withdrawal_mwh),
                kwh(s.shared_mwh),
                e(),
                e(),
                eur(s.incentive_ueur),
                e(),
                e(),
                eur(s.valorisation_ueur),
                e(),
                s.estimated_periods.to_string(),
                s.incomplete_periods.to_string(),
                e(),
            ],
        );
    }
    for p in &r.plants {
        row(
            &mut out,
            [
                "plant".into(),
                p.plant.clone(),
                p.substation.clone(),
                kwh(p.injection_mwh),
                kwh(p.injection_mwh),
                e(),
                kwh(p.allotted_mwh),
                e(),
                e(),
                eur(p.incentive_ueur),
                e(),
                e(),
                e(),
                eur(p.social_ueur),
                p.estimated_periods.to_string(),
                p.incomplete_periods.to_string(),
                format!("social_threshold={}%", p.social_threshold_pct),
            ],
        );
    }
    for g in &r.social_sets {
        row(
            &mut out,
            [
                "social_set".into(),
                format!("{}%", g.threshold_pct),
                e(),
                kwh(g.injection_mwh),
                kwh(g.injection_mwh),
                e(),
                kwh(g.allotted_mwh),
                e(),
                e(),
                eur(g.incentive_ueur),
                e(),
                e(),
                e(),
                eur(g.social_ueur),
                e(),
                e(),
                format!("excess_kwh={}", kwh(g.excess_mwh)),
            ],
        );
    }
    for m in &r.members {
        row(
            &mut out,
            [
                "member".into(),
                m.member.clone(),
                e(),
                kwh(m.injection_mwh),
                e(),
                kwh(m.withdrawal_mwh),
                e(),
                kwh(m.shared_as_consumer_mwh),
                kwh(m.shared_as_producer_mwh),
                e(),
                eur(m.incentive_as_consumer_ueur),
                eur(m.incentive_as_producer_ueur),
                eur(m.valorisation_as_consumer_ueur),
                e(),
                e(),
                e(),
                e(),
            ],
        );
    }
    for f in &r.flagged_periods {
        let mut cells: [String; 17] = Default::default();
        cells[0] = "period".into();
        cells[1] = f.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        cells[16] = f.flags.label();
        row(&mut out, cells);
    }
    out
}

/// mWh as kWh with 3 decimals, rounded half up.
fn kwh(mwh: u64) -> String {
    let wh = (mwh + 500) / 1000;
    format!("{}.{:03}", wh / 1000, wh % 1000)
}

/// µ€ as € with 2 decimals, rounded half up.
fn eur(ueur: u64) -> String {
    let cents = (ueur + 5_000) / 10_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Quote a cell when it holds a separator, a quote or a line break (RFC 4180).
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::central::balance::{community_balance, PodPeriod, PodSeries};
    use crate::central::tariff::{Region, Technology};

    fn one_pod(eligible: bool) -> Balance {
        let start = Utc
            .with_ymd_and_hms(2024, 6, 3, 10, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        community_balance(&[PodSeries {
            pod: "P".into(),
            member: "m".into(),
            substation: "S".into(),
            eligible_injection: eligible,
            periods: vec![PodPeriod {
                start,
                injection_mwh: 1000,
                withdrawal_mwh: 500,
                production_mwh: None,
                consumption_mwh: None,
                flags: Flags::NONE,
                prod_cons_flags: Flags::NONE,
            }],
        }])
    }

    fn plant(id: &str, pod: &str) -> Plant {
        Plant {
            id: id.into(),
            pod: pod.into(),
            commissioned: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
            tariff: PlantTariff {
                power_kw: 10.0,
                technology: Technology::Photovoltaic,
                region: Region::North,
                grant_share: 0.0,
            },
        }
    }

    #[test]
    fn plants_that_do_not_match_the_balance_are_refused() {
        let params = IncentiveParams {
            prices: Prices::Constant(100.0),
            cuaf_eur_per_mwh: 11.22,
        };
        assert_eq!(
            allot(&one_pod(false), &[plant("x", "P")], &params),
            Err(IncentiveError::IneligiblePod {
                plant: "x".into(),
                pod: "P".into()
            })
        );
        assert_eq!(
            allot(&one_pod(true), &[plant("x", "Q")], &params),
            Err(IncentiveError::UnknownPod {
                plant: "x".into(),
                pod: "Q".into()
            })
        );
        assert_eq!(
            allot(&one_pod(true), &[plant("x", "P"), plant("x", "P")], &params),
            Err(IncentiveError::DuplicatePlant("x".into()))
        );
        let mut nan_grant = plant("x", "P");
        nan_grant.tariff.grant_share = f64::NAN;
        assert!(matches!(
            allot(&one_pod(true), &[nan_grant], &params),
            Err(IncentiveError::BadPlant { .. })
        ));
        let nan_cuaf = IncentiveParams {
            cuaf_eur_per_mwh: f64::NAN,
            ..params.clone()
        };
        assert!(matches!(
            allot(&one_pod(true), &[plant("x", "P")], &nan_cuaf),
            Err(IncentiveError::BadCuaf(_))
        ));
    }

    #[test]
    fn plants_sharing_a_pod_split_its_injection_by_power_and_the_oldest_is_served_first() {
        // POD injects 1000 mWh, withdraws 500: shared 500. Plants 10 kW (2024) and 30 kW (2023):
        // injection 250 / 750; the 2023 plant gets min(500, 750) = 500, the other 0.
        let mut old = plant("old", "P");
        old.tariff.power_kw = 30.0;
        old.commissioned = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap_or_default();
        let params = IncentiveParams {
            prices: Prices::Constant(100.0),
            cuaf_eur_per_mwh: 11.22,
        };
        let a = allot(&one_pod(true), &[plant("new", "P"), old], &params).unwrap_or_default();
        let got: Vec<(&str, u64, u64)> = a
            .plants
            .iter()
            .map(|p| (p.plant.as_str(), p.injection_mwh, p.allotted_mwh))
            .collect();
        assert_eq!(got, vec![("old", 750, 500), ("new", 250, 0)]);
    }

    #[test]
    fn social_part_is_the_incentive_on_the_excess_over_the_threshold() {
        // Injected 1000, allotted 700: 55 % threshold = 550, excess 150 → 150/700 of 7000 µ€ = 1500.
        assert_eq!(social_part(700, 1000, 7000, 55), (150, 1500));
        // With a grant, threshold 45 % = 450, excess 250 → 2500.
        assert_eq!(social_part(700, 1000, 7000, 45), (250, 2500));
        // Under the threshold: nothing.
        assert_eq!(social_part(500, 1000, 5000, 55), (0, 0));
        assert_eq!(social_part(0, 0, 0, 55), (0, 0));
    }

    #[test]
    fn csv_numbers_round_half_up() {
        assert_eq!(kwh(1_234_567), "1.235");
        assert_eq!(kwh(499), "0.000");
        assert_eq!(kwh(500), "0.001");
        assert_eq!(eur(1_234_567), "1.23");
        assert_eq!(eur(1_235_000), "1.24");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn money_is_tariff_times_energy_in_micro_euros() {
        // 130 €/MWh × 1 kWh (1e6 mWh) = 0.13 € = 130 000 µ€.
        assert_eq!(eur_per_mwh_times(130.0, 1_000_000), 130_000);
        assert_eq!(eur_per_mwh_times(11.22, 1_000_000), 11_220);
        assert_eq!(eur_per_mwh_times(-5.0, 1_000), 0);
    }

    #[test]
    fn month_range_follows_italian_local_time() {
        let r = month_range(2024, 3, &chrono_tz::Europe::Rome);
        let utc = |d: u32, h: u32| {
            Utc.with_ymd_and_hms(2024, d / 100, d % 100, h, 0, 0)
                .single()
        };
        // March 2024 starts at 00:00 CET (23:00 UTC on 29 Feb) and ends at 00:00 CEST on 1 April
        // (22:00 UTC on 31 March).
        assert_eq!(r.map(|r| Some(r.from)), Some(utc(229, 23)));
        assert_eq!(r.map(|r| Some(r.to)), Some(utc(331, 22)));
        assert!(month_range(2024, 13, &chrono_tz::Europe::Rome).is_none());
        let december = month_range(2024, 12, &Utc);
        assert_eq!(
            december.map(|r| Some(r.to)),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single())
        );
    }
}
