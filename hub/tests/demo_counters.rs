//! `socer demo` replaces no meter, so its counters must never look reset: the binary runs the
//! community with a few hours of history, goes live, and the hub's HTTP API shows no period
//! flagged `counter_reset` and no hour injecting more than the substation's installed PV could,
//! the current hour included once the live meters have been read into it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use common::Reaped;
use serde_json::Value;

use socer::demo::http;
use socer::demo::scenario::Scenario;
use socer::demo::Endpoints;

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

async fn acked(e: &Endpoints) -> u64 {
    get_json(e.central_web, "/api/v1/sites")
        .await
        .and_then(|s| s["sites"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x["acked_seq"].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_demo_never_flags_a_counter_reset_nor_injects_more_than_its_pv() {
    let scenario = Scenario::builtin().unwrap();
    // Installed PV per substation, as the most an hour can inject (kW × 1 h = kWh → mWh).
    let mut pv_mwh: BTreeMap<String, f64> = BTreeMap::new();
    for b in &scenario.buildings {
        *pv_mwh.entry(b.substation.clone()).or_default() +=
            b.pv.as_ref().map_or(0.0, |p| p.peak_kw * 1e6);
    }
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["demo", "--backfill", "6h", "--run-for", "200s", "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Reaped(child);
    let e = read_endpoints(dir.path(), Duration::from_secs(40));

    // The history stored, then live readings beyond it.
    let until = Instant::now() + Duration::from_secs(90);
    while acked(&e).await <= e.backfill_readings + 2 * scenario.buildings.len() as u64 {
        assert!(
            Instant::now() < until,
            "no live readings acknowledged beyond the history ({} readings)",
            e.backfill_readings
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The hub settles the open hour once a minute: wait for a settlement with live samples in.
    tokio::time::sleep(Duration::from_secs(75)).await;

    let from = e.backfill_from.unwrap();
    let to = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        + chrono::Duration::hours(1);
    let path = format!(
        "/api/v1/energy?from={}&to={}&step=1h",
        from.to_rfc3339(),
        to.to_rfc3339()
    )
    .replace('+', "%2B");
    // The hour the live meters took over in, and the current one, both settled.
    let handover = e
        .backfill_to
        .unwrap()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let slots = loop {
        let energy = get_json(e.central_web, &path).await.unwrap_or_default();
        let slots = energy["slots"].as_array().cloned().unwrap_or_default();
        let settled = |s: &Value| s["periods"].as_u64() == Some(1);
        let at_handover = slots.iter().find(|s| {
            s["start"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok())
                == Some(handover)
        });
        if slots.len() >= 6 && at_handover.is_some_and(settled) && slots.last().is_some_and(settled)
        {
            break slots;
        }
        assert!(Instant::now() < until, "hours not settled: {energy}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for slot in &slots {
        let start = slot["start"].as_str().unwrap_or("?");
        assert!(
            !slot["flags"]
                .as_str()
                .unwrap_or("")
                .contains("counter_reset"),
            "hour {start} flagged: {slot}"
        );
        let subs = slot["substations"].as_object().cloned().unwrap_or_default();
        for (id, s) in &subs {
            let flags = s["flags"].as_str().unwrap_or("");
            assert!(!flags.contains("counter_reset"), "hour {start}, {id}: {s}");
            let injected = s["injection_mwh"].as_f64().unwrap_or(f64::MAX);
            let most = pv_mwh.get(id).copied().unwrap_or(0.0);
            assert!(
                injected <= most,
                "hour {start}, {id}: {injected} mWh injected, installed PV gives at most {most}"
            );
            let produced = s["production_mwh"].as_f64().unwrap_or(0.0);
            assert!(
                produced <= most,
                "hour {start}, {id}: produced {produced} mWh"
            );
        }
    }

    // SIGTERM stops the demo and its daemons.
    let pid = i32::try_from(guard.0.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(20);
    while guard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}
