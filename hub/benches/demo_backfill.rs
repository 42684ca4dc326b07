//! Measures `socer demo`: how long a 7-day backfill takes to travel outbox → MQTT → central (all
//! readings acknowledged), then the whole demo's CPU and resident memory while it runs live.
//! Prints numbers; asserts nothing. `cargo bench -p socer --bench demo_backfill`
//! (env `DEMO_BACKFILL`, default `7d`; `DEMO_LIVE_S`, default 60).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socer::demo::{http, Endpoints};

/// Proportional set size, KiB: shared pages (the same binary in 11 processes) counted once.
fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) and resident KiB of one process, from /proc.
fn cpu_rss(pid: u32) -> (f64, u64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn total(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|&p| cpu_rss(p))
        .fold((0.0, 0), |(c, r), (c2, r2)| (c + c2, r + r2))
}

fn endpoints(dir: &Path) -> Endpoints {
    loop {
        if let Some(e) = std::fs::read_to_string(dir.join("demo.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            return e;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let span = std::env::var("DEMO_BACKFILL").unwrap_or_else(|_| "7d".into());
    let live_s: u64 = std::env::var("DEMO_LIVE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = std::env::temp_dir().join(format!("socer-demo-bench-{}", std::process::id()));
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["demo", "--seed", "3", "--backfill", &span, "--data"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start socer demo");
    let e = endpoints(&dir);
    let ready = t0.elapsed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let acked = rt.block_on(async {
        loop {
            if let Ok((200, body)) =
                http::get(e.central_web, "/api/v1/sites", Duration::from_secs(5)).await
            {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let list = v["sites"].as_array().cloned().unwrap_or_default();
                let n: u64 = list.iter().filter_map(|s| s["acked_seq"].as_u64()).sum();
                if n >= e.backfill_readings && list.iter().all(|s| s["state"] == "online") {
                    return t0.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut pids = vec![child.id()];
    pids.extend(&e.pids);
    let (cpu_backfill, _) = total(&pids);
    // Let the hub finish recomputing the backfilled periods before measuring the live state.
    std::thread::sleep(Duration::from_secs(10));
    let (c1, _) = total(&pids);
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(live_s));
    let (c2, rss_kib) = total(&pids);
    let pss_kib: u64 = pids.iter().map(|&p| pss(p)).sum();
    let live_cpu = 100.0 * (c2 - c1) / t1.elapsed().as_secs_f64();
    println!("demo backfill {span}: {} readings", e.backfill_readings);
    println!("  outbox write            {:>8.2} s", e.backfill_seconds);
    println!(
        "  ready (URLs printed)    {:>8.2} s after launch",
        ready.as_secs_f64()
    );
    println!(
        "  all acked by central    {:>8.2} s after launch",
        acked.as_secs_f64()
    );
    println!(
        "  CPU until acked         {:>8.2} s (all processes)",
        cpu_backfill
    );
    println!("demo live ({} processes, {live_s} s):", pids.len());
    println!("  CPU                     {:>8.1} % of one core", live_cpu);
    println!(
        "  resident memory         {:>8.1} MiB (sum of VmRSS)",
        rss_kib as f64 / 1024.0
    );
    println!(
        "  proportional memory     {:>8.1} MiB (sum of PSS: shared pages counted once)",
        pss_kib as f64 / 1024.0
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
