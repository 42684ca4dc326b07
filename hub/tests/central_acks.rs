//! What an ack may cover, through the real store writer: only seqs stored or declared by the site
//! (no guess at first contact), never a seq claim or jump beyond what a site can number, counters
//! beyond physics quarantined without stalling the site, gaps reported for a re-send, and
//! retention that never deletes a reading before its month is closed.

mod central_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use central_support::*;
use chrono::{DateTime, Utc};
use socer::central::compute::{self, Model};
use socer::central::config;
use socer::central::plausible::MAX_SEQ;
use socer::central::status::{Metrics, Reject};
use socer::central::store::{Incoming, Periods, Reader, Writer, GAP_WAIT, RESEND_EVERY};

fn writer(dir: &std::path::Path) -> (Writer, Arc<Metrics>, std::path::PathBuf) {
    let db = dir.join("c.db");
    let metrics = Arc::new(Metrics::default());
    let w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics.clone()).unwrap();
    (w, metrics, db)
}

/// Grid readings of `site`, one a minute ending a minute ago, counter rising 10 Wh a minute.
fn batch(site: &str, seqs: std::ops::RangeInclusive<u64>) -> Incoming {
    let end = Utc::now() - chrono::Duration::minutes(1);
    let n = seqs.clone().count() as i64;
    Incoming {
        site: site.into(),
        readings: seqs
            .enumerate()
            .map(|(i, s)| {
                let ts = end - chrono::Duration::minutes(n - 1 - i as i64);
                reading(s, "grid", ts, 600.0, 10.0 * s as f64, 0.0)
            })
            .collect(),
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    }
}

fn acks(w: &mut Writer, b: Incoming) -> Vec<(String, u64)> {
    w.write_group(&[b]).unwrap().acks
}

fn count(m: &Metrics, site: &str, why: Reject) -> u64 {
    m.rejects()
        .get(&(site.to_string(), why))
        .copied()
        .unwrap_or(0)
}

#[test]
fn first_contact_acks_only_what_was_stored_or_declared() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, metrics, _) = writer(dir.path());
    // A site first seen at seq 5 (a rebuilt hub, or 1..4 still on their way): nothing below 5 is
    // acknowledged, since nothing says it was stored anywhere.
    assert_eq!(acks(&mut w, batch("stps", 5..=6)), vec![("stps".into(), 0)]);
    assert_eq!(acks(&mut w, batch("stps", 1..=4)), vec![("stps".into(), 6)]);

    // Another site says it holds nothing unacknowledged below 1001 (a hub acknowledged it before
    // this database existed): the ack moves over what it declared, counted.
    let mut b = batch("iperal", 1001..=1003);
    b.unacked_from = Some(1001);
    assert_eq!(acks(&mut w, b), vec![("iperal".into(), 1003)]);
    assert_eq!(
        metrics.readings_acked_not_held.load(Ordering::Relaxed),
        1000
    );

    // A site that still holds 1..: its later batches are held until the first arrives.
    let mut b = batch("domus-1", 11..=12);
    b.unacked_from = Some(1);
    assert_eq!(acks(&mut w, b), vec![("domus-1".into(), 0)]);
    let mut b = batch("domus-1", 1..=10);
    b.unacked_from = Some(1);
    assert_eq!(acks(&mut w, b), vec![("domus-1".into(), 12)]);
    assert_eq!(
        metrics.readings_acked_not_held.load(Ordering::Relaxed),
        1000
    );
}

