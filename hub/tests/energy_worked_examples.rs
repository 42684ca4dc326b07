//! Worked examples of the community energy rules, computed by hand in the comments, and property
//! tests of the incentive allotment. Everything here goes through the public API the central hub
//! uses: counters → energy per meter → POD balance → community balance → incentive → report.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;

use socer::central::balance::{
    community_balance, pod_periods, Balance, MeterRole, MeterSteps, PodPeriod, PodSeries,
};
use socer::central::energy::{
    affected_range, meter_periods, meter_periods_with, CounterSample, EnergyOptions, Flags,
    Handover, MeterData, Period, Range, Replacement,
};
use socer::central::incentive::{
    allot, monthly_report, report_csv, IncentiveParams, MonthlyReport, Plant,
};
use socer::central::tariff::{PlantTariff, Prices, Region, Technology};

// ---------------------------------------------------------------------------------------------
// The scenario: 2024-06-03, hours 10:00, 11:00 and 12:00 UTC (12–15 local), two primary
// substations, readings every 15 minutes (so a gap is anything over 30 minutes).
//
// CP-SONDRIO
//   A  tessuti-pv   POD IT001E-A, grid meter. PV 150 kW, Lombardia, commissioned 2023-03-01, no
//                   grant. Exports 10 kWh per quarter in h10 (40), 15 in h11 (60), 12.5 in h12 (50).
//                   The readings of 12:15 and 12:30 are missing: 12:00→12:45 is a 45-min gap.
//   B  stps-pv      POD IT001E-B, grid meter. PV 400 kW, Lombardia, commissioned 2024-02-01, 20 %
//                   capital grant. Exports 25/q (100), 30/q (120), 20/q (80).
//   C  condominio   POD IT001E-C, grid meter, imports 17.5/q (70), 22.5/q (90), 50/q (200). The
//                   meter is replaced between 11:15 and 11:30: the counter goes 5 092.5 kWh →
//                   12.5 kWh. The rule counts 12.5 kWh for that quarter (not 22.5): h11 = 80 kWh.
//   D  rossi        POD IT001E-D, no grid meter: an old (not eligible) PV production meter and a
//                   consumption meter, netted per quarter:
//                     h10 prod 2,2,2,2  cons 1,1,5,5         → inj 1+1 = 2,     wd 3+3 = 6
//                     h11 prod 3,3,3,3  cons .5,.5,.5,.5     → inj 4×2.5 = 10,  wd 0
//                     h12 prod 1,1,1,1  cons 4,4,4,4         → inj 0,           wd 4×3 = 12
// CP-CASTIONE
//   G  comune-pv    POD IT001E-G, grid meter. PV 60 kW, Lombardia, commissioned 2024-05-01, no
//                   grant. Exports 7.5/q (30 per hour).
//   E  municipio    POD IT001E-E (member `comune` too), grid meter, imports 5/q (20), 12.5/q (50),
//                   2.5/q (10). The late site: at first only its readings up to 11:00 arrived.
//
// Zonal price Pz (NORD): h10 100, h11 150, h12 50 €/MWh. CUAf 11.22 €/MWh.
// ---------------------------------------------------------------------------------------------

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 3, h, m, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn range() -> Range {
    Range::new(at(10, 0), at(13, 0))
}

fn opts() -> EnergyOptions {
    EnergyOptions::for_interval(Duration::minutes(15))
}

/// Samples at 10:00, 10:15, … from per-quarter increments (kWh), starting at the given counters
/// (kWh); quarters listed in `skip` have no reading at their end.
fn counter(imp0: f64, exp0: f64, quarters: &[(f64, f64)], skip: &[usize]) -> Vec<CounterSample> {
    let mut out = vec![CounterSample::new(
        at(10, 0),
        Some(imp0 * 1000.0),
        Some(exp0 * 1000.0),
    )];
    let (mut imp, mut exp) = (imp0, exp0);
    for (k, &(di, de)) in quarters.iter().enumerate() {
        imp += di;
        exp += de;
        if !skip.contains(&k) {
            let ts = at(10, 0) + Duration::minutes(15 * (k as i64 + 1));
            out.push(CounterSample::new(
                ts,
                Some(imp * 1000.0),
                Some(exp * 1000.0),
            ));
        }
    }
    out
}

/// Four equal quarters per hour for three hours.
fn per_hour(h10: (f64, f64), h11: (f64, f64), h12: (f64, f64)) -> Vec<(f64, f64)> {
    [h10, h11, h12].iter().flat_map(|&q| [q; 4]).collect()
}

fn meter_a() -> Vec<CounterSample> {
    // Quarters 8 and 9 end at 12:15 and 12:30: those readings are lost.
    counter(
        0.0,
        1200.0,
        &per_hour((0.0, 10.0), (0.0, 15.0), (0.0, 12.5)),
        &[8, 9],
    )
}

