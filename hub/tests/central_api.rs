//! The central hub's HTTP API over a store with known periods: energy per slot and substation,
//! the incentive (public), the monthly report (bearer token), health and metrics.

mod central_support;
mod common;

use std::sync::Arc;

use central_support::*;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use socer::central::compute::{self, Model};
use socer::central::config;
use socer::central::status::Metrics;
use socer::central::store::{Incoming, Periods, Reader, Writer};

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

/// Grid readings every 15 minutes from 10:00 to 12:00 UTC, the counter rising `wh_per_h`.
fn grid(site: &str, export: bool, wh_per_h: f64) -> Incoming {
    grid_readings(site, 1, 100.0, at(10, 0), 8, export, wh_per_h)
}

#[test]
fn energy_incentive_and_report_answer_from_the_stored_periods() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("central.toml");
    let port = free_port();
    std::fs::write(
        &path,
        config_text(dir.path(), &format!("listen = \"127.0.0.1:{port}\"")),
    )
    .unwrap();
    let cfg = config::load(&path).unwrap();
    {
        // Iperal injects 2,000 Wh per hour, Domus withdraws 500 Wh per hour, both on S1, 10–12 UTC.
        let mut w = Writer::open(
            &cfg.storage_path,
            Periods { seconds: 3600 },
            35,
            Arc::new(Metrics::default()),
        )
        .unwrap();
        w.write_group(&[grid("iperal", true, 2000.0), grid("domus-1", false, 500.0)])
            .unwrap();
        let mut r = Reader::open(&cfg.storage_path).unwrap();
        let later = at(10, 0) + chrono::Duration::days(1);
        assert_eq!(
            compute::recompute_dirty(&mut r, &Model::new(&cfg), later, 10, false).unwrap(),
            3
        );
    }
    let (_rt, running) = start_central(cfg);
    let web = running.web_addr;

    // Two hourly slots; per slot shared = min(2,000 Wh, 500 Wh) = 500 Wh = 500,000 mWh.
    let e = json_get(
        web,
        "/api/v1/energy?from=2026-06-01T10:00:00Z&to=2026-06-01T12:00:00Z&step=1h",
    );
    let slots = e["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    for s in slots {
        assert_eq!(
            (
                s["injection_mwh"].as_u64(),
                s["withdrawal_mwh"].as_u64(),
                s["shared_mwh"].as_u64()
            ),
            (Some(2_000_000), Some(500_000), Some(500_000)),
            "{s}"
        );
        assert_eq!(s["substations"]["S1"]["shared_mwh"], 500_000);
        assert_eq!(s["estimated"], false);
    }
    // One 2-hour slot sums them; a slot beyond the data is flagged.
    let e = json_get(
        web,
        "/api/v1/energy?from=2026-06-01T10:00:00Z&to=2026-06-01T14:00:00Z&step=2h",
    );
    assert_eq!(e["slots"][0]["shared_mwh"], 1_000_000);
    assert_eq!(e["slots"][1]["estimated"], true);
    assert_eq!(
        http_get(web, "/api/v1/energy?from=yesterday&to=2026-06-02", None).0,
        400
    );

    // Incentive, public: 1 kWh shared in June; TIP for a 100 kW PV plant in Lombardia at Pz 100:
    // 80 + max(0, 180 − 100) = 160, capped at 120, + 10 = 130 €/MWh → 1 kWh × 0.130 €/kWh = 0.13 €.
    let inc = json_get(web, "/api/v1/incentive?month=2026-06");
    assert_eq!(inc["community"]["shared_mwh"], 1_000_000);
    assert_eq!(inc["community"]["incentive_ueur"], 130_000);
    assert!(
        inc.get("members").is_none(),
        "the public answer has no per-member data"
    );

    // The report needs the token; with it, CSV and JSON carry the members.
    assert_eq!(http_get(web, "/api/v1/report/2026-06.csv", None).0, 401);
    assert_eq!(
        http_get(web, "/api/v1/report/2026-06.csv", Some("wrong")).0,
        401
    );
    let (status, csv) = http_get(web, "/api/v1/report/2026-06.csv", Some(TOKEN));
    assert_eq!(status, 200, "{csv}");
    assert!(csv.starts_with("record,id,substation,"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("member,domus,")), "{csv}");
    let (status, body) = http_get(web, "/api/v1/report/2026-06.json", Some(TOKEN));
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let domus = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == "domus")
        .unwrap();
    assert_eq!(domus["shared_as_consumer_mwh"], 1_000_000);

    let (status, _) = http_get(web, "/", None);
    assert_eq!(status, 200);
    let m = http_get(web, "/metrics", None).1;
    assert!(
        m.contains("# TYPE socer_readings_stored_total counter"),
        "{m}"
    );
}