#[test]
fn seq_claims_and_jumps_beyond_what_a_site_can_number_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, metrics, db) = writer(dir.path());
    assert_eq!(acks(&mut w, batch("stps", 1..=3)), vec![("stps".into(), 3)]);
    let hostile =
        |seqs: std::ops::RangeInclusive<u64>, dropped: Option<u64>, unacked: Option<u64>| {
            let mut b = batch("stps", seqs);
            b.dropped_through = dropped;
            b.unacked_from = unacked;
            b
        };
    // The contiguous reading is two minutes old: about 3.7 million seqs are possible since.
    for b in [
        hostile(MAX_SEQ - 1..=MAX_SEQ, None, None),
        hostile(1 << 40..=(1 << 40) + 1, None, None),
        hostile(50_000_000..=50_000_001, Some(49_999_999), None),
        hostile(20_000_000..=20_000_000, None, Some(20_000_000)),
        hostile(10..=11, Some(u64::MAX), None),
        hostile(10..=11, None, Some(u64::MAX)),
    ] {
        let c = w.write_group(&[b]).unwrap();
        assert!(c.acks.is_empty(), "a refused batch publishes no ack: {c:?}");
    }
    assert_eq!(count(&metrics, "stps", Reject::SeqJump), 6);
    assert_eq!(w.contiguous("stps"), Some(3));
    assert_eq!(Reader::open(&db).unwrap().reading_count("stps").unwrap(), 3);
    assert_eq!(metrics.readings_lost_by_sites.load(Ordering::Relaxed), 0);
    // The site's honest batches go on being acknowledged.
    assert_eq!(acks(&mut w, batch("stps", 4..=6)), vec![("stps".into(), 6)]);
}

#[test]
fn implausible_counters_are_quarantined_and_their_seqs_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let (w, metrics, db) = writer(dir.path());
    let mut limits = socer::central::store::Limits::default();
    limits
        .max_power_w
        .insert(("stps".into(), "grid".into()), 6000.0);
    let mut w = w.with_limits(limits.clone());
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let at = |min: i64| t0 + chrono::Duration::minutes(min);
    let one = |seq: u64, ts: DateTime<Utc>, imp: f64, exp: f64| Incoming {
        site: "stps".into(),
        readings: vec![reading(seq, "grid", ts, 600.0, imp, exp)],
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    };
    let b = |seq, min, imp| one(seq, at(min), imp, 0.0);
    assert_eq!(acks(&mut w, b(1, 0, 5000.0)), vec![("stps".into(), 1)]);
    // 1e15 Wh, a negative counter, NaN-free JSON cannot carry: each value is dropped, the reading
    // and its seq kept, so the ack goes on.
    assert_eq!(acks(&mut w, b(2, 1, 1e15)), vec![("stps".into(), 2)]);
    assert_eq!(acks(&mut w, b(3, 2, -5.0)), vec![("stps".into(), 3)]);
    // A 6 kW meter cannot count 2 kWh in three minutes (6 kW × 1.25 × 3 min + a 1 kWh step).
    assert_eq!(acks(&mut w, b(4, 3, 7000.0)), vec![("stps".into(), 4)]);
    // Back on its course: a decrease (here from the refused value) is not judged.
    assert_eq!(acks(&mut w, b(5, 4, 5100.0)), vec![("stps".into(), 5)]);
    assert_eq!(count(&metrics, "stps", Reject::CounterInvalid), 2);
    assert_eq!(count(&metrics, "stps", Reject::CounterRise), 1);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: Vec<(i64, Option<f64>)> = conn
        .prepare("SELECT seq, e_imp_wh FROM reading ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        stored,
        vec![
            (1, Some(5000.0)),
            (2, None),
            (3, None),
            (4, None),
            (5, Some(5100.0))
        ]
    );
    // Across a restart the prior is the latest stored counter.
    drop(w);
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics.clone())
        .unwrap()
        .with_limits(limits);
    assert_eq!(acks(&mut w, b(6, 5, 1e9)), vec![("stps".into(), 6)]);
    assert_eq!(count(&metrics, "stps", Reject::CounterRise), 2);
    assert_eq!(acks(&mut w, b(7, 6, 5110.0)), vec![("stps".into(), 7)]);
    // A late reading is judged against the sample before it in time, not the newest (from
    // which this would be a decrease).
    assert_eq!(
        acks(&mut w, one(8, at(-60), 4000.0, 0.0)),
        vec![("stps".into(), 8)]
    );
    assert_eq!(
        acks(&mut w, one(9, at(-30), 1_004_000.0, 0.0)),
        vec![("stps".into(), 9)]
    );
    assert_eq!(count(&metrics, "stps", Reject::CounterRise), 3);
    // A meter replaced by one with a higher counter: its first sample is refused for the rise,
    // and the new course is believed from the next.
    assert_eq!(
        acks(&mut w, b(10, 10, 900_000.0)),
        vec![("stps".into(), 10)]
    );
    assert_eq!(
        acks(&mut w, b(11, 11, 900_010.0)),
        vec![("stps".into(), 11)]
    );
    assert_eq!(count(&metrics, "stps", Reject::CounterRise), 4);
    assert_eq!(count(&metrics, "stps", Reject::CounterInvalid), 2);
    let imp = |seq: i64| -> Option<f64> {
        conn.query_row("SELECT e_imp_wh FROM reading WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(
        (imp(6), imp(7), imp(8), imp(9), imp(10), imp(11)),
        (
            None,
            Some(5110.0),
            Some(4000.0),
            None,
            None,
            Some(900_010.0)
        )
    );
}