fn meter_b() -> Vec<CounterSample> {
    counter(
        3.0,
        800.0,
        &per_hour((0.0, 25.0), (0.0, 30.0), (0.0, 20.0)),
        &[],
    )
}

fn meter_c() -> Vec<CounterSample> {
    let mut s = counter(
        5000.0,
        0.0,
        &per_hour((17.5, 0.0), (22.5, 0.0), (50.0, 0.0)),
        &[],
    );
    // Meter replaced: from 11:30 (index 6) the counter restarts; 11:30 reads 12.5 kWh.
    let mut imp = 12.5;
    for (i, sample) in s.iter_mut().enumerate().skip(6) {
        if i > 6 {
            imp += if i <= 8 { 22.5 } else { 50.0 };
        }
        sample.e_imp_wh = Some(imp * 1000.0);
    }
    s
}

fn meter_d_production() -> Vec<CounterSample> {
    counter(
        0.0,
        40.0,
        &per_hour((0.0, 2.0), (0.0, 3.0), (0.0, 1.0)),
        &[],
    )
}

fn meter_d_consumption() -> Vec<CounterSample> {
    let q = [1.0, 1.0, 5.0, 5.0, 0.5, 0.5, 0.5, 0.5, 4.0, 4.0, 4.0, 4.0].map(|c| (c, 0.0));
    counter(700.0, 0.0, &q, &[])
}

fn meter_g() -> Vec<CounterSample> {
    counter(0.0, 0.0, &per_hour((0.0, 7.5), (0.0, 7.5), (0.0, 7.5)), &[])
}

fn meter_e_all() -> Vec<CounterSample> {
    counter(
        100.0,
        0.0,
        &per_hour((5.0, 0.0), (12.5, 0.0), (2.5, 0.0)),
        &[],
    )
}

/// What had arrived from the late site before it came back: readings up to 11:00.
fn meter_e_early() -> Vec<CounterSample> {
    meter_e_all()
        .into_iter()
        .filter(|s| s.ts <= at(11, 0))
        .collect()
}

fn steps(samples: &[CounterSample], role: MeterRole, step: Period) -> MeterSteps {
    let steps = meter_periods(samples, range(), step, &opts()).unwrap_or_default();
    MeterSteps { role, steps }
}

fn grid_pod(
    pod: &str,
    member: &str,
    sub: &str,
    eligible: bool,
    samples: &[CounterSample],
) -> PodSeries {
    let m = [steps(samples, MeterRole::Grid, Period::HOUR)];
    let periods = pod_periods(&m, range(), Period::HOUR, Period::HOUR).unwrap_or_default();
    PodSeries {
        pod: pod.into(),
        member: member.into(),
        substation: sub.into(),
        eligible_injection: eligible,
        periods,
    }
}

fn pod_d() -> PodSeries {
    let q = Period::QUARTER_HOUR;
    let m = [
        steps(&meter_d_production(), MeterRole::Production, q),
        steps(&meter_d_consumption(), MeterRole::Consumption, q),
    ];
    let periods = pod_periods(&m, range(), q, Period::HOUR).unwrap_or_default();
    PodSeries {
        pod: "IT001E-D".into(),
        member: "rossi".into(),
        substation: "CP-SONDRIO".into(),
        eligible_injection: false,
        periods,
    }
}

fn community(e_samples: &[CounterSample]) -> Balance {
    community_balance(&[
        grid_pod("IT001E-A", "tessuti", "CP-SONDRIO", true, &meter_a()),
        grid_pod("IT001E-B", "stps", "CP-SONDRIO", true, &meter_b()),
        grid_pod("IT001E-C", "condominio", "CP-SONDRIO", false, &meter_c()),
        pod_d(),
        grid_pod("IT001E-G", "comune", "CP-CASTIONE", true, &meter_g()),
        grid_pod("IT001E-E", "comune", "CP-CASTIONE", false, e_samples),
    ])
}

fn pv(id: &str, pod: &str, kw: f64, commissioned: (i32, u32, u32), grant: f64) -> Plant {
    Plant {
        id: id.into(),
        pod: pod.into(),
        commissioned: NaiveDate::from_ymd_opt(commissioned.0, commissioned.1, commissioned.2)
            .unwrap_or_default(),
        tariff: PlantTariff {
            power_kw: kw,
            technology: Technology::Photovoltaic,
            region: Region::North,
            grant_share: grant,
        },
    }
}

