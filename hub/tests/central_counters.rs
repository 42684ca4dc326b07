//! Counters that cannot lie, through the hub's store and recomputation: a reset to a big counter
//! books what the meter's power says (not the counter), a glitch seen only with the next batch
//! re-settles the hour before it, and a replacement declared in the config after the fact makes
//! the hour exact. Figures are worked by hand in the comments.

mod central_support;

use std::sync::Arc;
use std::time::Instant;

use central_support::*;
use chrono::{DateTime, TimeZone, Utc};
use socer::central::compute::{self, Model};
use socer::central::config::{self, CentralConfig};
use socer::central::status::Metrics;
use socer::central::store::{Incoming, Periods, Reader, Writer};

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

fn setup(extra: &str) -> (tempfile::TempDir, CentralConfig, Writer, Reader) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    let text = config_text(dir.path(), "listen = \"127.0.0.1:1\"") + extra;
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    let w = Writer::open(
        &cfg.storage_path,
        Periods { seconds: 3600 },
        35,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let r = Reader::open(&cfg.storage_path).unwrap();
    (dir, cfg, w, r)
}

fn batch(site: &str, readings: Vec<socer::wire::WireReading>) -> Incoming {
    Incoming {
        site: site.into(),
        readings,
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    }
}

/// Iperal exports 60 kW (1 kWh a minute) from 10:00 to 11:00; its export counter reads 34 372 kWh
/// at 10:00 and, from 10:30, a swapped meter's 12 547 kWh.
fn iperal_swapped() -> Incoming {
    let readings = (0..=60u32)
        .map(|i| {
            let e = if i < 30 {
                34_372_000.0 + 1000.0 * f64::from(i)
            } else {
                12_547_000.0 + 1000.0 * f64::from(i - 30)
            };
            let ts = at(10, 0) + chrono::Duration::minutes(i64::from(i));
            reading(1 + u64::from(i), "grid", ts, -60_000.0, 0.0, e)
        })
        .collect();
    batch("iperal", readings)
}

fn hour10(r: &Reader) -> socer::central::balance::SubstationPeriod {
    let s = r
        .substation_periods(at(10, 0).timestamp(), at(11, 0).timestamp())
        .unwrap();
    assert_eq!(s.len(), 1);
    s[0].clone()
}

#[test]
fn a_reset_to_a_big_counter_books_the_meters_power_not_the_counter() {
    let (_dir, cfg, mut w, mut r) = setup("");
    let model = Model::new(&cfg);
    w.write_group(&[iperal_swapped()]).unwrap();
    compute::recompute_dirty(&mut r, &model, at(12, 0), 10, false).unwrap();
    // 59 measured minutes of 1 kWh, and the reset minute at the 60 kW its power says: 60 kWh,
    // not 12 547 kWh.
    let s = hour10(&r);
    assert_eq!(s.injection_mwh, 60_000_000);
    assert!(
        s.flags.counter_reset && s.flags.estimated && s.flags.implausible,
        "{:?}",
        s.flags
    );
}

#[test]
fn a_replacement_declared_later_makes_the_hour_exact() {
    let (dir, cfg, mut w, mut r) = setup("");
    compute::mark_changed_settings(&mut r, &Model::new(&cfg)).unwrap();
    w.write_group(&[iperal_swapped()]).unwrap();
    compute::recompute_dirty(&mut r, &Model::new(&cfg), at(12, 0), 10, false).unwrap();
    assert!(hour10(&r).flags.counter_reset);

    // The technician declares the swap at 10:29:30: the old meter read 34 401.5 kWh when
    // removed, the new one 12 546.5 kWh when installed. Across it: 0.5 + 0.5 = 1 kWh.
    let declared = "\n[[replacement]]\nsite = \"iperal\"\nmeter = \"grid\"\n\
                    at = \"2026-06-01T10:29:30Z\"\nold_exp_kwh = 34401.5\nnew_exp_kwh = 12546.5\n\
                    old_imp_kwh = 0.0\nnew_imp_kwh = 0.0\n";
    let path = dir.path().join("central.toml");
    let text = std::fs::read_to_string(&path).unwrap() + declared;
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    let model = Model::new(&cfg);
    // At the next start the hour around the swap is marked for recomputation.
    assert!(compute::mark_changed_settings(&mut r, &model).unwrap() >= 1);
    assert!(r
        .dirty_periods(10)
        .unwrap()
        .contains(&at(10, 0).timestamp()));
    compute::recompute_dirty(&mut r, &model, at(12, 0), 10, false).unwrap();
    let s = hour10(&r);
    assert_eq!(s.injection_mwh, 60_000_000);
    // (The substation is incomplete: Domus sent nothing.) Iperal's own hour is clean.
    let p = r
        .pod_periods(at(10, 0).timestamp(), at(11, 0).timestamp())
        .unwrap();
    let iperal = p.iter().find(|p| p.pod == "P-IPERAL").unwrap();
    assert!(!iperal.flags.any(), "{:?}", iperal.flags);
    // Nothing changed since: nothing more to recompute.
    assert_eq!(compute::mark_changed_settings(&mut r, &model).unwrap(), 0);
}

#[test]
fn a_glitch_shown_by_the_next_batch_re_settles_the_hour_before() {
    let (_dir, cfg, mut w, mut r) = setup("");
    let model = Model::new(&cfg);
    // Domus imports 6 kW (100 Wh a minute) from 10:00; at 11:00 its meter, rebooting, answers 0.
    let wh = |i: i64| 8_000_000.0 + 100.0 * i as f64;
    let first: Vec<_> = (0..=60)
        .map(|i| {
            let e = if i == 60 { 0.0 } else { wh(i) };
            reading(
                1 + i as u64,
                "grid",
                at(10, 0) + chrono::Duration::minutes(i),
                6000.0,
                e,
                0.0,
            )
        })
        .collect();
    w.write_group(&[batch("domus-1", first)]).unwrap();
    compute::recompute_dirty(&mut r, &model, at(11, 30), 10, true).unwrap();
    let settled: Vec<_> = r
        .pod_periods(at(10, 0).timestamp(), at(11, 0).timestamp())
        .unwrap();
    assert!(settled
        .iter()
        .any(|p| p.pod == "P-DOMUS" && p.flags.counter_reset));

    // The next batch shows the counter back on course: 11:00 was a glitch, not a reset. The
    // store only marks hour 11 (from its last sample); hour 10 is re-settled with it.
    let next: Vec<_> = (61..=90)
        .map(|i| {
            reading(
                1 + i as u64,
                "grid",
                at(10, 0) + chrono::Duration::minutes(i),
                6000.0,
                wh(i),
                0.0,
            )
        })
        .collect();
    w.write_group(&[batch("domus-1", next)]).unwrap();
    assert_eq!(r.dirty_periods(10).unwrap(), vec![at(11, 0).timestamp()]);
    compute::recompute_dirty(&mut r, &model, at(12, 0), 10, false).unwrap();
    let p = r
        .pod_periods(at(10, 0).timestamp(), at(12, 0).timestamp())
        .unwrap();
    let domus: Vec<_> = p.iter().filter(|p| p.pod == "P-DOMUS").collect();
    assert_eq!(domus.len(), 2);
    // 6 kWh in hour 10 (10:59 → 11:01 runs straight, half in each hour), 3 kWh to 11:30.
    assert_eq!(domus[0].withdrawal_mwh, 6_000_000);
    assert_eq!(domus[1].withdrawal_mwh, 3_000_000);
    assert!(domus.iter().all(|p| !p.flags.counter_reset), "{domus:?}");
    assert!(domus[0].flags.implausible || domus[1].flags.implausible);
}
