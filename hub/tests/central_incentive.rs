//! The incentive and reports through the hub's real HTTP API: business "no data" is a figure
//! with a flag (a plant without data, an hour the price file does not cover), never a 500; a
//! month or year out of range is 400; quarter-hour prices; the yearly figures; and the
//! `socer check` warning naming the uncovered hours.

mod central_support;
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use central_support::*;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use socer::central::compute::{self, Model};
use socer::central::config;
use socer::central::status::Metrics;
use socer::central::store::{Periods, Reader, Writer};

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

/// A member and plant on a POD that never sends a reading.
const SCHOOL: &str = r#"
[[member]]
id = "scuola"
kind = "public"
pod = "P-SCUOLA"
substation = "S2"

[[plant]]
id = "pv-scuola"
pod = "P-SCUOLA"
peak_kw = 50.0
commissioned = "2024-01-01"
"#;

/// The test community with `prices` as its `[prices]` body, `extra` appended and `period_minutes`;
/// Iperal injects 2,000 Wh/h and Domus withdraws 500 Wh/h on S1 from 10:00 to 12:00 UTC on
/// 1 June 2026, so each hour shares 500 Wh (each quarter 125 Wh). Returns the running hub.
fn hub(
    dir: &Path,
    prices: &str,
    extra: &str,
    period_minutes: u32,
) -> (tokio::runtime::Runtime, socer::central::Running) {
    let path = dir.join("central.toml");
    let text = config_text(dir, &format!("listen = \"127.0.0.1:{}\"", free_port()))
        .replace(
            "[prices]\nzonal_eur_mwh = 100.0\n",
            &format!("[prices]\n{prices}\n"),
        )
        .replace(
            "longitude = 9.87\n",
            &format!("longitude = 9.87\nperiod_minutes = {period_minutes}\n"),
        )
        + extra;
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    {
        let mut w = Writer::open(
            &cfg.storage_path,
            Periods {
                seconds: i64::from(period_minutes) * 60,
            },
            35,
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let grid = |site: &str, export: bool, wh_per_h: f64| {
            grid_readings(site, 1, 100.0, at(10, 0), 8, export, wh_per_h)
        };
        w.write_group(&[grid("iperal", true, 2000.0), grid("domus-1", false, 500.0)])
            .unwrap();
        let mut r = Reader::open(&cfg.storage_path).unwrap();
        let later = at(10, 0) + chrono::Duration::days(1);
        compute::recompute_dirty(&mut r, &Model::new(&cfg), later, 100, false).unwrap();
    }
    start_central(cfg)
}

fn plant<'a>(j: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    j["plants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plant"] == id)
        .unwrap()
}

#[test]
fn a_plant_whose_pod_has_no_data_is_zero_with_a_flag_and_the_others_are_paid() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, running) = hub(dir.path(), "zonal_eur_mwh = 100.0", SCHOOL, 60);
    let web = running.web_addr;

    // 1 kWh shared in June × 130 €/MWh = 0.13 €, all to pv-iperal; pv-scuola has no data.
    let inc = json_get(web, "/api/v1/incentive?month=2026-06");
    assert_eq!(inc["community"]["incentive_ueur"], 130_000, "{inc}");
    assert_eq!(plant(&inc, "pv-iperal")["incentive_ueur"], 130_000);
    assert_eq!(plant(&inc, "pv-iperal")["no_data"], false);
    let school = plant(&inc, "pv-scuola");
    assert_eq!(
        (
            &school["no_data"],
            &school["injection_mwh"],
            &school["incentive_ueur"]
        ),
        (&true.into(), &0.into(), &0.into())
    );
    // The monthly figures say they are provisional, and why.
    assert_eq!(inc["provisional"], true);
    assert!(
        inc["provisional_reason"]
            .as_str()
            .unwrap()
            .contains("calendar year"),
        "{inc}"
    );

    let (status, csv) = http_get(web, "/api/v1/report/2026-06.csv", Some(TOKEN));
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("plant,pv-scuola,") && l.ends_with("|no_data")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("community,2026-06,") && l.ends_with(",provisional")),
        "{csv}"
    );
    let (status, body) = http_get(web, "/api/v1/report/2026-06.json", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    // A month without any data is a report of zeros, not an error.
    let empty = json_get(web, "/api/v1/incentive?month=2026-02");
    assert_eq!(empty["community"]["incentive_ueur"], 0);
    assert_eq!(plant(&empty, "pv-iperal")["no_data"], true);
}