fn plants() -> Vec<Plant> {
    // Listed youngest first on purpose: the allotment must order them itself.
    vec![
        pv("comune-pv", "IT001E-G", 60.0, (2024, 5, 1), 0.0),
        pv("stps-pv", "IT001E-B", 400.0, (2024, 2, 1), 0.20),
        pv("tessuti-pv", "IT001E-A", 150.0, (2023, 3, 1), 0.0),
    ]
}

fn params() -> IncentiveParams {
    let prices: BTreeMap<DateTime<Utc>, f64> =
        [(at(10, 0), 100.0), (at(11, 0), 150.0), (at(12, 0), 50.0)].into();
    IncentiveParams {
        prices: Prices::hourly(prices),
        cuaf_eur_per_mwh: 11.22,
        period_minutes: 60,
    }
}

fn report() -> Option<MonthlyReport> {
    monthly_report(
        "2024-06-03 worked example",
        range(),
        &community(&meter_e_all()),
        &plants(),
        &params(),
    )
    .ok()
}

const KWH: u64 = 1_000_000; // mWh

fn pod_figures(b: &Balance, pod: &str) -> Vec<(u64, u64)> {
    b.pods
        .iter()
        .filter(|p| p.pod == pod)
        .map(|p| (p.injection_mwh, p.withdrawal_mwh))
        .collect()
}

