//! State written by an earlier socer opens after an upgrade. The hub's store changed shape once
//! (`site.contiguous_ts_ms`, added by 90cd7fd on 2026-12-01 and migrated at open): a store with the
//! schema of 7d0eb1c (its `SCHEMA` text copied below from `git show 7d0eb1c:hub/src/central/store.rs`)
//! and the rows that code wrote keeps its readings and acks, and takes new batches. The site's
//! outbox schema has not changed since 54c4c5a (2026-11-26), so main's outboxes are this tree's;
//! `packaging/check-install` reopens one written by the installed package after `dpkg -i`.

mod central_support;

use std::sync::Arc;
use std::time::Instant;

use central_support::*;
use chrono::Utc;
use socer::central::status::Metrics;
use socer::central::store::{Incoming, Periods, Reader, Writer};

/// The hub's store schema at 7d0eb1c (before `contiguous_ts_ms`), verbatim.
const SCHEMA_7D0EB1C: &str = "
CREATE TABLE IF NOT EXISTS site (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  contiguous INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meter (
  id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, name TEXT NOT NULL,
  UNIQUE (site_id, name));
CREATE TABLE IF NOT EXISTS reading (
  site_id INTEGER NOT NULL, seq INTEGER NOT NULL, meter_id INTEGER NOT NULL,
  ts_ms INTEGER NOT NULL, p_w REAL, e_imp_wh REAL, e_exp_wh REAL, quality INTEGER NOT NULL,
  extra TEXT, received_ms INTEGER NOT NULL,
  PRIMARY KEY (site_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_ts ON reading (ts_ms);
CREATE TABLE IF NOT EXISTS minute (
  meter_id INTEGER NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
  p_sum REAL NOT NULL, p_n INTEGER NOT NULL, p_min REAL, p_max REAL,
  first_ms INTEGER, imp_first REAL, exp_first REAL,
  last_ms INTEGER, imp_last REAL, exp_last REAL,
  PRIMARY KEY (meter_id, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty_period (start_s INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS period_meter (
  start_s INTEGER NOT NULL, meter_id INTEGER NOT NULL,
  imp_mwh INTEGER NOT NULL, exp_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, meter_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS period_substation (
  start_s INTEGER NOT NULL, substation TEXT NOT NULL,
  injection_mwh INTEGER NOT NULL, eligible_injection_mwh INTEGER NOT NULL,
  withdrawal_mwh INTEGER NOT NULL, shared_mwh INTEGER NOT NULL,
  production_mwh INTEGER NOT NULL, consumption_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, substation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS period_pod (
  start_s INTEGER NOT NULL, pod TEXT NOT NULL, member TEXT NOT NULL, substation TEXT NOT NULL,
  injection_mwh INTEGER NOT NULL, withdrawal_mwh INTEGER NOT NULL, eligible INTEGER NOT NULL,
  shared_consumer_mwh INTEGER NOT NULL, shared_producer_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, pod)) WITHOUT ROWID;
";

/// A store as 7d0eb1c left it: site domus-1 with readings 1..=n of meter grid (one a minute,
/// ending `n + 1` minutes ago, the import counter at 10 Wh × seq), acknowledged through n, with
/// the minute samples that code kept beside them.
fn old_store(path: &std::path::Path, n: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(SCHEMA_7D0EB1C).unwrap();
    conn.execute(
        "INSERT INTO site (id, name, contiguous) VALUES (1, 'domus-1', ?1)",
        [n as i64],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO meter (id, site_id, name) VALUES (1, 1, 'grid')",
        [],
    )
    .unwrap();
    let now_ms = Utc::now().timestamp_millis();
    let start_ms = now_ms - (n as i64 + 1) * 60_000;
    for seq in 1..=n {
        let ts = start_ms + (seq as i64 - 1) * 60_000;
        conn.execute(
            "INSERT INTO reading (site_id, seq, meter_id, ts_ms, p_w, e_imp_wh, e_exp_wh, quality, \
             extra, received_ms) VALUES (1, ?1, 1, ?2, 600.0, ?3, 0.0, 0, NULL, ?4)",
            rusqlite::params![seq as i64, ts, 10.0 * seq as f64, now_ms],
        )
        .unwrap();
        let minute = ts.div_euclid(60_000);
        conn.execute(
            "INSERT INTO minute (meter_id, minute, n, p_sum, p_n, p_min, p_max, first_ms, \
             imp_first, exp_first, last_ms, imp_last, exp_last) \
             VALUES (1, ?1, 1, 600.0, 1, 600.0, 600.0, ?2, ?3, 0.0, ?2, ?3, 0.0)",
            rusqlite::params![minute, ts, 10.0 * seq as f64],
        )
        .unwrap();
    }
}

#[test]
fn a_hub_store_of_the_previous_schema_keeps_its_readings_and_acks_and_takes_new_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("central.db");
    old_store(&db, 5);

    let reader = Reader::open(&db).expect("the old store opens");
    assert_eq!(reader.contiguous().unwrap().get("domus-1"), Some(&5));
    assert_eq!(reader.reading_count("domus-1").unwrap(), 5);
    drop(reader);

    // The writer (what `socer central` starts with) reads the old rows and goes on from them.
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics).expect("writer opens");
    let ts = Utc::now() - chrono::Duration::seconds(30);
    let next = Incoming {
        site: "domus-1".into(),
        readings: vec![reading(6, "grid", ts, 600.0, 60.0, 0.0)],
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    };
    let committed = w.write_group(&[next]).expect("a new batch is stored");
    assert_eq!(committed.acks, vec![("domus-1".to_string(), 6)]);
    drop(w);

    let reader = Reader::open(&db).unwrap();
    assert_eq!(reader.contiguous().unwrap().get("domus-1"), Some(&6));
    assert_eq!(reader.reading_count("domus-1").unwrap(), 6);
    // The migration added the column the current code keeps the contiguous reading's time in.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let has_ts: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('site') WHERE name = 'contiguous_ts_ms'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(has_ts, 1);
}

#[test]
fn a_seq_the_old_store_already_holds_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("central.db");
    old_store(&db, 3);
    let metrics = Arc::new(Metrics::default());
    let mut w = Writer::open(&db, Periods { seconds: 3600 }, 35, metrics).unwrap();
    // A site that never saw the old hub's ack sends seq 3 again after the upgrade.
    let ts = Utc::now() - chrono::Duration::minutes(2);
    let again = Incoming {
        site: "domus-1".into(),
        readings: vec![reading(3, "grid", ts, 600.0, 30.0, 0.0)],
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    };
    w.write_group(&[again]).unwrap();
    drop(w);
    let reader = Reader::open(&db).unwrap();
    assert_eq!(reader.reading_count("domus-1").unwrap(), 3);
    assert_eq!(reader.contiguous().unwrap().get("domus-1"), Some(&3));
}
