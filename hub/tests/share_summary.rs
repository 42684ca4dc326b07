//! The building's share of the month's shared energy through a real broker: the hub seals a
//! retained `site/{site}/summary` per site, a client we did not write (`mosquitto_sub`) reads it
//! and it verifies with the site's key, the site's listener keeps it and refuses a forged one;
//! and `GET /api/v1/energy?step=1d` answers in local days (23 and 25 hours at the DST changes).

mod central_support;
mod common;

use std::path::Path;
use std::sync::Arc;

use central_support::*;
use chrono::{DateTime, Utc};
use common::*;
use socer::central::compute::{self, Model};
use socer::central::status::Metrics;
use socer::central::store::{Incoming, Periods, Reader, Writer};
use socer::central::{config, incentive, summary};
use socer::site::config::parse_mqtt_url;
use socer::site::signal;
use socer::wire::{self, SiteSummary, Topics};

/// Grid readings every 15 minutes for `hours` from `from`, the counter rising `wh_per_h`.
fn grid(site: &str, export: bool, wh_per_h: f64, from: DateTime<Utc>, hours: u32) -> Incoming {
    grid_readings(site, 1, 100.0, from, hours * 4, export, wh_per_h)
}

/// A store where Iperal injects 2,000 Wh/h and Domus withdraws 500 Wh/h from `from` for `hours`,
/// with its periods computed; returns the loaded config.
fn stored(dir: &Path, broker: &str, from: DateTime<Utc>, hours: u32) -> config::CentralConfig {
    let path = dir.join("central.toml");
    std::fs::write(&path, config_text(dir, broker)).unwrap();
    let cfg = config::load(&path).unwrap();
    let mut w = Writer::open(
        &cfg.storage_path,
        Periods { seconds: 3600 },
        3650,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    w.write_group(&[
        grid("iperal", true, 2000.0, from, hours),
        grid("domus-1", false, 500.0, from, hours),
    ])
    .unwrap();
    let mut r = Reader::open(&cfg.storage_path).unwrap();
    let later = from + chrono::Duration::hours(i64::from(hours) + 48);
    let n = compute::recompute_dirty(&mut r, &Model::new(&cfg), later, 500, false).unwrap();
    assert!(n >= hours as usize, "computed {n} periods");
    cfg
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn the_hub_seals_each_site_s_monthly_share_and_the_site_refuses_a_forged_one() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Two hours at the start of this month (Europe/Rome): 1 kWh shared in all.
    let now = Utc::now();
    let month = summary::month_of(now, &chrono_tz::Europe::Rome);
    let (y, m) = socer::central::report::parse_month(&month).unwrap();
    let first = incentive::month_range(y, m, &chrono_tz::Europe::Rome)
        .unwrap()
        .from;
    let cfg = stored(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
        ),
        first,
        2,
    );
    let (rt, running) = start_central(cfg);
    let topics = Topics::new("socer");

    // A client we did not write reads the retained summary; it opens with Domus's key only.
    let bytes = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &topics.summary("domus-1"));
    let env = wire::open_unverified(&bytes).unwrap();
    let topic = topics.summary("domus-1");
    assert!(wire::open::<SiteSummary>(&key(KEY_IPERAL), "domus-1", &topic, &env).is_err());
    let s: SiteSummary = wire::open(&key(KEY_DOMUS), "domus-1", &topic, &env).unwrap();
    assert_eq!(s.month, month);
    assert_eq!(s.pods, vec!["P-DOMUS".to_string()]);
    assert_eq!(
        (s.shared_as_consumer_kwh, s.shared_as_producer_kwh),
        (1.0, 0.0)
    );
    assert_eq!(
        (s.community_shared_kwh, s.withdrawal_kwh, s.injection_kwh),
        (1.0, 1.0, 0.0)
    );
    // 1 kWh at 130 €/MWh (see central_api): 0.13 € apportioned to the only consumer.
    assert_eq!(s.incentive_as_consumer_eur, Some(0.13));
    // Two full hours, and the hour the last reading opens (with nothing in it yet).
    assert_eq!(s.periods, 3);
    let bytes = mosquitto_sub_one(port, "iperal", "pw-iperal", &topics.summary("iperal"));
    let env = wire::open_unverified(&bytes).unwrap();
    let p: SiteSummary =
        wire::open(&key(KEY_IPERAL), "iperal", &topics.summary("iperal"), &env).unwrap();
    assert_eq!((p.shared_as_producer_kwh, p.injection_kwh), (1.0, 4.0));

    // The site's listener keeps it.
    let shared = signal::SharedSignal::default();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listen = signal::ListenConfig {
        broker: parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        ca_pem: None,
        username: Some("domus-1".into()),
        password: Some(PW_DOMUS.into()),
        community: "socer".into(),
        site: "domus-1".into(),
        key: key(KEY_DOMUS),
        hub_public_key: None,
    };
    let _enter = rt.enter();
    let _task = signal::spawn(listen, shared.clone(), stop_rx);
    assert!(wait_until(10, || shared.lock().unwrap().summary.is_some()));
    assert_eq!(shared.lock().unwrap().summary.as_ref(), Some(&s));

    // Another site (the broker has no per-topic ACL) forges a bigger share: refused and counted.
    let forged = SiteSummary {
        shared_as_consumer_kwh: 999.0,
        ..s.clone()
    };
    let sealed_wrong = wire::seal(&key(KEY_IPERAL), "domus-1", &topic, &forged);
    mosquitto_pub(
        port,
        "iperal",
        "pw-iperal",
        &topic,
        &sealed_wrong,
        dir.path(),
    );
    mosquitto_pub(
        port,
        "iperal",
        "pw-iperal",
        &topic,
        b"{not an envelope",
        dir.path(),
    );
    assert!(wait_until(10, || shared.lock().unwrap().summaries_refused >= 2));
    assert_eq!(shared.lock().unwrap().summary.as_ref(), Some(&s));
    assert!(
        running
            .hub
            .metrics
            .summaries_published
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[test]
fn energy_per_day_follows_rome_s_23_and_25_hour_days() {
    for (from, day, hours, next) in [
        // Summer time begins on 29 March 2026, ends on 25 October 2026.
        ("2026-03-28T23:00:00Z", "2026-03-29", 23, "2026-03-30"),
        ("2026-10-24T22:00:00Z", "2026-10-25", 25, "2026-10-26"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Data over the whole local day and the next one.
        let cfg = stored(
            dir.path(),
            &format!("listen = \"127.0.0.1:{port}\""),
            utc(from),
            hours + 24,
        );
        let (_rt, running) = start_central(cfg);
        let after = chrono::NaiveDate::parse_from_str(next, "%Y-%m-%d")
            .unwrap()
            .succ_opt()
            .unwrap();
        let e = json_get(
            running.web_addr,
            &format!("/api/v1/energy?from={day}&to={after}&step=1d"),
        );
        assert_eq!(e["local_days"], true);
        let slots = e["slots"].as_array().unwrap();
        assert_eq!(slots.len(), 2, "{e}");
        assert_eq!(slots[0]["start"], from);
        assert_eq!(slots[0]["seconds"], hours as u64 * 3600);
        assert_eq!(slots[1]["seconds"], 86_400);
        // 500 Wh shared per hour.
        assert_eq!(slots[0]["shared_mwh"], u64::from(hours) * 500_000, "{e}");
        assert_eq!(slots[1]["shared_mwh"], 24 * 500_000, "{e}");
        assert_eq!(slots[0]["periods"], hours);
        assert_eq!(slots[0]["estimated"], false, "{e}");
    }
}
