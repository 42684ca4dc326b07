//! Hostile batches that verify: sealed with the site's own key (as a buggy site or a stolen key
//! would), published with `mosquitto_pub` through the hub's embedded broker. Each class is refused
//! or quarantined, counted by reason and site, never moves the ack, and the site's later honest
//! batches are still acknowledged. Also: no guessing at first contact, a gap asks the site to
//! re-send, and a site back after 90 days keeps its readings.

mod central_support;
mod common;

use std::path::Path;

use central_support::*;
use chrono::{DateTime, Utc};
use common::*;
use socer::central::{self, config};
use socer::wire::{self, Ack, Batch, Topics, WireReading};

struct Hub {
    _rt: tokio::runtime::Runtime,
    running: central::Running,
    port: u16,
    db: std::path::PathBuf,
}

fn start_hub(dir: &Path) -> Hub {
    let port = free_port();
    let broker =
        format!("listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\"");
    let path = dir.join("central.toml");
    std::fs::write(&path, config_text(dir, &broker)).unwrap();
    let cfg = config::load(&path).unwrap();
    let db = cfg.storage_path.clone();
    let (rt, running) = start_central(cfg);
    Hub {
        _rt: rt,
        running,
        port,
        db,
    }
}

impl Hub {
    fn acked(&self, site_id: &str) -> u64 {
        site(&json_get(self.running.web_addr, "/api/v1/sites"), site_id)["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    }
    fn count(&self, site: &str, reason: &str) -> f64 {
        metric(
            &http_get(self.running.web_addr, "/metrics", None).1,
            &format!("socer_rejected_total{{site=\"{site}\",reason=\"{reason}\"}}"),
        )
    }
    fn stored(&self, site: &str) -> u64 {
        self.running.hub.reader().reading_count(site).unwrap()
    }
    /// Publish as domus-1 (the embedded broker lets any account publish anywhere: the MAC and
    /// these rules are the gate).
    fn publish(&self, site: &str, batch: &Batch, dir: &Path) {
        let key_hex = if site == "iperal" {
            KEY_IPERAL
        } else {
            KEY_DOMUS
        };
        let topic = Topics::new("socer").readings(site);
        let bytes = wire::seal(&key(key_hex), site, &topic, batch);
        mosquitto_pub(self.port, "domus-1", PW_DOMUS, &topic, &bytes, dir);
    }
    fn retained_ack(&self, site: &str, key_hex: &str) -> Ack {
        let topic = Topics::new("socer").ack(site);
        let bytes = mosquitto_sub_one(self.port, "domus-1", PW_DOMUS, &topic);
        let env = wire::open_unverified(&bytes).unwrap();
        wire::open(&key(key_hex), site, &topic, &env).unwrap()
    }
}

/// A batch of grid readings, one a second ending now, counters rising 1 Wh a second.
fn honest(site: &str, seqs: std::ops::RangeInclusive<u64>) -> Batch {
    let now = Utc::now();
    let n = seqs.clone().count() as i64;
    Batch {
        site: site.into(),
        sent: now,
        readings: seqs
            .enumerate()
            .map(|(i, s)| {
                let ts = now - chrono::Duration::seconds(n - i as i64);
                reading(s, "grid", ts, 500.0, 1000.0 + s as f64, 0.0)
            })
            .collect(),
        dropped_through: None,
        unacked_from: None,
    }
}

fn with(mut b: Batch, f: impl FnOnce(&mut Batch)) -> Batch {
    f(&mut b);
    b
}

fn at(b: &mut Batch, i: usize) -> &mut WireReading {
    &mut b.readings[i]
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn verified_but_impossible_batches_are_refused_and_never_move_the_ack() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path());
    let d = dir.path();
    assert!(wait_until(10, || {
        hub.publish("domus-1", &honest("domus-1", 1..=3), d);
        wait_until(1, || hub.acked("domus-1") == 3)
    }));

    // (batch, reason): each verifies, each is impossible as a whole.
    let cases: Vec<(Batch, &str)> = vec![
        (
            with(honest("domus-1", 4..=5), |b| {
                b.dropped_through = Some(u64::MAX)
            }),
            "seq_claim",
        ),
        (
            with(honest("domus-1", 4..=5), |b| b.dropped_through = Some(5)),
            "seq_claim",
        ),
        (
            with(honest("domus-1", 4..=4), |b| b.readings.clear()),
            "ok-empty",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                b.readings.clear();
                b.dropped_through = Some(1 << 40)
            }),
            "seq_claim",
        ),
        (
            with(honest("domus-1", 4..=5), |b| b.unacked_from = Some(6)),
            "seq_claim",
        ),
        (
            with(honest("domus-1", 4..=5), |b| b.unacked_from = Some(0)),
            "seq_claim",
        ),
        (
            with(honest("domus-1", 4..=6), |b| at(b, 2).seq = 5),
            "seq_order",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                at(b, 0).seq = 9;
                at(b, 1).seq = 8
            }),
            "seq_order",
        ),
        (
            with(honest("domus-1", 4..=4), |b| at(b, 0).seq = 0),
            "seq_range",
        ),
        (
            with(honest("domus-1", 4..=4), |b| at(b, 0).seq = u64::MAX),
            "seq_range",
        ),
        (
            with(honest("domus-1", 4..=4), |b| at(b, 0).seq = 1 << 60),
            "seq_range",
        ),
        // Within 2^53 but far more than a site can number since its last reading seconds ago.
        (
            with(honest("domus-1", 4..=4), |b| at(b, 0).seq = 1 << 45),
            "seq_jump",
        ),
        (
            with(honest("domus-1", 4..=4), |b| at(b, 0).seq = 900_000_000),
            "seq_jump",
        ),
        (
            with(honest("domus-1", 4..=4), |b| {
                at(b, 0).seq = 1 << 50;
                b.unacked_from = Some(1 << 50)
            }),
            "seq_jump",
        ),
        (
            with(honest("domus-1", 4..=4), |b| {
                at(b, 0).seq = 50_000_001;
                b.dropped_through = Some(50_000_000)
            }),
            "seq_jump",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                at(b, 1).ts = ts("1970-01-01T00:00:00Z")
            }),
            "too_old",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                at(b, 0).ts = ts("2019-06-30T12:00:00Z")
            }),
            "too_old",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                b.sent = ts("2001-01-01T00:00:00Z")
            }),
            "too_old",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                at(b, 1).ts = Utc::now() + chrono::Duration::days(400)
            }),
            "far_future",
        ),
        (
            with(honest("domus-1", 4..=5), |b| {
                at(b, 0).meter = "x".repeat(300)
            }),
            "meter_name",
        ),
        (
            with(honest("domus-1", 4..=5), |b| at(b, 0).meter = String::new()),
            "meter_name",
        ),
    ];
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for (b, reason) in &cases {
        hub.publish("domus-1", b, d);
        if *reason == "ok-empty" {
            continue;
        }
        *expected.entry(reason).or_default() += 1.0;
        let want = expected[reason];
        assert!(
            wait_until(10, || hub.count("domus-1", reason) == want),
            "{reason}: counted {} of {want}",
            hub.count("domus-1", reason)
        );
    }
    assert_eq!(hub.stored("domus-1"), 3, "nothing refused was stored");
    assert_eq!(hub.acked("domus-1"), 3);
    assert_eq!(hub.retained_ack("domus-1", KEY_DOMUS).seq, 3);
    assert_eq!(
        metric(
            &http_get(hub.running.web_addr, "/metrics", None).1,
            "socer_readings_lost_by_sites_total"
        ),
        0.0
    );

    // The site's honest batches still go through.
    hub.publish("domus-1", &honest("domus-1", 4..=5), d);
    assert!(wait_until(10, || hub.acked("domus-1") == 5));
    assert!(wait_until(10, || hub
        .retained_ack("domus-1", KEY_DOMUS)
        .seq
        == 5));

    // Impossible values inside otherwise valid readings: the value is quarantined (not stored,
    // never counted as energy), the reading and its seq are kept so the site is not stalled.
    let quarantined = with(honest("domus-1", 6..=9), |b| {
        at(b, 0).values.e_imp_wh = Some(1e15);
        at(b, 1).values.e_exp_wh = Some(-42.0);
        at(b, 2).values.e_imp_wh = Some(1e11); // 100 GWh in a second
        at(b, 3).values.p_w = Some(-9e9);
    });
    hub.publish("domus-1", &quarantined, d);
    assert!(wait_until(10, || hub.acked("domus-1") == 9));
    assert_eq!(hub.count("domus-1", "counter_invalid"), 2.0);
    assert_eq!(hub.count("domus-1", "counter_rise"), 1.0);
    assert_eq!(hub.count("domus-1", "value_bounds"), 1.0);
    let conn = rusqlite::Connection::open(&hub.db).unwrap();
    type Row = (i64, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT seq, e_imp_wh, e_exp_wh, p_w FROM reading JOIN site ON site.id = reading.site_id
             WHERE site.name = 'domus-1' AND seq >= 6 ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            (6, None, Some(0.0), Some(500.0)),
            (7, Some(1007.0), None, Some(500.0)),
            (8, None, Some(0.0), Some(500.0)),
            (9, Some(1009.0), Some(0.0), None),
        ]
    );
    hub.publish("domus-1", &honest("domus-1", 10..=11), d);
    assert!(wait_until(10, || hub.acked("domus-1") == 11));
    assert_eq!(hub.stored("domus-1"), 11);
}

