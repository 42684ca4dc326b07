//! A battery behind the grid meter, through the hub's store and settlement: its charge and
//! discharge are neither production nor consumption. Worked by hand: over 10:00–11:00 Domus's
//! grid meter imports 1.2 kWh and exports 0.3 kWh, its PV produces 2.5 kWh, its battery stores
//! 0.9 kWh and gives back 0.4 kWh. In: 1.2 + 2.5 + 0.4 = 4.1 kWh; out other than into the loads:
//! 0.3 + 0.9 = 1.2 kWh; the loads used 2.9 kWh (the rule without the battery would say 3.4).

mod central_support;

use std::sync::Arc;
use std::time::Instant;

use central_support::*;
use chrono::{DateTime, TimeZone, Utc};
use socer::central::compute::{self, Model};
use socer::central::config;
use socer::central::status::Metrics;
use socer::central::store::{Incoming, Periods, Reader, Writer};

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

const EXTRA: &str = r#"
[[meter]]
site = "domus-1"
name = "pv"
pod = "P-DOMUS"
role = "production"

[[meter]]
site = "domus-1"
name = "battery"
pod = "P-DOMUS"
role = "storage"
"#;

#[test]
fn a_battery_behind_the_grid_meter_is_neither_production_nor_consumption_once_settled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    let text = config_text(dir.path(), "listen = \"127.0.0.1:1\"") + EXTRA;
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    let mut w = Writer::open(
        &cfg.storage_path,
        Periods { seconds: 3600 },
        35,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let mut r = Reader::open(&cfg.storage_path).unwrap();
    // (meter, import Wh per hour, export Wh per hour, power W): counters every minute.
    let meters = [
        ("grid", 1200.0, 300.0, 900.0),
        ("pv", 0.0, 2500.0, -2500.0),
        ("battery", 900.0, 400.0, 500.0),
    ];
    let mut readings = Vec::new();
    let mut seq = 0;
    for i in 0..=60u32 {
        for (k, (name, imp_h, exp_h, p)) in meters.iter().enumerate() {
            seq += 1;
            let f = f64::from(i) / 60.0;
            let ts = at(10, 0) + chrono::Duration::minutes(i64::from(i));
            let base = 1_000_000.0 * (k as f64 + 1.0);
            readings.push(reading(
                seq,
                name,
                ts,
                *p,
                base + imp_h * f,
                base + exp_h * f,
            ));
        }
    }
    w.write_group(&[Incoming {
        site: "domus-1".into(),
        readings,
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    }])
    .unwrap();
    compute::recompute_dirty(&mut r, &Model::new(&cfg), at(12, 0), 10, false).unwrap();
    let s = r
        .substation_periods(at(10, 0).timestamp(), at(11, 0).timestamp())
        .unwrap();
    let s1 = s.iter().find(|s| s.substation == "S1").expect("S1's hour");
    assert_eq!(s1.withdrawal_mwh, 1_200_000);
    assert_eq!(s1.injection_mwh, 300_000);
    assert_eq!(
        s1.production_mwh, 2_500_000,
        "the discharge is not production"
    );
    assert_eq!(
        s1.consumption_mwh, 2_900_000,
        "the charge is not consumption"
    );
}
