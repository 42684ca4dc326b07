//! The site agent on an RS-485 line reached through a transparent TCP gateway: `[[bus]]
//! rtu_over_tcp`. The gateway is simulated on loopback (a task forwarding TCP bytes unchanged to a
//! pty pair) with the drivers' RTU simulator serving two meters on the other end; the real
//! `socer site` polls both through it and the hub acks their readings.

mod common;
mod site_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use site_common::*;
use socer_drivers::reading::Quality;
use socer_drivers::sim::rtu::{serve_rtu, LineConfig, Parity};
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::{ProfileSet, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_behind_a_transparent_gateway_reach_the_hub() {
    let set = ProfileSet::builtin().expect("built-in profiles");
    let device = |id: &str, power_w: f64| {
        SimDevice::from_profile(
            set.get(id).expect("profile"),
            Arc::new(SystemClock::new()),
            Box::new(NoisyPower::new(power_w, 0.0, 1)),
            PhysicsConfig {
                grid_noise: 0.0,
                import_wh: 5_000_000.0,
                export_wh: 100_000.0,
                ..PhysicsConfig::default()
            },
        )
    };
    let mut devices = BTreeMap::new();
    devices.insert(1u8, device("eastron-sdm630", 1500.0));
    devices.insert(2u8, device("chint-dtsu666", -2200.0));
    let (mut master, slave) = SerialStream::pair().expect("a pty pair");
    let line = LineConfig {
        baud: 9600,
        parity: Parity::None,
        stop_bits: 1,
        turnaround: Duration::from_millis(5),
    };
    let sim = tokio::spawn(serve_rtu(slave, Arc::new(devices), line));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let gw_port = listener.local_addr().expect("addr").port();
    let gateway = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
            loop {
                tokio::select! {
                    n = tcp.read(&mut a) => match n {
                        Ok(n) if n > 0 => { if master.write_all(&a[..n]).await.is_err() { return; } }
                        _ => break,
                    },
                    n = master.read(&mut b) => match n {
                        Ok(n) if n > 0 => { if tcp.write_all(&b[..n]).await.is_err() { break; } }
                        _ => return,
                    },
                }
            }
        }
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let acker = Acker::start(port);
    let web_port = free_port();
    std::fs::write(dir.path().join("site.key"), KEY).expect("key");
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[site]
id = "{SITE}"
community = "{COMMUNITY}"
clock = "trust"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
key_file = "site.key"
[storage]
path = "data"
[web]
listen = "127.0.0.1:{web_port}"
[[bus]]
name = "cantina"
rtu_over_tcp = "127.0.0.1:{gw_port}"
baud = 9600
timeout_ms = 500
[[meter]]
name = "grid"
bus = "cantina"
unit = 1
model = "eastron-sdm630"
role = "grid"
interval = "1s"
[[meter]]
name = "pv"
bus = "cantina"
unit = 2
model = "chint-dtsu666"
role = "production"
interval = "1s"
"#
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, web_port, &dir.path().join("agent.log"));
    a.wait_web();
    let got = eventually(Duration::from_secs(30), || {
        let g = acker.seen.lock().expect("acker");
        let n = |m: &str| {
            g.readings
                .values()
                .filter(|r| r.meter == m && r.quality == Quality::Good)
                .count()
        };
        n("grid") >= 2 && n("pv") >= 2
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert!(got, "readings did not arrive; log:\n{log}");
    let g = acker.seen.lock().expect("acker");
    let last = |m: &str| {
        g.readings
            .values()
            .rev()
            .find(|r| r.meter == m && r.quality == Quality::Good)
            .cloned()
            .expect("a good reading")
    };
    let grid = last("grid");
    assert!(
        grid.values.p_w.is_some_and(|p| (p - 1500.0).abs() < 1.0),
        "grid p_w {:?}",
        grid.values.p_w
    );
    let pv = last("pv");
    assert!(
        pv.values.p_w.is_some_and(|p| (p + 2200.0).abs() < 1.0),
        "pv p_w {:?}",
        pv.values.p_w
    );
    drop(g);
    let h = a.health().expect("health");
    assert_eq!(h["meters"]["grid"]["state"], "ok", "{h}");
    gateway.abort();
    sim.abort();
}

/// `socer check` accepts an `rtu_over_tcp` bus and refuses one that also names another kind or
/// whose address is not host:port, at the bus's line.
#[test]
fn check_accepts_an_rtu_over_tcp_bus_and_refuses_a_bus_of_two_kinds() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/site.example.toml");
    let base = std::fs::read_to_string(example).expect("example config");
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        let path = dir.path().join("site.toml");
        std::fs::write(&path, format!("{base}\n{extra}")).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_socer"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run socer check");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) =
        check("[[bus]]\nname = \"gw\"\nrtu_over_tcp = \"192.0.2.20:8899\"\nbaud = 19200\n");
    assert_eq!(code, 0, "{err}");
    let (code, err) = check(
        "[[bus]]\nname = \"gw\"\nrtu_over_tcp = \"192.0.2.20:8899\"\ntcp = \"192.0.2.20:502\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs exactly one of"), "{err}");
    let (code, err) = check("[[bus]]\nname = \"gw\"\nrtu_over_tcp = \"192.0.2.20\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not host:port"), "{err}");
}