#[test]
fn meter_energy_per_hour_follows_the_counters() {
    let hours = |s: &[CounterSample]| -> Vec<(u64, u64, Flags)> {
        meter_periods(s, range(), Period::HOUR, &opts())
            .unwrap_or_default()
            .iter()
            .map(|p| (p.imported_mwh, p.exported_mwh, p.flags))
            .collect()
    };
    let a = hours(&meter_a());
    // A: 40, 60, 50 kWh exported; h12 holds the 45-minute gap: estimated, still 50 kWh.
    assert_eq!(
        a.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![40 * KWH, 60 * KWH, 50 * KWH]
    );
    assert_eq!(
        a.iter().map(|x| x.2.estimated).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    let c = hours(&meter_c());
    // C: 70; 22.5 + 12.5 (since the reset) + 22.5 + 22.5 = 80; 200. Reset flagged in h11 only.
    assert_eq!(
        c.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![70 * KWH, 80 * KWH, 200 * KWH]
    );
    assert_eq!(
        c.iter().map(|x| x.2.counter_reset).collect::<Vec<_>>(),
        vec![false, true, false]
    );
    assert!(c.iter().all(|x| !x.2.incomplete && !x.2.estimated));
}

#[test]
fn a_declared_replacement_makes_the_swap_quarter_exact() {
    // C's technician declares the swap: the old meter removed at 11:20 reading 5 100.0 kWh
    // (7.5 kWh after 11:15), the new one installed reading 0.0 kWh (12.5 kWh by 11:30). The
    // quarter counts 7.5 + 12.5 = 20 kWh: h11 = 22.5 + 20 + 22.5 + 22.5 = 87.5 kWh, not a reset.
    let swap = [Replacement {
        at: at(11, 20),
        imp: Some(Handover {
            old_final_wh: 5_100_000.0,
            new_initial_wh: 0.0,
        }),
        exp: None,
    }];
    let samples = meter_c();
    let data = MeterData {
        samples: &samples,
        power: &[],
        replacements: &swap,
    };
    let c = meter_periods_with(&data, range(), Period::HOUR, &opts()).unwrap();
    assert_eq!(
        c.iter().map(|x| x.imported_mwh).collect::<Vec<_>>(),
        vec![70 * KWH, 87_500_000, 200 * KWH]
    );
    assert!(c.iter().all(|x| x.flags == Flags::NONE), "{c:?}");
}

#[test]
fn member_without_grid_meter_is_netted_per_quarter_hour() {
    let d = pod_d();
    let figures: Vec<(u64, u64, Option<u64>, Option<u64>)> = d
        .periods
        .iter()
        .map(|p| {
            (
                p.injection_mwh,
                p.withdrawal_mwh,
                p.production_mwh,
                p.consumption_mwh,
            )
        })
        .collect();
    // h10: inj 2, wd 6, prod 8, cons 12. h11: inj 10, wd 0, prod 12, cons 2. h12: 0, 12, 4, 16.
    assert_eq!(
        figures,
        vec![
            (2 * KWH, 6 * KWH, Some(8 * KWH), Some(12 * KWH)),
            (10 * KWH, 0, Some(12 * KWH), Some(2 * KWH)),
            (0, 12 * KWH, Some(4 * KWH), Some(16 * KWH)),
        ]
    );
}

#[test]
fn shared_energy_per_substation_and_hour() {
    let b = community(&meter_e_all());
    let sub = |name: &str| -> Vec<(u64, u64, u64, u64)> {
        b.substations
            .iter()
            .filter(|s| s.substation == name)
            .map(|s| {
                (
                    s.eligible_injection_mwh,
                    s.injection_mwh,
                    s.withdrawal_mwh,
                    s.shared_mwh,
                )
            })
            .collect()
    };
    // CP-SONDRIO: eligible inj = A + B (D's old PV does not count), wd = C + D.
    //   h10: 40+100 = 140, total 142, wd 70+6 = 76, shared min(140, 76) = 76
    //   h11: 60+120 = 180, total 190, wd 80+0 = 80, shared 80
    //   h12: 50+80 = 130, total 130, wd 200+12 = 212, shared 130
    assert_eq!(
        sub("CP-SONDRIO"),
        vec![
            (140 * KWH, 142 * KWH, 76 * KWH, 76 * KWH),
            (180 * KWH, 190 * KWH, 80 * KWH, 80 * KWH),
            (130 * KWH, 130 * KWH, 212 * KWH, 130 * KWH),
        ]
    );
    // CP-CASTIONE: G 30 each hour, E 20, 50, 10 → shared 20, 30, 10.
    assert_eq!(
        sub("CP-CASTIONE"),
        vec![
            (30 * KWH, 30 * KWH, 20 * KWH, 20 * KWH),
            (30 * KWH, 30 * KWH, 50 * KWH, 30 * KWH),
            (30 * KWH, 30 * KWH, 10 * KWH, 10 * KWH)
        ]
    );
    // Community: 96, 110, 140 kWh shared; h11 carries C's reset, h12 A's gap.
    let shared: Vec<u64> = b.community.iter().map(|c| c.shared_mwh).collect();
    assert_eq!(shared, vec![96 * KWH, 110 * KWH, 140 * KWH]);
    let flags: Vec<String> = b.community.iter().map(|c| c.flags.label()).collect();
    assert_eq!(flags, vec!["", "counter_reset", "estimated"]);
    // Production comes only from D's production meter: 8+12+4 = 24.
    assert_eq!(
        b.community.iter().map(|c| c.production_mwh).sum::<u64>(),
        24 * KWH
    );
    // Consumption: D measured 12+2+16 = 30; the grid-only PODs infer import − export (never
    // below 0): C 70+80+200 = 350, E 20+50+10 = 80, the exporting plants A, B, G 0.
    // 30 + 350 + 80 = 460.
    assert_eq!(
        b.community.iter().map(|c| c.consumption_mwh).sum::<u64>(),
        460 * KWH
    );
}

#[test]
fn consumer_contributions_are_pro_rata_of_withdrawal() {
    let b = community(&meter_e_all());
    let share = |pod: &str| -> Vec<u64> {
        b.pods
            .iter()
            .filter(|p| p.pod == pod)
            .map(|p| p.shared_as_consumer_mwh)
            .collect()
    };
    // h12 in CP-SONDRIO: 130 kWh shared between C (200) and D (12) of 212 kWh withdrawn:
    //   C 130e6 × 200/212 = 122 641 509.43 mWh, D 130e6 × 12/212 = 7 358 490.57 mWh;
    //   floors 122 641 509 + 7 358 490 leave 1 mWh, which goes to the larger remainder (D).
    assert_eq!(share("IT001E-C"), vec![70 * KWH, 80 * KWH, 122_641_509]);
    assert_eq!(share("IT001E-D"), vec![6 * KWH, 0, 7_358_491]);
    // Producers, h10 in CP-SONDRIO: 76 kWh between A (40) and B (100) of 140:
    //   A 21 714 285.71 → 21 714 286 (larger remainder), B 54 285 714.29 → 54 285 714.
    let prod = |pod: &str| -> Option<u64> {
        b.pods
            .iter()
            .find(|p| p.pod == pod)
            .map(|p| p.shared_as_producer_mwh)
    };
    assert_eq!(prod("IT001E-A"), Some(21_714_286));
    assert_eq!(prod("IT001E-B"), Some(54_285_714));
    // Member `comune` holds both CP-CASTIONE PODs: all of its shared energy, both ways.
    let members = b.member_totals();
    let comune = members
        .iter()
        .find(|m| m.member == "comune")
        .map(|m| (m.shared_as_consumer_mwh, m.shared_as_producer_mwh));
    assert_eq!(comune, Some((60 * KWH, 60 * KWH)));
    let total: u64 = b.community.iter().map(|c| c.shared_mwh).sum();
    assert_eq!(
        members
            .iter()
            .map(|m| m.shared_as_consumer_mwh)
            .sum::<u64>(),
        total
    );
    assert_eq!(
        members
            .iter()
            .map(|m| m.shared_as_producer_mwh)
            .sum::<u64>(),
        total
    );
}

#[test]
fn late_site_readings_change_only_the_recomputed_hours() {
    let before = community(&meter_e_early());
    // Before: E known until 11:00 only. h11 and h12 of CP-CASTIONE have no E withdrawal: shared 0,
    // incomplete. h10 is already right: shared 20.
    let castione = |b: &Balance| -> Vec<(u64, bool)> {
        b.substations
            .iter()
            .filter(|s| s.substation == "CP-CASTIONE")
            .map(|s| (s.shared_mwh, s.flags.incomplete))
            .collect()
    };
    assert_eq!(
        castione(&before),
        vec![(20 * KWH, false), (0, true), (0, true)]
    );
    assert_eq!(
        pod_figures(&before, "IT001E-E"),
        vec![(0, 20 * KWH), (0, 0), (0, 0)]
    );

    // The site comes back with 11:15 … 13:00. The last stored reading before them is 11:00, none
    // after: hours 11 and 12 (and the hour holding 13:00) must be recomputed; 10 need not.
    let r = affected_range(Some(at(11, 0)), at(11, 15), at(13, 0), None, Period::HOUR);
    assert_eq!(r, Range::new(at(11, 0), at(14, 0)));

    let after = community(&meter_e_all());
    assert_eq!(
        castione(&after),
        vec![(20 * KWH, false), (30 * KWH, false), (10 * KWH, false)]
    );
    assert_eq!(
        pod_figures(&after, "IT001E-E"),
        vec![(0, 20 * KWH), (0, 50 * KWH), (0, 10 * KWH)]
    );
    // Hour 10 is the same in both: the late readings did not touch it.
    assert_eq!(before.community[0], after.community[0]);
}

#[test]
fn allotment_goes_to_the_oldest_plant_first() {
    let a = allot(&community(&meter_e_all()), &plants(), &params());
    let a = a.unwrap_or_default();
    let allotted = |id: &str| -> Vec<u64> {
        a.plants
            .iter()
            .filter(|p| p.plant == id)
            .map(|p| p.allotted_mwh)
            .collect()
    };
    // CP-SONDRIO: A (2023) before B (2024).
    //   h10 shared 76: A min(76, 40) = 40, B 36.  h11 80: A 60, B 20.  h12 130: A 50, B 80.
    assert_eq!(allotted("tessuti-pv"), vec![40 * KWH, 60 * KWH, 50 * KWH]);
    assert_eq!(allotted("stps-pv"), vec![36 * KWH, 20 * KWH, 80 * KWH]);
    assert_eq!(allotted("comune-pv"), vec![20 * KWH, 30 * KWH, 10 * KWH]);
    // Tariffs (€/MWh), Pz 100 / 150 / 50:
    //   A 150 kW: min(80 + 80, 120) + 10 = 130; 80 + 30 + 10 = 120; min(80 + 130, 120) + 10 = 130.
    //   B 400 kW, F = 0.5 × 0.20 / 0.40 = 0.25: (110 + 10) × 0.75 = 90; (100 + 10) × 0.75 = 82.5; 90.
    let tips = |id: &str| -> Vec<Option<f64>> {
        a.plants
            .iter()
            .filter(|p| p.plant == id)
            .map(|p| p.tip_eur_per_mwh)
            .collect()
    };
    assert_eq!(
        tips("tessuti-pv"),
        vec![Some(130.0), Some(120.0), Some(130.0)]
    );
    assert_eq!(tips("stps-pv"), vec![Some(90.0), Some(82.5), Some(90.0)]);
    // Incentive B: 36 × 0.090 + 20 × 0.0825 + 80 × 0.090 = 3.24 + 1.65 + 7.20 = 12.09 €.
    let b_eur: u64 = a
        .plants
        .iter()
        .filter(|p| p.plant == "stps-pv")
        .map(|p| p.incentive_ueur)
        .sum();
    assert_eq!(b_eur, 12_090_000);
}

#[test]
fn monthly_report_totals_by_hand() {
    let Some(r) = report() else {
        panic!("the worked example must produce a report");
    };
    let c = &r.community;
    // Shared: CP-SONDRIO 76 + 80 + 130 = 286, CP-CASTIONE 20 + 30 + 10 = 60 → 346 kWh.
    assert_eq!(c.shared_mwh, 346 * KWH);
    // Incentive: A 40×0.13 + 60×0.12 + 50×0.13 = 5.2 + 7.2 + 6.5 = 18.90 €; B 12.09 €;
    //   G 20×0.13 + 30×0.12 + 10×0.13 = 2.6 + 3.6 + 1.3 = 7.50 € → 38.49 €.
    assert_eq!(c.incentive_ueur, 38_490_000);
    // Valorisation: 346 kWh × 11.22 €/MWh = 3.882 12 €.
    assert_eq!(c.valorisation_ueur, 3_882_120);
    // Social part, per set of plants:
    //   55 % set {A, G}: injected 150 + 90 = 240, allotted 150 + 60 = 210, incentive 26.40 €;
    //     above 0.55 × 240 = 132 → 78 kWh; 26.40 × 78/210 = 9.805 714 28… € → 9 805 714 µ€.
    //     Shares pro rata of incentive: A 9 805 714 × 18.9/26.4 = 7 019 999.80, G × 7.5/26.4
    //     = 2 785 714.20; the leftover µ€ goes to A (larger remainder): 7 020 000 and 2 785 714.
    //     Excess pro rata of allotted: A 78 × 150/210 = 55.714 285 7 → 55 714 286 mWh, G 22 285 714.
    //   45 % set {B}: injected 300, allotted 136, above 135 → 1 kWh; 12.09/136 = 0.088 897 €.
    //   Total 9 894 611 µ€.
    let sets: Vec<(u8, u64, u64)> = r
        .social_sets
        .iter()
        .map(|g| (g.threshold_pct, g.excess_mwh, g.social_ueur))
        .collect();
    assert_eq!(sets, vec![(55, 78 * KWH, 9_805_714), (45, KWH, 88_897)]);
    let social: Vec<(String, u64, u64)> = r
        .plants
        .iter()
        .map(|p| (p.plant.clone(), p.excess_mwh, p.social_ueur))
        .collect();
    assert_eq!(
        social,
        vec![
            ("tessuti-pv".to_string(), 55_714_286, 7_020_000),
            ("stps-pv".to_string(), KWH, 88_897),
            ("comune-pv".to_string(), 22_285_714, 2_785_714),
        ]
    );
    assert_eq!(c.social_ueur, 9_894_611);
    assert_eq!(c.unallotted_mwh, 0);
    // Stated uncertain hours: h11 (C's reset) and h12 (A's gap).
    assert_eq!(
        (
            c.periods,
            c.estimated_periods,
            c.counter_reset_periods,
            c.incomplete_periods
        ),
        (3, 1, 1, 0)
    );
    // Members: each money split adds up to the community figure.
    let sum = |f: fn(&socer::central::incentive::MemberMonth) -> u64| {
        r.members.iter().map(f).sum::<u64>()
    };
    assert_eq!(sum(|m| m.incentive_as_consumer_ueur), c.incentive_ueur);
    assert_eq!(sum(|m| m.incentive_as_producer_ueur), c.incentive_ueur);
    assert_eq!(
        sum(|m| m.valorisation_as_consumer_ueur),
        c.valorisation_ueur
    );
    // `comune` is the only consumer and the only eligible producer in CP-CASTIONE: its whole 7.50 €.
    let comune = r
        .members
        .iter()
        .find(|m| m.member == "comune")
        .map(|m| (m.incentive_as_consumer_ueur, m.incentive_as_producer_ueur));
    assert_eq!(comune, Some((7_500_000, 7_500_000)));
}

#[test]
fn csv_report_reads_as_computed_by_hand() {
    let Some(r) = report() else {
        panic!("the worked example must produce a report");
    };
    let csv = report_csv(&r);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "record,id,substation,injection_kwh,eligible_injection_kwh,withdrawal_kwh,shared_kwh,shared_as_consumer_kwh,\
         shared_as_producer_kwh,incentive_eur,incentive_as_consumer_eur,incentive_as_producer_eur,valorisation_eur,\
         social_eur,estimated_periods,incomplete_periods,flags"
    );
    // Injection 142 + 190 + 130 + 90 = 552; eligible 140 + 180 + 130 + 90 = 540;
    // withdrawal 76 + 80 + 212 + 80 = 448; social 9.894 611 → 9.89.
    assert_eq!(lines[1], "community,2024-06-03 worked example,,552.000,540.000,448.000,346.000,,,38.49,,,3.88,9.89,1,0,");
    assert!(lines.contains(&"plant,tessuti-pv,CP-SONDRIO,150.000,150.000,,150.000,,,18.90,,,,7.02,1,0,social_threshold=55%"));
    assert!(lines.contains(&"plant,stps-pv,CP-SONDRIO,300.000,300.000,,136.000,,,12.09,,,,0.09,0,0,social_threshold=45%"));
    // comune: withdrawal 80 (E), injection 90 (G); valorisation on its 60 kWh: 0.6732 → 0.67.
    assert!(lines.contains(&"member,comune,,90.000,,80.000,,60.000,60.000,,7.50,7.50,0.67,,,,"));
    assert!(lines.contains(&"period,2024-06-03T11:00:00Z,,,,,,,,,,,,,,,counter_reset"));
    assert!(lines.contains(&"period,2024-06-03T12:00:00Z,,,,,,,,,,,,,,,estimated"));
    assert!(lines
        .contains(&"social_set,55%,,240.000,240.000,,210.000,,,26.40,,,,9.81,,,excess_kwh=78.000"));
    assert!(lines
        .contains(&"social_set,45%,,300.000,300.000,,136.000,,,12.09,,,,0.09,,,excess_kwh=1.000"));
    // 1 header + community + 2 substations + 3 plants + 2 social sets + 5 members + 2 periods.
    assert_eq!(lines.len(), 16);
}

