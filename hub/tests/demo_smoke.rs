//! `socer demo` end to end: the binary starts the community with eight days of history, and the
//! central hub's and the sites' HTTP APIs show every site online, the history stored, live Modbus
//! readings flowing, shared energy on a sunny day and never above min(injection, withdrawal);
//! after SIGTERM no child remains.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use common::Reaped;
use serde_json::Value;

use socer::demo::http;
use socer::demo::scenario::Scenario;
use socer::demo::weather::{Sky, Weather};
use socer::demo::Endpoints;

/// History the test asks for: eight days always hold a whole Sunday.
const BACKFILL: &str = "8d";

/// A seed whose weather makes the last whole Sunday (UTC) of the backfill a clear day. On a
/// Sunday the factory's 300 kWp roof feeds the community even in December; on a winter weekday
/// the community may use all it produces, so a weekday proves nothing about sharing.
fn seed_with_clear_sunday(scenario: &Scenario) -> (u64, chrono::DateTime<Utc>) {
    use chrono::Datelike;
    let today = Utc::now()
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let sunday = (1..=7)
        .map(|d| today - chrono::Duration::days(d))
        .find(|d| d.weekday() == chrono::Weekday::Sun)
        .unwrap();
    for seed in 1..500 {
        if Weather::new(seed, &scenario.weather).sky(sunday + chrono::Duration::hours(12))
            == Sky::Clear
        {
            return (seed, sunday);
        }
    }
    panic!("no seed gives a clear day");
}

fn read_endpoints(dir: &Path, limit: Duration) -> Endpoints {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("demo.json")) {
            if let Ok(e) = serde_json::from_str(&text) {
                return e;
            }
        }
        assert!(
            Instant::now() < until,
            "demo.json did not appear within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> Option<Value> {
    match http::get(addr, path, Duration::from_secs(5)).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn mwh(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer `{key}` in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_whole_pipeline_and_stops_cleanly() {
    let scenario = Scenario::builtin().unwrap();
    let (seed, sunny_day) = seed_with_clear_sunday(&scenario);
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args([
            "demo",
            "--seed",
            &seed.to_string(),
            "--backfill",
            BACKFILL,
            "--run-for",
            "110s",
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kills the demo if the test fails half-way, so no process outlives the test.
    let mut guard = Reaped(child);
    let started = Instant::now();
    let e = read_endpoints(dir.path(), Duration::from_secs(30));
    assert_eq!(e.sites.len(), scenario.buildings.len());
    assert!(e.backfill_readings > 0);

    // Every site online and the whole history acknowledged by the central hub.
    let until = Instant::now() + Duration::from_secs(60);
    let sites = loop {
        let sites = get_json(e.central_web, "/api/v1/sites").await;
        let done = sites.as_ref().is_some_and(|s| {
            let list = s["sites"].as_array().cloned().unwrap_or_default();
            let acked: u64 = list.iter().filter_map(|x| x["acked_seq"].as_u64()).sum();
            list.len() == scenario.buildings.len()
                && list.iter().all(|x| x["state"] == "online")
                && acked >= e.backfill_readings
        });
        if done {
            break sites.unwrap();
        }
        assert!(
            Instant::now() < until,
            "sites not all online with their history: {sites:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for b in &scenario.buildings {
        assert!(
            sites["sites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == b.id.as_str()),
            "{} missing",
            b.id
        );
    }
    // Each building's own agent reads its meters live over Modbus (TCP, or RTU on a pty).
    for s in &e.sites {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let now = get_json(s.web, "/api/v1/now").await;
            let grid_w = now.as_ref().and_then(|n| {
                n["meters"]
                    .as_array()?
                    .iter()
                    .find(|m| m["role"] == "grid")?["reading"]["p_w"]
                    .as_f64()
            });
            // Every meter of the building (SDM630, EM24, SDM120, Huawei, SunSpec; TCP or RTU) ok.
            let health = get_json(s.web, "/api/v1/health").await;
            let all_ok = health
                .as_ref()
                .and_then(|h| h["meters"].as_object())
                .is_some_and(|m| !m.is_empty() && m.values().all(|v| v["state"] == "ok"));
            if grid_w.is_some() && all_ok {
                break;
            }
            assert!(
                Instant::now() < until,
                "site {}: no live grid reading or a meter not ok: {now:?} {health:?}",
                s.id
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // And the live readings reach the central hub beyond the history.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let sites = get_json(e.central_web, "/api/v1/sites").await;
        let acked: u64 = sites
            .as_ref()
            .and_then(|s| s["sites"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x["acked_seq"].as_u64())
            .sum();
        if acked > e.backfill_readings + scenario.buildings.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no live readings acknowledged beyond the history: {acked}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Hourly energy over the backfilled span: shared ≤ min(injection, withdrawal) in every slot
    // and substation, and some shared energy on the clear day.
    let from = e.backfill_from.unwrap();
    let to = e.backfill_to.unwrap();
    let path = format!(
        "/api/v1/energy?from={}&to={}&step=1h",
        from.to_rfc3339(),
        to.to_rfc3339()
    )
    .replace('+', "%2B");
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let energy = get_json(e.central_web, &path).await;
        let slots = energy
            .as_ref()
            .and_then(|v| v["slots"].as_array().cloned())
            .unwrap_or_default();
        for slot in &slots {
            let mut parts = vec![slot.clone()];
            if let Some(subs) = slot["substations"].as_object() {
                parts.extend(subs.values().cloned());
            }
            for p in &parts {
                let (shared, inj, wd) = (
                    mwh(p, "shared_mwh"),
                    mwh(p, "injection_mwh"),
                    mwh(p, "withdrawal_mwh"),
                );
                assert!(
                    shared >= 0 && shared <= inj.min(wd),
                    "slot {}: shared {shared} > min({inj}, {wd})",
                    slot["start"]
                );
            }
        }
        let sunny_shared: i64 = slots
            .iter()
            .filter(|s| {
                s["start"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| {
                        let t = t.with_timezone(&Utc);
                        t >= sunny_day && t < sunny_day + chrono::Duration::days(1)
                    })
            })
            .map(|s| mwh(s, "shared_mwh"))
            .sum();
        if sunny_shared > 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no shared energy on the clear day {sunny_day}: {energy:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // SIGTERM stops the demo and every daemon it started.
    let pid = i32::try_from(guard.0.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the demo did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exit: {status}");
    for pid in &e.pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} survived the demo"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(110),
        "took {:?}",
        started.elapsed()
    );
}