#[test]
fn first_contact_acks_nothing_the_site_did_not_declare_and_a_gap_asks_for_a_resend() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path());
    let d = dir.path();
    // Iperal is first heard at seq 10 (1..9 are delayed, or this database is new): nothing is
    // acknowledged that was not stored.
    assert!(wait_until(10, || {
        hub.publish("iperal", &honest("iperal", 10..=11), d);
        wait_until(1, || hub.stored("iperal") == 2)
    }));
    assert_eq!(hub.acked("iperal"), 0);
    // The gap does not fill: within seconds the ack asks for a re-send from seq 1.
    assert!(wait_until(15, || hub.retained_ack("iperal", KEY_IPERAL)
        == Ack {
            seq: 0,
            resend_from: Some(1)
        }));
    hub.publish("iperal", &honest("iperal", 1..=9), d);
    assert!(wait_until(10, || hub.acked("iperal") == 11));
    assert!(wait_until(10, || hub.retained_ack("iperal", KEY_IPERAL)
        == Ack {
            seq: 11,
            resend_from: None
        }));

    // Domus says everything below 501 was acknowledged before (by a hub whose database was
    // rebuilt): the ack moves over what it declared.
    let b = with(honest("domus-1", 501..=503), |b| b.unacked_from = Some(501));
    assert!(wait_until(10, || {
        hub.publish("domus-1", &b, d);
        wait_until(1, || hub.acked("domus-1") == 503)
    }));
    assert_eq!(
        metric(
            &http_get(hub.running.web_addr, "/metrics", None).1,
            "socer_readings_acked_not_held_total"
        ),
        500.0
    );
}

