//! Bytes written to disk per reading by the outbox at 16 meters × 1 s, in steady state, at the
//! writer's cadence: one commit of 2 s of readings then a WAL sync, minute compaction (which writes
//! the acknowledged seq), a passive checkpoint every 10 min, the central hub acknowledging as it
//! goes. `tools/sd-wear` measures the running agent instead.
//!
//! Simulated time (no sleeping): `SIM_SECONDS` seconds of readings (default 3600). Counts the
//! bytes this process hands to write(2) (`wchar` of /proc/self/io: WAL, database, checkpoints)
//! and the bytes the kernel sent to the block device (`write_bytes`, 0 on tmpfs).
//!
//! Run: `cargo bench -p socer --bench site_outbox_bytes` (target ≤ 300 B per reading).
//! `SKIP_COMPACT=1` leaves out compaction (to see its share); `BENCH_KEEP=FILE` keeps a copy of
//! the database for `sqlite3` (`SELECT * FROM dbstat`); `BENCH_DIR` picks the filesystem.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use socer::site::outbox::{Incoming, RunInfo, Store};
use socer_drivers::reading::{Quality, Reading, Values};

fn io_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or(0)
    };
    (get("wchar:"), get("write_bytes:"))
}

fn main() {
    let seconds: i64 = std::env::var("SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let meters = 16;
    let dir_base =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(dir_base).expect("tempdir");
    let run = RunInfo {
        boot: "bench".into(),
        origin_ms: 0,
    };
    let mut store = Store::open(dir.path(), 200_000_000, &run).expect("open outbox");
    let t0 = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("t0")
        .timestamp_millis();
    let (w0, b0) = io_counters();
    let started = Instant::now();
    let mut pending: Vec<Incoming> = Vec::new();
    for s in 0..seconds {
        let ts = t0 + s * 1000;
        let batch: Vec<Incoming> = (0..meters)
            .map(|m| {
                let p = 1000.0 + (s as f64 * 0.37 + m as f64).sin() * 800.0;
                Incoming {
                    reading: Reading {
                        meter: format!("meter-{m:02}"),
                        ts: Utc
                            .timestamp_millis_opt(ts + m)
                            .single()
                            .unwrap_or_default(),
                        mono_ms: (s * 1000) as u64,
                        values: Values {
                            p_w: Some((p * 10.0).round() / 10.0),
                            e_imp_wh: Some((4_000_000.0 + s as f64 * 0.3).floor()),
                            e_exp_wh: Some(12_345.0),
                            v_v: [Some(230.1), Some(229.8), Some(231.2)],
                            i_a: [Some(1.45), Some(1.52), Some(1.38)],
                            f_hz: Some(50.01),
                            pf: Some(0.97),
                            ..Values::default()
                        },
                        quality: Quality::Good,
                        missing: vec![],
                        energy_integrated: false,
                    },
                    synced: true,
                }
            })
            .collect();
        pending.extend(batch);
        if s % 2 == 1 {
            store.insert(&pending).expect("insert");
            pending.clear();
            store.sync().expect("sync");
            // The hub acknowledges what was published a couple of seconds ago.
            store.ack(store.durable().saturating_sub(32)).expect("ack");
        }
        if s % 600 == 599 {
            store.checkpoint_passive().expect("checkpoint");
        }
        if s % 60 == 59 && std::env::var("SKIP_COMPACT").is_err() {
            store.compact(ts + 1000).expect("compact");
            store.enforce_budget().expect("budget");
        }
    }
    let (wc, _) = io_counters();
    store.checkpoint().expect("checkpoint");
    let (w1, b1) = io_counters();
    println!(
        "  of which the final checkpoint: {:.1} B/reading",
        (w1 - wc) as f64 / (seconds * meters) as f64
    );
    let readings = (seconds * meters) as f64;
    if let Ok(keep) = std::env::var("BENCH_KEEP") {
        let _ = std::fs::copy(dir.path().join("outbox.sqlite"), keep);
    }
    let file_bytes = std::fs::metadata(dir.path().join("outbox.sqlite"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("outbox bytes per reading, {meters} meters x 1 s, {seconds} simulated s ({readings} readings)");
    println!(
        "  written (wchar):          {:8.1} B/reading",
        (w1 - w0) as f64 / readings
    );
    println!(
        "  to block device:          {:8.1} B/reading",
        (b1 - b0) as f64 / readings
    );
    println!("  database file at the end: {file_bytes} B (acknowledged raw rows compacted)");
    println!(
        "  wall time: {:?}",
        started.elapsed().max(Duration::from_millis(1))
    );
}
