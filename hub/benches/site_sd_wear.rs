//! SD-card wear of the running agent: the real `socer site` binary with 16 simulated meters read
//! every second, publishing to a local Mosquitto whose acker acknowledges like the hub. Samples
//! the agent's `/proc/PID/io` (`write_bytes`: bytes dirtied in the page cache, what reaches the
//! card; `wchar`: bytes handed to write(2)) and the outbox's `last_seq` from `/api/v1/health`,
//! after a warm-up, and prints bytes written per reading over the run (checkpoints included).
//!
//! Run: `tools/sd-wear MINUTES` or `SD_WEAR_SECONDS=N cargo bench -p socer --bench site_sd_wear`
//! (default 600 s). `SD_WEAR_DIR` picks the filesystem of the outbox (not tmpfs: `write_bytes`
//! is 0 there); `SD_WEAR_BIN` runs another `socer` binary (an earlier release, to compare).
//! Target ≤ 100 B per reading at the page cache.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/site_common/mod.rs"]
mod site_common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, wait_port};
use site_common::{http_get, lean_acker, Broker, COMMUNITY, KEY, SITE};

/// The agent process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (write_bytes, wchar) of a process.
fn io_sample(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or(0)
    };
    (get("write_bytes:"), get("wchar:"))
}

fn health(web_port: u16) -> serde_json::Value {
    http_get(web_port, "/api/v1/health")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

fn last_seq(web_port: u16) -> u64 {
    health(web_port)["outbox"]["last_seq"].as_u64().unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("SD_WEAR_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let meters = 16u32;
    let base = std::env::var("SD_WEAR_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let acked = Arc::new(AtomicU64::new(0));
    lean_acker(port, acked.clone());
    let web_port = free_port();
    std::fs::write(dir.path().join("site.key"), KEY).expect("key");
    let mut cfg = format!(
        "[site]\nid = \"{SITE}\"\ncommunity = \"{COMMUNITY}\"\nclock = \"trust\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nkey_file = \"site.key\"\n\
         [storage]\npath = \"data\"\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n\
         [[bus]]\nname = \"sim\"\nsimulated = true\ntimeout_ms = 300\n"
    );
    for unit in 1..=meters {
        let role = if unit == 1 { "grid" } else { "consumption" };
        cfg += &format!(
            "[[meter]]\nname = \"m{unit:02}\"\nbus = \"sim\"\nunit = {unit}\nmodel = \"eastron-sdm630\"\nrole = \"{role}\"\ninterval = \"1s\"\n"
        );
    }
    let cfg_path = dir.path().join("site.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let bin = std::env::var("SD_WEAR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_socer").into());
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let agent = Agent(
        Command::new(&bin)
            .args(["site", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start socer site"),
    );
    assert!(
        wait_port(web_port, Duration::from_secs(20)),
        "the agent's web port never opened"
    );
    let pid = agent.0.id();
    // Warm up: broker connection, the first commits and the first compaction.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let (b0, w0) = io_sample(pid);
    let s0 = last_seq(web_port);
    let a0 = acked.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut next_report = 60u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = start.elapsed().as_secs();
        if t >= next_report {
            let (b, _) = io_sample(pid);
            let n = last_seq(web_port).saturating_sub(s0).max(1);
            eprintln!(
                "  {t:>5} s: {n} readings, {:.1} B/reading so far",
                (b - b0) as f64 / n as f64
            );
            next_report += 60;
        }
    }
    let (b1, w1) = io_sample(pid);
    let s1 = last_seq(web_port);
    let a1 = acked.load(std::sync::atomic::Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let n = s1.saturating_sub(s0).max(1);
    let health = health(web_port);
    println!(
        "agent SD wear ({bin}): {meters} simulated meters at 1 s, {elapsed:.0} s after a 70 s warm-up"
    );
    println!(
        "  readings: {n} ({:.2}/s), acknowledged meanwhile: {}",
        n as f64 / elapsed,
        a1.saturating_sub(a0)
    );
    println!(
        "  page cache (write_bytes): {} B, {:.1} B/reading",
        b1 - b0,
        (b1 - b0) as f64 / n as f64
    );
    println!(
        "  write(2) (wchar): {} B, {:.1} B/reading",
        w1 - w0,
        (w1 - w0) as f64 / n as f64
    );
    println!(
        "  outbox: backlog {}, disk {} B",
        health["outbox"]["backlog"], health["outbox"]["disk_bytes"]
    );
}