#[test]
fn a_site_back_after_90_days_keeps_every_reading_it_had_acknowledged() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path());
    let d = dir.path();
    // 90 days ago, a reading every 15 minutes for 6 hours; then today's.
    let back = Utc::now() - chrono::Duration::days(90);
    let old = Batch {
        site: "domus-1".into(),
        sent: Utc::now(),
        readings: (0..24u64)
            .map(|i| {
                let t = back + chrono::Duration::minutes(15 * i as i64);
                reading(i + 1, "grid", t, 400.0, 5000.0 + 100.0 * i as f64, 0.0)
            })
            .collect(),
        dropped_through: None,
        unacked_from: Some(1),
    };
    assert!(wait_until(10, || {
        hub.publish("domus-1", &old, d);
        wait_until(1, || hub.acked("domus-1") == 24)
    }));
    // The store prunes right after a write: the next write shows whether it took anything.
    let today = with(honest("domus-1", 25..=26), |b| {
        for r in &mut b.readings {
            r.values.e_imp_wh = r.values.e_imp_wh.map(|e| e + 10_000.0);
        }
    });
    hub.publish("domus-1", &today, d);
    assert!(wait_until(10, || hub.acked("domus-1") == 26));
    hub.publish("domus-1", &honest("domus-1", 27..=27), d);
    assert!(wait_until(10, || hub.acked("domus-1") == 27));
    assert_eq!(hub.stored("domus-1"), 27);
    let conn = rusqlite::Connection::open(&hub.db).unwrap();
    let minutes: i64 = conn
        .query_row(
            "SELECT count(*) FROM minute WHERE minute < ?1",
            [(Utc::now() - chrono::Duration::days(80)).timestamp() / 60],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        minutes, 24,
        "the per-minute samples of 90 days ago are kept too"
    );
}
