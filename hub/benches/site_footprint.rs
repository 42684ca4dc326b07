//! Footprint of the agent: the `socer site` binary polls 32 simulated SDM630 meters over Modbus
//! TCP every second, publishes to a local Mosquitto with an acker, and serves `/api/v1/now` once a
//! second. Reports the agent process's CPU (% of one core) and RSS (targets: ≤ 2 %, ≤ 25 MB).
//!
//! Run: `cargo bench -p socer --bench site_footprint` (`FOOTPRINT_SECONDS=N`, default 60).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/site_common/mod.rs"]
mod site_common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socer_drivers::sim::{server::serve_tcp, NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::{ProfileSet, SystemClock};

use common::free_port;
use site_common::{http_get, lean_acker, Agent, Broker, COMMUNITY, KEY, SITE};

/// (utime + stime in clock ticks, VmRSS kB, VmHWM kB) of a process.
fn proc_sample(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks, kb("VmRSS:"), kb("VmHWM:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("FOOTPRINT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let meters = 32u8;
    let set = ProfileSet::builtin().expect("profiles");
    let sdm630 = set.get("eastron-sdm630").expect("sdm630").clone();
    let mut devices = BTreeMap::new();
    for unit in 1..=meters {
        devices.insert(
            unit,
            SimDevice::from_profile(
                &sdm630,
                Arc::new(SystemClock::new()),
                Box::new(NoisyPower::new(
                    800.0 + f64::from(unit) * 50.0,
                    0.05,
                    u64::from(unit),
                )),
                PhysicsConfig {
                    import_wh: 1_000_000.0,
                    ..PhysicsConfig::default()
                },
            ),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim_port = listener.local_addr().expect("addr").port();
    tokio::spawn(serve_tcp(listener, Arc::new(devices)));

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    lean_acker(port, Arc::new(AtomicU64::new(0)));
    let web_port = free_port();
    std::fs::write(dir.path().join("site.key"), KEY).expect("key");
    let mut cfg = format!(
        "[site]\nid = \"{SITE}\"\ncommunity = \"{COMMUNITY}\"\nclock = \"trust\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nkey_file = \"site.key\"\n\
         [storage]\npath = \"data\"\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n\
         [[bus]]\nname = \"lan\"\ntcp = \"127.0.0.1:{sim_port}\"\ntimeout_ms = 300\n"
    );
    for unit in 1..=meters {
        let role = if unit == 1 { "grid" } else { "consumption" };
        cfg += &format!(
            "[[meter]]\nname = \"m{unit:02}\"\nbus = \"lan\"\nunit = {unit}\nmodel = \"eastron-sdm630\"\nrole = \"{role}\"\ninterval = \"1s\"\n"
        );
    }
    let cfg_path = dir.path().join("site.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let agent = Agent::start(&cfg_path, web_port, &dir.path().join("agent.log"));
    agent.wait_web();
    let pid = agent.child.id();
    // Warm up: connections, first counters, the outbox's first compaction.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (t0, _, _) = proc_sample(pid);
    let start = Instant::now();
    let mut served = 0u32;
    while start.elapsed() < Duration::from_secs(seconds) {
        let body = tokio::task::spawn_blocking(move || http_get(web_port, "/api/v1/now"))
            .await
            .ok()
            .flatten();
        served += u32::from(body.is_some());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (t1, rss, hwm) = proc_sample(pid);
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (t1 - t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0;
    let health = agent.health().unwrap_or_default();
    println!("agent footprint: {meters} meters over Modbus TCP at 1 s, /api/v1/now served {served} times in {seconds} s");
    println!("  CPU: {cpu:.2} % of one core");
    println!(
        "  RSS: {:.1} MB now, {:.1} MB peak",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  outbox: last seq {}, backlog {}, disk {} B",
        health["outbox"]["last_seq"], health["outbox"]["backlog"], health["outbox"]["disk_bytes"]
    );
}
