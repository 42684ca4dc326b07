//! Backlog drain: 1,000,000 readings buffered in the outbox are published through a local
//! Mosquitto to an acker that verifies every batch and acknowledges end to end, as the central hub
//! does. Reports readings acknowledged per second (target ≥ 20,000/s).
//!
//! Run: `cargo bench -p socer --bench site_drain` (`DRAIN_READINGS=N` to change the count).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/site_common/mod.rs"]
mod site_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use socer::site::config::BrokerUrl;
use socer::site::outbox::{Incoming, Outbox, RunInfo, Store};
use socer::site::uplink::{self, UplinkConfig};
use socer::wire;
use socer_drivers::reading::{Quality, Reading, Values};
use socer_drivers::SystemClock;
use tokio::sync::watch;

use common::free_port;
use site_common::{lean_acker, Broker, COMMUNITY, KEY, SITE};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("DRAIN_READINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let run = RunInfo {
        boot: "bench".into(),
        origin_ms: 0,
    };
    let mut store = Store::open(&dir.path().join("data"), 2_000_000_000, &run).expect("open");
    let t0 = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("t0")
        .timestamp_millis();
    let fill = Instant::now();
    let mut i = 0u64;
    while i < n {
        let chunk: Vec<Incoming> = (i..(i + 10_000).min(n))
            .map(|k| Incoming {
                reading: Reading {
                    meter: format!("meter-{:02}", k % 16),
                    ts: Utc
                        .timestamp_millis_opt(t0 + (k / 16) as i64 * 1000)
                        .single()
                        .unwrap_or_default(),
                    mono_ms: 0,
                    values: Values {
                        p_w: Some(1234.5),
                        e_imp_wh: Some(4_000_000.0 + k as f64),
                        e_exp_wh: Some(12_345.0),
                        v_v: [Some(230.1), Some(229.8), Some(231.2)],
                        f_hz: Some(50.0),
                        ..Values::default()
                    },
                    quality: Quality::Good,
                    missing: vec![],
                    energy_integrated: false,
                },
                synced: true,
            })
            .collect();
        i += chunk.len() as u64;
        store.insert(&chunk).expect("insert");
    }
    store.sync().expect("sync");
    println!("buffered {n} readings in {:?}", fill.elapsed());

    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let contiguous = Arc::new(AtomicU64::new(0));
    lean_acker(port, contiguous.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outbox = Outbox::start(store, Arc::new(|| None));
    let cfg = UplinkConfig {
        brokers: vec![BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        }],
        instance: "a1b2c3d4e5f6".into(),
        username: None,
        password: None,
        ca_pem: None,
        key: hex::decode(KEY).unwrap_or_default(),
        community: COMMUNITY.into(),
        site: SITE.into(),
        batch_readings: 500,
        window: 8,
        ack_timeout: Duration::from_secs(30),
        status_every: Duration::from_secs(30),
        epoch_file: None,
        inbox: None,
        subscribe_qos: rumqttc::QoS::AtLeastOnce,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let task = uplink::spawn(
        cfg,
        outbox.clone(),
        Arc::new(SystemClock::new()),
        Arc::new(wire::Status::offline),
        Arc::default(),
        stop_rx,
    );
    let deadline = started + Duration::from_secs(600);
    while contiguous.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let done = contiguous.load(Ordering::Relaxed);
    println!(
        "drained {done} of {n} readings, acknowledged end to end, in {:.2} s: {:.0} readings/s \
         (batches of 500, window 8, Mosquitto on loopback)",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64()
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    outbox.flush().await.ok();
    println!(
        "outbox after drain: backlog {} acked {}",
        outbox.stats().backlog,
        outbox.stats().acked
    );
    outbox.shutdown().await;
}