#[test]
fn months_and_years_out_of_range_or_malformed_are_400_never_500() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, running) = hub(dir.path(), "zonal_eur_mwh = 100.0", "", 60);
    let web = running.web_addr;
    for q in [
        "month=0000-01",
        "month=9999-12",
        "month=2019-12",
        "month=2101-01",
        "month=-2026-01",
        "month=2026-00",
        "month=2026-13",
        "month=%2B2026-06",
        "month=202606",
        "month=",
        "year=0000",
        "year=9999",
        "year=2019",
        "year=2101",
        "year=99999999999999999999",
        "year=-2026",
        "year=2026-06",
        "year=",
        "month=2026-06&year=2026",
        "",
    ] {
        let (status, body) = http_get(web, &format!("/api/v1/incentive?{q}"), None);
        assert_eq!(status, 400, "{q}: {body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(j["error"].is_string(), "{q}: {body}");
    }
    for f in [
        "0000-01.csv",
        "9999-12.json",
        "0000.csv",
        "9999.json",
        "2019.csv",
        "x.csv",
    ] {
        let (status, body) = http_get(web, &format!("/api/v1/report/{f}"), Some(TOKEN));
        assert_eq!(status, 400, "{f}: {body}");
    }
    // The edges of the range answer.
    assert_eq!(
        http_get(web, "/api/v1/incentive?month=2020-01", None).0,
        200
    );
    assert_eq!(
        http_get(web, "/api/v1/incentive?month=2099-12", None).0,
        200
    );
    assert_eq!(http_get(web, "/api/v1/incentive?year=2099", None).0, 200);
}

#[test]
fn an_hour_the_price_file_misses_takes_the_fallback_flagged_or_is_unpaid_flagged() {
    // 10:00 and 12:00 at Pz 150 (TIP 80 + 30 = 110, + 10 = 120 €/MWh); 11:00 missing.
    let pz = "time,eur_mwh\n2026-06-01T10:00:00Z,150\n2026-06-01T12:00:00Z,150\n";
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pz.csv"), pz).unwrap();
        // With zonal_eur_mwh = 100 (TIP 130) as fallback: 0.5 kWh × 120 + 0.5 kWh × 130 = 0.125 €.
        let (_rt, running) = hub(
            dir.path(),
            "zonal_eur_mwh = 100.0\nzonal_file = \"pz.csv\"",
            "",
            60,
        );
        let inc = json_get(running.web_addr, "/api/v1/incentive?month=2026-06");
        assert_eq!(inc["community"]["incentive_ueur"], 125_000, "{inc}");
        assert_eq!(inc["community"]["price_fallback_periods"], 1);
        assert_eq!(inc["community"]["price_missing_periods"], 0);
        assert_eq!(plant(&inc, "pv-iperal")["price_fallback_periods"], 1);
        let flagged = inc["flagged_periods"].as_array().unwrap();
        assert!(
            flagged
                .iter()
                .any(|f| f["start"] == "2026-06-01T11:00:00Z" && f["price_fallback"] == true),
            "{inc}"
        );
        let (status, csv) = http_get(running.web_addr, "/api/v1/report/2026-06.csv", Some(TOKEN));
        assert_eq!(status, 200);
        assert!(
            csv.contains("period,2026-06-01T11:00:00Z,,,,,,,,,,,,,,,price_fallback"),
            "{csv}"
        );
    }
    {
        // Without a fallback the hour is unpaid and says so; the answer is still 200.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pz.csv"), pz).unwrap();
        let (_rt, running) = hub(dir.path(), "zonal_file = \"pz.csv\"", "", 60);
        let inc = json_get(running.web_addr, "/api/v1/incentive?month=2026-06");
        assert_eq!(inc["community"]["incentive_ueur"], 60_000, "{inc}");
        assert_eq!(inc["community"]["price_missing_periods"], 1);
    }
}

#[test]
fn quarter_hour_prices_average_into_the_hour_or_price_each_quarter() {
    // 10:00 priced as a whole at 150 (TIP 120); 11:00 per quarter: 100, 200, 150, 150.
    let pz = "2026-06-01T12:00:00+02:00;150\n2026-06-01T11:00:00Z;100\n2026-06-01T11:15:00Z;200\n\
              2026-06-01T11:30:00Z;150,0\n2026-06-01T11:45:00Z;150\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pz.csv"), pz).unwrap();
    let prices = "zonal_eur_mwh = 100.0\nzonal_file = \"pz.csv\"";
    {
        // Hourly settlement: 11:00 at the mean (100 + 200 + 150 + 150) / 4 = 150 → TIP 120;
        // 0.5 kWh × 120 × 2 hours = 0.12 €.
        let (_rt, running) = hub(dir.path(), prices, "", 60);
        let inc = json_get(running.web_addr, "/api/v1/incentive?month=2026-06");
        assert_eq!(inc["community"]["incentive_ueur"], 120_000, "{inc}");
        assert_eq!(inc["community"]["price_fallback_periods"], 0);
    }
    {
        // 15-minute settlement, 125 Wh shared per quarter. 10:00's quarters at 150 → TIP 120:
        // 4 × 125 Wh × 120 = 0.06 €. 11:00: Pz 100 → 80 + 80 = 160, cap 120, + 10 = 130;
        // Pz 200 → 80 + 0 + 10 = 90; 150 → 120 twice: 125 Wh × (130 + 90 + 120 + 120) = 0.0575 €.
        // Total 0.1175 € (the hourly mean gave 0.12: the cap makes the two differ).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pz.csv"), pz).unwrap();
        let (_rt, running) = hub(dir.path(), prices, "", 15);
        let inc = json_get(running.web_addr, "/api/v1/incentive?month=2026-06");
        assert_eq!(inc["community"]["incentive_ueur"], 117_500, "{inc}");
    }
}

