//! The site agent on a real Modbus TCP bus: the drivers' simulator serves meters in the test
//! process, the `socer site` binary polls them with the bus scheduler and publishes to Mosquitto.

mod common;
mod site_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use site_common::*;
use socer_drivers::reading::Quality;
use socer_drivers::sim::{server::serve_tcp, NoisyPower, Physics, PhysicsConfig, SimDevice};
use socer_drivers::sunspec::{self, ImageSpec, ModelSet};
use socer_drivers::{ProfileSet, SystemClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_and_sunspec_meters_reach_the_hub_oriented_and_a_missing_unit_fails_alone() {
    let set = ProfileSet::builtin().expect("built-in profiles");
    let sdm630 = set.get("eastron-sdm630").expect("sdm630 profile").clone();
    let device = |power_w: f64| {
        SimDevice::from_profile(
            &sdm630,
            Arc::new(SystemClock::new()),
            Box::new(NoisyPower::new(power_w, 0.0, 1)),
            PhysicsConfig {
                grid_noise: 0.0,
                import_wh: 5_000_000.0,
                ..PhysicsConfig::default()
            },
        )
    };
    let mut devices = BTreeMap::new();
    devices.insert(1u8, device(1500.0));
    devices.insert(3u8, device(-2750.0));
    // A SunSpec three-phase inverter (model 103) on unit 4, found by discovery.
    let models = ModelSet::builtin().expect("SunSpec models");
    let image = sunspec::image(
        &ImageSpec {
            unit: 4,
            ..ImageSpec::new(103)
        },
        &models,
    )
    .expect("image");
    let inverter = SimDevice::new(
        image.register_image(),
        Physics::new(
            Arc::new(SystemClock::new()),
            Box::new(NoisyPower::new(-2000.0, 0.0, 4)),
            PhysicsConfig {
                phases: 3,
                grid_noise: 0.0,
                ..PhysicsConfig::default()
            },
        ),
    );
    devices.insert(4u8, inverter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind simulator");
    let sim_port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(serve_tcp(listener, Arc::new(devices)));

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
name = "lan"
tcp = "127.0.0.1:{sim_port}"
timeout_ms = 200
[[meter]]
name = "grid"
bus = "lan"
unit = 1
model = "eastron-sdm630"
role = "grid"
interval = "500ms"
[[meter]]
name = "absent"
bus = "lan"
unit = 2
model = "eastron-sdm630"
role = "consumption"
interval = "500ms"
[[meter]]
name = "pv"
bus = "lan"
unit = 3
model = "eastron-sdm630"
role = "production"
interval = "500ms"
reverse = true
[[meter]]
name = "inverter"
bus = "lan"
unit = 4
model = "sunspec"
role = "production"
interval = "500ms"
"#
        ),
    )
    .expect("config");
    let a = Agent::start(&cfg, web_port, &dir.path().join("agent.log"));
    a.wait_web();
    let got = eventually(Duration::from_secs(20), || {
        let g = acker.seen.lock().expect("acker");
        let n = |m: &str, q: Quality| {
            g.readings
                .values()
                .filter(|r| r.meter == m && r.quality == q)
                .count()
        };
        n("grid", Quality::Good) >= 4
            && n("pv", Quality::Good) >= 4
            && n("absent", Quality::Failed) >= 1
            && g.readings
                .values()
                .any(|r| r.meter == "inverter" && r.values.p_w.is_some())
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
    };
    let grid = last("grid").expect("grid reading");
    let p = grid.values.p_w.expect("grid power");
    assert!((p - 1500.0).abs() < 1.0, "grid p_w {p}");
    // Counters are due less often than power (the profile's counter interval): the first poll has them.
    let counters = g
        .readings
        .values()
        .find(|r| r.meter == "grid" && r.values.e_imp_wh.is_some());
    let e = counters.and_then(|r| r.values.e_imp_wh).unwrap_or(0.0);
    assert!(e >= 5_000_000.0, "grid import counter {e}");
    // The PV meter is mounted reversed: the simulator imports 2750 W, the agent reports export.
    let pv = last("pv").expect("pv reading");
    assert!(
        pv.values.p_w.is_some_and(|p| (p - 2750.0).abs() < 1.0),
        "pv p_w {:?}",
        pv.values.p_w
    );
    let inv = g
        .readings
        .values()
        .rev()
        .find(|r| r.meter == "inverter" && r.values.p_w.is_some())
        .unwrap_or_else(|| panic!("no inverter power; log:\n{log}"));
    assert!(
        inv.values.p_w.is_some_and(|p| (p + 2000.0).abs() < 1.0),
        "inverter p_w {:?}",
        inv.values.p_w
    );
    let absent = g
        .readings
        .values()
        .find(|r| r.meter == "absent")
        .expect("absent meter reading");
    assert_eq!(absent.quality, Quality::Failed);
    assert!(!absent.missing.is_empty());
    drop(g);
    let h = a.health().expect("health");
    assert_eq!(h["meters"]["grid"]["state"], "ok", "{h}");
    assert_eq!(h["meters"]["absent"]["state"], "failed", "{h}");
    server.abort();
}
