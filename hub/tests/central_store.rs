//! The central store and period recomputation: readings of a site that comes back days late mark
//! the periods they fall in dirty, and recomputing them changes the community's shared energy.
//! Figures are worked by hand in the comments.

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

/// Grid readings every 15 minutes from 10:00 to 13:00 with the counter rising `wh_per_h`.
fn quarter_hourly(site: &str, first_seq: u64, export: bool, wh_per_h: f64) -> Incoming {
    grid_readings(site, first_seq, 5000.0, at(10, 0), 12, export, wh_per_h)
}

#[test]
fn late_site_readings_recompute_the_periods_they_fall_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    std::fs::write(&path, config_text(dir.path(), "listen = \"127.0.0.1:1\"")).unwrap();
    let cfg = config::load(&path).unwrap();
    let model = Model::new(&cfg);
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(
        &cfg.storage_path,
        Periods { seconds: 3600 },
        35,
        metrics.clone(),
    )
    .unwrap();
    let mut r = Reader::open(&cfg.storage_path).unwrap();
    let three_days_later = at(10, 0) + chrono::Duration::days(3);

    // Iperal (eligible plant, substation S1) exports 1,000 Wh each hour 10–13; Domus is silent.
    let c = w
        .write_group(&[quarter_hourly("iperal", 1, true, 1000.0)])
        .unwrap();
    assert_eq!(c.acks, vec![("iperal".to_string(), 13)]);
    assert_eq!(
        r.dirty_periods(10).unwrap(),
        vec![
            at(10, 0).timestamp(),
            at(11, 0).timestamp(),
            at(12, 0).timestamp(),
            at(13, 0).timestamp()
        ]
    );
    assert_eq!(
        compute::recompute_dirty(&mut r, &model, three_days_later, 10, false).unwrap(),
        4
    );
    assert!(r.dirty_periods(10).unwrap().is_empty());
    let s = r
        .substation_periods(at(10, 0).timestamp(), at(11, 0).timestamp())
        .unwrap();
    // Hour 10: injection 1,000 Wh = 1,000,000 mWh, no withdrawal known, so nothing is shared, and
    // the hour is incomplete because Domus's grid meter has no sample in it.
    assert_eq!(s.len(), 1);
    assert_eq!(
        (
            s[0].substation.as_str(),
            s[0].injection_mwh,
            s[0].withdrawal_mwh,
            s[0].shared_mwh
        ),
        ("S1", 1_000_000, 0, 0)
    );
    assert!(s[0].flags.incomplete);

    // Three days later Domus's backlog arrives: it imported 400 Wh each hour.
    w.write_group(&[quarter_hourly("domus-1", 1, false, 400.0)])
        .unwrap();
    assert_eq!(
        r.dirty_periods(10).unwrap().len(),
        4,
        "the late readings mark 10:00–13:00 dirty again"
    );
    compute::recompute_dirty(&mut r, &model, three_days_later, 10, false).unwrap();
    let s = r
        .substation_periods(at(10, 0).timestamp(), at(13, 0).timestamp())
        .unwrap();
    assert_eq!(s.len(), 3);
    for p in &s {
        // shared = min(eligible injection 1,000 Wh, withdrawal 400 Wh) = 400 Wh, now complete.
        assert_eq!(
            (p.injection_mwh, p.withdrawal_mwh, p.shared_mwh),
            (1_000_000, 400_000, 400_000),
            "{p:?}"
        );
        assert!(!p.flags.any(), "{p:?}");
    }
    // Per POD: Domus takes the whole 400 Wh as consumer, Iperal the whole 400 Wh as producer.
    let pods = r
        .pod_periods(at(11, 0).timestamp(), at(12, 0).timestamp())
        .unwrap();
    let domus = pods.iter().find(|p| p.pod == "P-DOMUS").unwrap();
    let iperal = pods.iter().find(|p| p.pod == "P-IPERAL").unwrap();
    assert_eq!(
        (domus.shared_as_consumer_mwh, domus.shared_as_producer_mwh),
        (400_000, 0)
    );
    assert_eq!(
        (iperal.shared_as_consumer_mwh, iperal.shared_as_producer_mwh),
        (0, 400_000)
    );
}

#[test]
fn replayed_and_out_of_order_batches_are_deduplicated_and_the_ack_waits_for_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics.clone()).unwrap();
    let batch = |seqs: std::ops::RangeInclusive<u64>| Incoming {
        site: "stps".into(),
        readings: seqs
            .map(|s| reading(s, "grid", at(10, s as u32), 1.0, s as f64, 0.0))
            .collect(),
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    };
    assert_eq!(
        w.write_group(&[batch(1..=3)]).unwrap().acks,
        vec![("stps".to_string(), 3)]
    );
    assert_eq!(
        w.write_group(&[batch(6..=8)]).unwrap().acks,
        vec![("stps".to_string(), 3)]
    );
    assert_eq!(
        w.write_group(&[batch(1..=3), batch(4..=5)]).unwrap().acks,
        vec![("stps".to_string(), 8)]
    );
    assert_eq!(
        metrics
            .dedup_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        metrics
            .readings_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    drop(w);
    // The contiguous seq survives a restart, and so does deduplication.
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics.clone()).unwrap();
    assert_eq!(w.contiguous("stps"), Some(8));
    assert_eq!(
        w.write_group(&[batch(7..=9)]).unwrap().acks,
        vec![("stps".to_string(), 9)]
    );
    assert_eq!(Reader::open(&db).unwrap().reading_count("stps").unwrap(), 9);
}

#[test]
fn readings_a_site_dropped_for_lack_of_disk_let_the_ack_move_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics.clone()).unwrap();
    let batch = |seqs: std::ops::RangeInclusive<u64>, dropped: Option<u64>| Incoming {
        site: "stps".into(),
        readings: seqs
            .map(|s| reading(s, "grid", at(10, s as u32), 1.0, s as f64, 0.0))
            .collect(),
        received: Instant::now(),
        dropped_through: dropped,
        unacked_from: None,
    };
    assert_eq!(
        w.write_group(&[batch(1..=3, None)]).unwrap().acks,
        vec![("stps".to_string(), 3)]
    );
    // 4..=6 were stored by nobody: the site pruned them; 7 and 8 arrived ahead, so wait.
    assert_eq!(
        w.write_group(&[batch(7..=8, None)]).unwrap().acks,
        vec![("stps".to_string(), 3)]
    );
    // The site says it dropped everything up to 6: the ack moves to 6, then over 7 and 8.
    assert_eq!(
        w.write_group(&[batch(9..=10, Some(6))]).unwrap().acks,
        vec![("stps".to_string(), 10)]
    );
    let lost = metrics
        .readings_lost_by_sites
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(lost, 3, "seqs 4, 5 and 6 are lost");
    // A stale claim below the ack changes nothing.
    assert_eq!(
        w.write_group(&[batch(11..=11, Some(2))]).unwrap().acks,
        vec![("stps".to_string(), 11)]
    );
    assert_eq!(
        metrics
            .readings_lost_by_sites
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    drop(w);
    let w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics).unwrap();
    assert_eq!(w.contiguous("stps"), Some(11));
}