#[test]
fn the_yearly_figures_answer_in_json_and_csv_beside_the_months() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, running) = hub(dir.path(), "zonal_eur_mwh = 100.0", SCHOOL, 60);
    let web = running.web_addr;
    // June 2026: pv-iperal injects 4 kWh, 1 kWh allotted: 25 % < 55 %, no excess either way.
    let y = json_get(web, "/api/v1/incentive?year=2026");
    assert_eq!(y["year"], 2026);
    assert_eq!(y["community"]["incentive_ueur"], 130_000, "{y}");
    assert_eq!(y["months"].as_array().map(Vec::len), Some(12));
    assert_eq!(y["months"][5]["month"], "2026-06");
    assert_eq!(y["months"][5]["incentive_ueur"], 130_000);
    let vs = y["plants_yearly_vs_monthly"].as_array().unwrap();
    assert_eq!(vs.len(), 2);
    assert!(
        y.get("members").is_none(),
        "the public answer has no per-member data"
    );
    // The year is provisional until it is over (local time).
    let over = Utc::now() >= Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap();
    assert_eq!(y["provisional"], !over, "{y}");
    // A past year without data is final and all zeros.
    let past = json_get(web, "/api/v1/incentive?year=2025");
    assert_eq!(past["provisional"], false);
    assert_eq!(past["community"]["incentive_ueur"], 0);

    assert_eq!(http_get(web, "/api/v1/report/2026.csv", None).0, 401);
    let (status, csv) = http_get(web, "/api/v1/report/2026.csv", Some(TOKEN));
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with("community,2026,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l == "month,2026-06,,,,,1.000,,,0.13,,,,0.00,,,provisional"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("plant_monthly_sum,pv-iperal,")),
        "{csv}"
    );
    assert!(csv.lines().any(|l| l.starts_with("member,domus,")), "{csv}");
    let (status, body) = http_get(web, "/api/v1/report/2026.json", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["year"], 2026);
    assert!(j["members"].as_array().is_some_and(|m| !m.is_empty()));
}

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run socer check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_warns_about_uncovered_hours_and_refuses_a_broken_price_file_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("central.toml");
    let pz = dir.path().join("pz.csv");
    std::fs::write(
        &cfg,
        config_text(dir.path(), "listen = \"127.0.0.1:1883\"").replace(
            "zonal_eur_mwh = 100.0\n",
            "zonal_eur_mwh = 100.0\nzonal_file = \"pz.csv\"\n",
        ),
    )
    .unwrap();
    // 11:00–12:00 missing (before line 3); 14:00 has one quarter of four (line 4).
    std::fs::write(
        &pz,
        "2026-06-01T09:00:00Z,150\n2026-06-01T10:00:00Z,150\n2026-06-01T13:00:00Z,150\n\
         2026-06-01T14:15:00Z,150\n2026-06-01T15:00:00Z,150\n",
    )
    .unwrap();
    let (code, out, err) = check(&cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok"), "{out}");
    let p = pz.display().to_string();
    assert!(
        err.contains(&format!(
            "{p}:3:1: warning: no price (or not all four quarter-hours) for 2 hours, \
             2026-06-01T11:00Z to 2026-06-01T12:00Z (UTC); zonal_eur_mwh = 100 €/MWh is used"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:4:1: warning: no price (or not all four quarter-hours) for the hour 2026-06-01T14:00Z")),
        "{err}"
    );

    // A broken price file is an error naming its line and column; check exits 2, never panics.
    for (text, at) in [
        (
            "2026-06-01T09:00:00Z,150\n2026-06-01T10:00:00Z,1e999\n",
            ":2:22:",
        ),
        (
            "2026-06-01T09:00:00Z,150\n2026-06-01T10:07:00Z,150\n",
            ":2:1:",
        ),
        ("2026-06-01T09:00:00Z,18446744073709551615\n", ":1:22:"),
    ] {
        std::fs::write(&pz, text).unwrap();
        let (code, _, err) = check(&cfg);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(&format!("{p}{at}")), "{text}: {err}");
    }
    std::fs::write(&pz, b"2026-06-01T09:00:00Z,150\n2026-06-01\xfe\n").unwrap();
    let (code, _, err) = check(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{p}:2:11: not UTF-8")), "{err}");
}