#[test]
fn a_gap_that_does_not_fill_asks_the_site_to_resend_once_in_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, metrics, _) = writer(dir.path());
    acks(&mut w, batch("stps", 1..=3));
    acks(&mut w, batch("stps", 6..=8));
    let t = Instant::now();
    assert!(w.gaps_due(t).is_empty(), "just opened");
    assert!(w.gaps_due(t + GAP_WAIT / 2).is_empty());
    assert_eq!(w.gaps_due(t + GAP_WAIT), vec![("stps".into(), 3)]);
    assert!(
        w.gaps_due(t + GAP_WAIT + Duration::from_secs(1)).is_empty(),
        "asked"
    );
    assert_eq!(
        w.gaps_due(t + GAP_WAIT + RESEND_EVERY),
        vec![("stps".into(), 3)]
    );
    assert_eq!(metrics.resend_hints.load(Ordering::Relaxed), 2);
    assert_eq!(acks(&mut w, batch("stps", 4..=5)), vec![("stps".into(), 8)]);
    assert!(w.gaps_due(t + Duration::from_secs(3600)).is_empty());
}

#[test]
fn a_site_back_after_90_days_keeps_every_reading_until_its_month_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    std::fs::write(&path, config_text(dir.path(), "listen = \"127.0.0.1:1\"")).unwrap();
    let cfg = config::load(&path).unwrap();
    let model = Model::new(&cfg);
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(&cfg.storage_path, Periods { seconds: 3600 }, 35, metrics).unwrap();
    let now = Utc::now();
    let back = now - chrono::Duration::days(90);
    // Iperal is current; Domus comes back with 12 hours of readings taken 90 days ago.
    let c = w
        .write_group(&[grid_readings(
            "iperal",
            1,
            0.0,
            now - chrono::Duration::hours(2),
            4,
            false,
            400.0,
        )])
        .unwrap();
    assert_eq!(c.acks, vec![("iperal".to_string(), 5)]);
    let c = w
        .write_group(&[grid_readings("domus-1", 1, 1000.0, back, 48, false, 400.0)])
        .unwrap();
    assert_eq!(c.acks, vec![("domus-1".to_string(), 49)]);
    let c = w
        .write_group(&[grid_readings(
            "domus-1",
            50,
            6000.0,
            now - chrono::Duration::hours(1),
            2,
            false,
            400.0,
        )])
        .unwrap();
    assert_eq!(c.acks, vec![("domus-1".to_string(), 52)]);
    let mut r = Reader::open(&cfg.storage_path).unwrap();
    // Retention runs right after the write that acked them: nothing goes.
    assert_eq!(w.prune(now).unwrap(), (0, 0));
    assert_eq!(r.reading_count("domus-1").unwrap(), 52);
    // The periods are computed (the month is no longer dirty), still nothing goes: the readings
    // were received today.
    for _ in 0..100 {
        if compute::recompute_dirty(&mut r, &model, now, 500, false).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(w.prune(now).unwrap(), (0, 0));
    let hours = r
        .substation_periods(
            back.timestamp() - 3600,
            (back + chrono::Duration::hours(12)).timestamp(),
        )
        .unwrap();
    assert!(hours.len() >= 12, "{hours:?}");
    assert!(hours.iter().filter(|h| h.withdrawal_mwh > 0).count() >= 11);
    // 36 days later the old readings were received over 35 days ago and their month is closed;
    // today's month still has a period to compute (the open hour), so today's readings stay.
    let later = now + chrono::Duration::days(36);
    let (raw, _) = w.prune(later).unwrap();
    assert_eq!(raw, 49);
    assert_eq!(r.reading_count("domus-1").unwrap(), 3);
    assert_eq!(r.reading_count("iperal").unwrap(), 5);
}