#[test]
fn missing_price_for_an_hour_with_shared_energy_is_flagged_never_silently_zero() {
    // 11:00 is not in the price file. Without a fallback its shared energy is left unpaid and
    // the report says so; with `zonal_eur_mwh` as fallback it is paid at that price, flagged.
    let mut p = params();
    if let Prices::Series(s) = &mut p.prices {
        s.hours.remove(&at(11, 0));
    }
    let full = report().map(|r| r.community.incentive_ueur).unwrap_or(0);
    let Ok(r) = monthly_report("x", range(), &community(&meter_e_all()), &plants(), &p) else {
        panic!("a missing price is not an error");
    };
    assert_eq!(r.community.price_missing_periods, 1);
    assert_eq!(r.community.price_fallback_periods, 0);
    assert!(r.community.incentive_ueur < full);
    assert!(r
        .flagged_periods
        .iter()
        .any(|f| f.start == at(11, 0) && f.price_missing));
    if let Prices::Series(s) = &mut p.prices {
        // The fallback equal to the file's own 11:00 price gives back the full figure.
        s.fallback = Some(150.0);
    }
    let Ok(r) = monthly_report("x", range(), &community(&meter_e_all()), &plants(), &p) else {
        panic!("a fallback price is not an error");
    };
    assert_eq!(r.community.price_missing_periods, 0);
    assert_eq!(r.community.price_fallback_periods, 1);
    assert_eq!(r.community.incentive_ueur, full);
    let csv = report_csv(&r);
    assert!(
        csv.contains("period,2024-06-03T11:00:00Z,,,,,,,,,,,,,,,counter_reset|price_fallback"),
        "{csv}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests of the allotment: random substations, PODs and plants.
// ---------------------------------------------------------------------------------------------

/// Per hour: injection of the first plant POD, of the second, withdrawal of the consumer (mWh).
type Hour = (u64, u64, u64);

fn arb_case() -> impl Strategy<Value = (Vec<PodSeries>, Vec<Plant>)> {
    let pod = (
        0u8..2,
        any::<bool>(),
        0u8..3,
        prop::collection::vec((0u64..50_000_000, 0u64..50_000_000), 3),
    );
    (
        prop::collection::vec(pod, 1..8),
        prop::collection::vec((0usize..8, 1.0f64..900.0, 0u32..2000, 0.0f64..0.4), 0..8),
    )
        .prop_map(|(pods, plants)| {
            let hosts = |i: usize| plants.iter().any(|p| p.0 % pods.len() == i);
            let series: Vec<PodSeries> = pods
                .iter()
                .enumerate()
                .map(|(i, (sub, elig, member, hours))| PodSeries {
                    pod: format!("pod{i}"),
                    member: format!("m{member}"),
                    substation: format!("S{sub}"),
                    eligible_injection: *elig || hosts(i),
                    periods: hours
                        .iter()
                        .enumerate()
                        .map(|(h, &(inj, wd))| PodPeriod {
                            start: at(10 + h as u32, 0),
                            injection_mwh: inj,
                            withdrawal_mwh: wd,
                            production_mwh: None,
                            consumption_mwh: None,
                            flags: Flags::NONE,
                            prod_cons_flags: Flags::NONE,
                        })
                        .collect(),
                })
                .collect();
            let plants: Vec<Plant> = plants
                .iter()
                .enumerate()
                .map(|(k, &(i, kw, days, grant))| {
                    let mut p = pv(
                        &format!("plant{k}"),
                        &format!("pod{}", i % pods.len()),
                        kw,
                        (2023, 1, 1),
                        grant,
                    );
                    p.commissioned = p
                        .commissioned
                        .checked_add_days(chrono::Days::new(u64::from(days)))
                        .unwrap_or(p.commissioned);
                    p
                })
                .collect();
            (series, plants)
        })
}

proptest! {
    #[test]
    fn allotment_never_exceeds_injection_or_shared_and_money_adds_up((pods, plants) in arb_case()) {
        let b = community_balance(&pods);
        let params = IncentiveParams { prices: Prices::Constant(95.0), cuaf_eur_per_mwh: 11.22, period_minutes: 60 };
        let a = allot(&b, &plants, &params).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for p in &a.plants {
            prop_assert!(p.allotted_mwh <= p.injection_mwh);
        }
        for s in &a.substations {
            let allotted: u64 = a.plants.iter().filter(|p| p.start == s.start && p.substation == s.substation).map(|p| p.allotted_mwh).sum();
            prop_assert_eq!(allotted, s.allotted_mwh);
            prop_assert!(s.allotted_mwh <= s.shared_mwh);
            let pods_here = a.pods.iter().filter(|p| p.start == s.start && b.pods.iter().any(|q| q.pod == p.pod && q.substation == s.substation));
            let (ic, ip, vc) = pods_here.fold((0, 0, 0), |acc, p| (acc.0 + p.incentive_as_consumer_ueur, acc.1 + p.incentive_as_producer_ueur, acc.2 + p.valorisation_as_consumer_ueur));
            if s.shared_mwh > 0 {
                prop_assert_eq!(ic, s.incentive_ueur);
                prop_assert_eq!(ip, s.incentive_ueur);
                prop_assert_eq!(vc, s.valorisation_ueur);
            }
        }
        // The plants of a POD never get more than the POD injected, together.
        for pod in &b.pods {
            let sum: u64 = a.plants.iter().filter(|p| p.start == pod.start && plants.iter().any(|q| q.id == p.plant && q.pod == pod.pod)).map(|p| p.injection_mwh).sum();
            let has_plant = plants.iter().any(|q| q.pod == pod.pod);
            prop_assert_eq!(sum, if has_plant { pod.injection_mwh } else { 0 });
        }
        let r = monthly_report("p", range(), &b, &plants, &params).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(r.community.social_ueur <= r.community.incentive_ueur);
        prop_assert_eq!(r.plants.iter().map(|p| p.social_ueur).sum::<u64>(), r.community.social_ueur);
        prop_assert_eq!(r.social_sets.iter().map(|g| g.social_ueur).sum::<u64>(), r.community.social_ueur);
        for p in &r.plants {
            prop_assert!(p.social_ueur <= p.incentive_ueur);
            prop_assert!(p.excess_mwh <= p.allotted_mwh);
        }
    }

    #[test]
    fn every_shared_mwh_is_allotted_when_each_eligible_pod_has_a_plant(
        hours in prop::collection::vec((0u64..10_000_000, 0u64..10_000_000, 0u64..10_000_000), 1..3),
    ) {
        // Two eligible PODs with one plant each and one consumer POD, one substation.
        let mk = |pod: &str, eligible: bool, f: &dyn Fn(&Hour) -> (u64, u64)| PodSeries {
            pod: pod.into(),
            member: pod.into(),
            substation: "S".into(),
            eligible_injection: eligible,
            periods: hours.iter().enumerate().map(|(h, x)| {
                let (inj, wd) = f(x);
                PodPeriod { start: at(10 + h as u32, 0), injection_mwh: inj, withdrawal_mwh: wd, production_mwh: None,
                    consumption_mwh: None, flags: Flags::NONE, prod_cons_flags: Flags::NONE }
            }).collect(),
        };
        let pods = vec![mk("p1", true, &|x| (x.0, 0)), mk("p2", true, &|x| (x.1, 0)), mk("c", false, &|x| (0, x.2))];
        let plants = vec![pv("young", "p1", 50.0, (2024, 6, 1), 0.0), pv("old", "p2", 900.0, (2023, 6, 1), 0.3)];
        let b = community_balance(&pods);
        let a = allot(&b, &plants, &IncentiveParams { prices: Prices::Constant(120.0), cuaf_eur_per_mwh: 11.22, period_minutes: 60 })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (s, x) in a.substations.iter().zip(&hours) {
            prop_assert_eq!(s.allotted_mwh, s.shared_mwh);
            // The old plant gets min(shared, its injection) first.
            let old = a.plants.iter().find(|p| p.plant == "old" && p.start == s.start).map(|p| p.allotted_mwh);
            prop_assert_eq!(old, Some(s.shared_mwh.min(x.1)));
        }
    }
}

#[test]
fn json_report_keeps_exact_units() {
    let Some(r) = report() else {
        panic!("the worked example must produce a report");
    };
    let v = serde_json::to_value(&r).unwrap_or_default();
    assert_eq!(v["community"]["shared_mwh"], 346_000_000u64);
    assert_eq!(v["community"]["incentive_ueur"], 38_490_000u64);
    assert_eq!(v["plants"][0]["commissioned"], "2023-03-01");
    assert_eq!(v["flagged_periods"][0]["start"], "2024-06-03T11:00:00Z");
    assert_eq!(v["flagged_periods"][0]["flags"]["counter_reset"], true);
}
