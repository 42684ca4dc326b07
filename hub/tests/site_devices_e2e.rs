//! One building with the devices So.CER members really have, end to end: a Sinapsi Alfa (the
//! official meter's Chain 2 reader) and a Huawei LUNA2000 battery (the storage side of a SUN2000
//! hybrid), each served by pymodbus from its document-typed image; a Shelly Pro 3EM publishing
//! its Gen2 status with `mosquitto_pub` on the building's Mosquitto; and a meter behind a
//! transparent RS-485 gateway (RTU over TCP, the drivers' RTU simulator behind a loopback
//! forwarder). The real `socer site` reads them all and uplinks to the real hub (in process,
//! embedded broker); the hub acks the readings and lists every meter, the site's API and the
//! resident page in Chromium show the battery.

mod common;
mod pages_support;
mod site_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;
use serde_json::Value;
use site_common::{http_get, Agent};
use socer_drivers::sim::rtu::{serve_rtu, LineConfig, Parity};
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::{ProfileSet, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

const KEY: &str = "7a1f0c3a9e1d2b4c6a8e7f90123456789abcdef0123456789abcdef012345678";
const SITE: &str = "domus-7";
const PW: &str = "pw-domus-7";

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("SOCER_PYTHON").unwrap_or_else(|_| "/opt/socer-venv/bin/python".into()),
    )
}

/// pymodbus serving a document-typed image (`drivers/tests/images/NAME.toml`) on loopback.
fn serve_image(name: &str, port: u16) -> Reaped {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .arg(root.join("tests/peers/image_peer.py"))
        .arg("serve")
        .arg(root.join(format!("../drivers/tests/images/{name}.toml")))
        .args(["--tcp", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start the pymodbus peer ({e}): run tools/install-test-deps")
        });
    let stdout = child.stdout.take().expect("peer stdout");
    let guard = Reaped(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "READY" {
                let _ = tx.send(());
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!("pymodbus peer for {name} not ready: run tools/install-test-deps")
        });
    guard
}

/// The hub: embedded broker on `broker_port`, the site and its four meters on one POD.
fn hub_config(dir: &Path, broker_port: u16) -> socer::central::config::CentralConfig {
    let text = format!(
        r#"[central]
community = "socer"
name = "So.CER e2e"
latitude = 46.17
longitude = 9.87

[broker]
listen = "127.0.0.1:{broker_port}"
username = "central"
password = "pw-central"

[web]
listen = "127.0.0.1:0"
report_token = "token-e2e"

[storage]
path = "{db}"

[prices]
zonal_eur_mwh = 100.0

[[substation]]
id = "S1"
name = "Sondrio"

[[site]]
id = "{SITE}"
key = "{KEY}"
password = "{PW}"
members = ["domus"]

[[member]]
id = "domus"
kind = "household"
pod = "P-DOMUS"
substation = "S1"
site = "{SITE}"

[[plant]]
id = "pv-domus"
pod = "P-DOMUS"
peak_kw = 6.0
commissioned = "2025-01-01"

[[meter]]
site = "{SITE}"
name = "alfa"
pod = "P-DOMUS"
role = "grid"

[[meter]]
site = "{SITE}"
name = "battery"
pod = "P-DOMUS"
role = "storage"

[[meter]]
site = "{SITE}"
name = "shelly"
pod = "P-DOMUS"
role = "consumption"

[[meter]]
site = "{SITE}"
name = "pv"
pod = "P-DOMUS"
role = "production"
"#,
        db = dir.join("central.db").display()
    );
    let path = dir.join("central.toml");
    std::fs::write(&path, text).expect("central config");
    socer::central::config::load(&path).expect("the central config loads")
}

/// A Shelly Pro 3EM's status as its Gen2 API documents it: `EM.GetStatus` on
/// `<prefix>/status/em:0` and the energy data in a `NotifyStatus` on `<prefix>/events/rpc`.
const SHELLY_EM: &str = r#"{"id":0,"a_current":1.402,"a_voltage":231.2,"a_act_power":301.5,"a_aprt_power":320.1,"a_pf":0.94,"b_current":0.8,"b_voltage":230.7,"b_act_power":160.25,"b_aprt_power":184.0,"b_pf":0.87,"c_current":0.31,"c_voltage":232.0,"c_act_power":62.0,"c_aprt_power":71.9,"c_pf":0.86,"n_current":null,"total_current":2.512,"total_act_power":523.75,"total_aprt_power":576.0}"#;
const SHELLY_NOTIFY: &str = r#"{"src":"shellypro3em-domus7","dst":"shellypro3em-domus7/events","method":"NotifyStatus","params":{"ts":1764600000.25,"emdata:0":{"id":0,"total_act":845123.5,"total_act_ret":1200.25}}}"#;

fn now_json(web_port: u16) -> Value {
    http_get(web_port, "/api/v1/now")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

fn meter<'a>(now: &'a Value, name: &str) -> &'a Value {
    now["meters"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn a_building_with_an_alfa_a_battery_a_shelly_over_mqtt_and_a_gateway_reaches_the_hub() {
    require_mosquitto();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // (a) the Alfa and (b) the battery: pymodbus from their typed images.
    let (alfa_port, bat_port) = (free_port(), free_port());
    let _alfa = serve_image("sinapsi-alfa", alfa_port);
    let _bat = serve_image("huawei-luna2000", bat_port);

    // (d) a meter on an RS-485 line behind a transparent gateway.
    let rt = runtime();
    let gw_port = rt.block_on(async {
        let set = ProfileSet::builtin().expect("built-in profiles");
        let pv = SimDevice::from_profile(
            set.get("eastron-sdm630").expect("profile"),
            Arc::new(SystemClock::new()),
            Box::new(NoisyPower::new(-2200.0, 0.0, 1)),
            PhysicsConfig {
                grid_noise: 0.0,
                import_wh: 100.0,
                export_wh: 3_000_000.0,
                ..PhysicsConfig::default()
            },
        );
        let (mut master, slave) = SerialStream::pair().expect("a pty pair");
        let line = LineConfig {
            baud: 9600,
            parity: Parity::None,
            stop_bits: 1,
            turnaround: Duration::from_millis(5),
        };
        tokio::spawn(serve_rtu(slave, Arc::new(BTreeMap::from([(3u8, pv)])), line));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
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
        port
    });

    // (c) the Shelly: the building's Mosquitto, an independent client publishing its status.
    let building_port = free_port();
    let _building = start_mosquitto(d, building_port, "allow_anonymous true\n");
    let publishing = Arc::new(AtomicBool::new(true));
    let shelly = {
        let publishing = publishing.clone();
        std::thread::spawn(move || {
            while publishing.load(Ordering::Relaxed) {
                for (topic, body) in [
                    ("shellypro3em-domus7/status/em:0", SHELLY_EM),
                    ("shellypro3em-domus7/events/rpc", SHELLY_NOTIFY),
                ] {
                    let _ = Command::new("mosquitto_pub")
                        .args(["-h", "127.0.0.1", "-p", &building_port.to_string()])
                        .args(["-q", "0", "-t", topic, "-m", body])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };

    // The hub, then the site uplinked to it.
    let hub_broker = free_port();
    let (_hub_rt, hub) = start_central(hub_config(d, hub_broker));
    let hub_web = hub.web_addr.port();
    let web_port = free_port();
    std::fs::write(d.join("site.key"), KEY).expect("key");
    let cfg = d.join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[site]
id = "{SITE}"
community = "socer"
clock = "trust"
[mqtt]
url = "mqtt://127.0.0.1:{hub_broker}"
username = "{SITE}"
password = "{PW}"
key_file = "site.key"
batch_readings = 50
[storage]
path = "data"
[web]
listen = "127.0.0.1:{web_port}"

[[bus]]
name = "alfa-wifi"
tcp = "127.0.0.1:{alfa_port}"
timeout_ms = 2000
[[bus]]
name = "inverter"
tcp = "127.0.0.1:{bat_port}"
timeout_ms = 2000
[[bus]]
name = "cantina"
rtu_over_tcp = "127.0.0.1:{gw_port}"
baud = 9600
timeout_ms = 1000
[[bus]]
name = "wifi"
mqtt = "mqtt://127.0.0.1:{building_port}"

[[meter]]
name = "alfa"
bus = "alfa-wifi"
unit = 1
model = "sinapsi-alfa"
role = "grid"
interval = "10s"
[[meter]]
name = "battery"
bus = "inverter"
unit = 1
model = "huawei-luna2000"
role = "storage"
interval = "2s"
[[meter]]
name = "pv"
bus = "cantina"
unit = 3
model = "eastron-sdm630"
role = "production"
interval = "2s"
[[meter]]
name = "shelly"
bus = "wifi"
model = "shelly-gen2"
topic = "shellypro3em-domus7"
role = "consumption"
interval = "5s"
"#
        ),
    )
    .expect("site config");
    let check = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(&cfg)
        .output()
        .expect("socer check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = d.join("agent.log");
    let agent = Agent::start(&cfg, web_port, &log);
    agent.wait_web();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Every meter read with its document's values, on the site's own API.
    let all_read = wait_for(Duration::from_secs(90), || {
        let now = now_json(web_port);
        ["alfa", "battery", "pv", "shelly"]
            .iter()
            .all(|m| meter(&now, m)["health"] == "ok" && !meter(&now, m)["reading"].is_null())
            && meter(&now, "shelly")["reading"]["e_imp_wh"].is_number()
    });
    let now = now_json(web_port);
    assert!(
        all_read,
        "not every meter was read: {now}\nlog:\n{}",
        log_text()
    );
    let r = |m: &str, q: &str| meter(&now, m)["reading"][q].as_f64();
    // Sinapsi Alfa image: withdrawal 1830 W, counters 12 345 678 / 2 345 678 Wh.
    assert_eq!(r("alfa", "p_w"), Some(1830.0));
    assert_eq!(r("alfa", "e_imp_wh"), Some(12_345_678.0));
    assert_eq!(r("alfa", "e_exp_wh"), Some(2_345_678.0));
    // LUNA2000 image: 73.4 %, −2100 W (discharging), charged 3 456 780 Wh, discharged 3 123 450.
    assert_eq!(r("battery", "soc_pct"), Some(73.4));
    assert_eq!(r("battery", "bat_p_w"), Some(-2100.0));
    assert_eq!(r("battery", "p_w"), Some(-2100.0), "the battery's exchange");
    assert_eq!(
        r("battery", "e_imp_wh"),
        Some(3_456_780.0),
        "charged = imported"
    );
    assert_eq!(
        r("battery", "e_exp_wh"),
        Some(3_123_450.0),
        "discharged = exported"
    );
    // The Shelly's documented fields.
    assert_eq!(r("shelly", "p_w"), Some(523.75));
    assert_eq!(r("shelly", "e_imp_wh"), Some(845_123.5));
    assert_eq!(r("shelly", "e_exp_wh"), Some(1200.25));
    assert_eq!(
        meter(&now, "shelly")["reading"]["v_v"][1].as_f64(),
        Some(230.7)
    );
    assert!(meter(&now, "shelly")["endpoint"]
        .as_str()
        .is_some_and(|e| e.starts_with("mqtt ")));
    // The gateway's meter exports 2.2 kW.
    assert!(
        r("pv", "p_w").is_some_and(|p| (p + 2200.0).abs() < 1.0),
        "{:?}",
        r("pv", "p_w")
    );
    assert_eq!(now["battery"]["soc_pct"].as_f64(), Some(73.4), "{now}");
    assert_eq!(now["battery"]["power_w"].as_f64(), Some(-2100.0), "{now}");

    // The hub: readings of every meter stored and acked, the site's meters listed with readings.
    let acked = wait_for(Duration::from_secs(60), || {
        let h: Value = http_get(web_port, "/api/v1/health")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        let sites: Value = pages_support::http_get(hub_web, "/api/v1/sites")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        let site = sites["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == SITE))
            .cloned()
            .unwrap_or_default();
        let listed = ["alfa", "battery", "pv", "shelly"].iter().all(|m| {
            site["meters"].as_array().is_some_and(|ms| {
                ms.iter().any(|x| {
                    x["name"] == *m && x["health"] == "ok" && x["last_reading"].is_string()
                })
            })
        });
        let stored = {
            let reader = hub.hub.reader();
            let ids: BTreeMap<String, i64> = reader
                .meters()
                .unwrap_or_default()
                .into_iter()
                .map(|k| (k.name, k.id))
                .collect();
            ["alfa", "battery", "pv", "shelly"].iter().all(|m| {
                ids.get(*m).is_some_and(|id| {
                    reader
                        .counter_samples(*id, 0, i64::MAX / 2)
                        .is_ok_and(|s| !s.is_empty())
                })
            })
        };
        let soc_listed = site["meters"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|x| x["name"] == "battery" && x["soc_pct"].as_f64() == Some(73.4))
        });
        let hub_ack = site["acked_seq"].as_u64().unwrap_or(0);
        let site_ack = h["outbox"]["acked"].as_u64().unwrap_or(0);
        listed && soc_listed && stored && hub_ack > 0 && site_ack > 0
    });
    let sites = pages_support::http_get(hub_web, "/api/v1/sites").unwrap_or_default();
    let health = http_get(web_port, "/api/v1/health").unwrap_or_default();
    assert!(
        acked,
        "the hub did not ack and list every meter: {sites}\nsite health: {health}\nlog:\n{}",
        log_text()
    );
    {
        // The battery's counters reached the hub as its exchange: charged imported.
        let reader = hub.hub.reader();
        let id = reader
            .meters()
            .unwrap_or_default()
            .into_iter()
            .find(|k| k.name == "battery")
            .map(|k| k.id)
            .unwrap_or(-1);
        let s = reader
            .counter_samples(id, 0, i64::MAX / 2)
            .unwrap_or_default();
        let last = s.last().cloned();
        assert_eq!(
            last.map(|s| (s.imp_wh, s.exp_wh)),
            Some((Some(3_456_780.0), Some(3_123_450.0)))
        );
    }

    // The resident page shows the battery: its charge and that it is discharging.
    let mut b = pages_support::Browser::launch();
    b.set_language("it-IT,it;q=0.9");
    b.set_width(360);
    b.open(&format!("http://127.0.0.1:{web_port}/"));
    let shown = b.wait_for(
        "!document.getElementById('t-bat').hidden && document.getElementById('v-bat').dataset.soc === '73.4'",
        Duration::from_secs(30),
    );
    let tile = b.eval("document.getElementById('t-bat').innerText");
    assert!(shown, "the battery tile is not shown: {tile}");
    let tile = tile.as_str().unwrap_or_default().to_string();
    assert!(tile.contains("73 %"), "{tile}");
    assert!(tile.contains("in scarica, 2,1 kW"), "{tile}");
    assert_eq!(
        b.eval("document.documentElement.scrollWidth <= 360"),
        Value::Bool(true),
        "the page is wider than a 360 px phone"
    );
    b.eval("document.querySelector('.lang button[data-lang=en]').click(), true");
    let english = b.wait_for(
        "document.getElementById('bat-state').textContent === 'discharging, 2.1 kW'",
        Duration::from_secs(15),
    );
    let state = b.eval("document.getElementById('bat-state').textContent");
    assert!(english, "in English: {state}");
    b.eval("document.querySelector('.lang button[data-lang=it]').click(), true");
    b.screenshot(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/screenshots/resident-battery-360.png"),
    );

    // The hub's dashboard lists the site with its battery's charge.
    b.set_width(1280);
    b.open(&format!("http://127.0.0.1:{hub_web}/"));
    let listed = b.wait_for(
        &format!("(() => {{ const e = document.querySelector(\"#sites tr[data-site='{SITE}'] small.bat\"); return !!e && e.dataset.soc === '73.4'; }})()"),
        Duration::from_secs(45),
    );
    let row = b.eval(&format!(
        "(document.querySelector(\"#sites tr[data-site='{SITE}']\") || {{}}).innerText || ''"
    ));
    assert!(listed, "the dashboard does not show the battery: {row}");
    assert!(
        row.as_str().is_some_and(|r| r.contains("batteria 73 %")),
        "{row}"
    );

    // The Shelly stops publishing: within 3 periods it is failed on the site, never fresh.
    publishing.store(false, Ordering::Relaxed);
    let _ = shelly.join();
    let failed = wait_for(Duration::from_secs(60), || {
        let now = now_json(web_port);
        let m = meter(&now, "shelly");
        m["health"] == "failed"
            && m["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("nothing published"))
    });
    assert!(
        failed,
        "a silent Shelly stayed fresh: {}",
        now_json(web_port)
    );
    drop(agent);
    drop(rt);
}

/// Hostile and stale input on the building's broker: a retained status (of unknown age), JSON
/// that does not parse, a payload over the size limit, one over the client's packet limit and
/// binary noise. The agent keeps running, refuses and logs them, never shows the retained value,
/// and takes the devices' genuine messages that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_payloads_are_refused_and_the_genuine_ones_still_arrive() {
    require_mosquitto();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = free_port();
    let _broker = site_common::Broker::start(d, port);
    let acker = site_common::Acker::start(port);
    let publish = |topic: &str, payload: &[u8], retain: bool| {
        let file = d.join(format!("payload-{}", payload.len()));
        std::fs::write(&file, payload).expect("payload file");
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "0",
            "-t",
            topic,
        ]);
        if retain {
            cmd.arg("-r");
        }
        let _ = cmd
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    // Retained before the agent starts: it would arrive at subscription as if it were new.
    publish(
        "shellyproem-x/status/em1:0",
        br#"{"id":0,"act_power":9999.0,"voltage":230.0}"#,
        true,
    );
    let web_port = free_port();
    std::fs::write(d.join("site.key"), site_common::KEY).expect("key");
    let cfg = d.join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[site]
id = "{}"
community = "{}"
clock = "trust"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
key_file = "site.key"
[storage]
path = "data"
[web]
listen = "127.0.0.1:{web_port}"
[[bus]]
name = "wifi"
mqtt = "mqtt://127.0.0.1:{port}"
[[meter]]
name = "shelly"
bus = "wifi"
model = "shelly-gen2"
topic = "shellyproem-x"
role = "consumption"
interval = "2s"
[[meter]]
name = "pow"
bus = "wifi"
model = "tasmota"
topic = "pow1"
role = "consumption"
interval = "2s"
"#,
            site_common::SITE,
            site_common::COMMUNITY
        ),
    )
    .expect("config");
    let log = d.join("agent.log");
    let mut agent = Agent::start(&cfg, web_port, &log);
    agent.wait_web();
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(
        "shellyproem-x/status/em1:0",
        b"{\"id\":0,\"act_power\":",
        false,
    );
    let big = format!("{{\"id\":0,\"pad\":\"{}\"}}", "x".repeat(40 * 1024));
    publish("shellyproem-x/status/em1:0", big.as_bytes(), false);
    let huge = format!("{{\"pad\":\"{}\"}}", "y".repeat(400 * 1024));
    publish("shellyproem-x/events/rpc", huge.as_bytes(), false);
    publish("tele/pow1/SENSOR", &[0xff, 0x00, 0xfe, 0x7b, 0x22], false);
    let genuine = wait_for_async(Duration::from_secs(60), || {
        publish(
            "shellyproem-x/status/em1:0",
            br#"{"id":0,"current":0.6,"voltage":229.5,"act_power":123.5,"aprt_power":130.0,"pf":0.95,"freq":50.0}"#,
            false,
        );
        publish(
            "tele/pow1/SENSOR",
            br#"{"Time":"2026-12-01T10:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":1.5,"Yesterday":0.1,"Today":0.2,"Power":77,"Voltage":231,"Current":0.4}}"#,
            false,
        );
        let g = acker.seen.lock().expect("acker");
        let has = |m: &str, p: f64| g.readings.values().any(|r| r.meter == m && r.values.p_w == Some(p));
        has("shelly", 123.5) && has("pow", 77.0)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(genuine, "the genuine messages did not arrive; log:\n{text}");
    assert!(
        agent.child.try_wait().ok().flatten().is_none(),
        "the agent exited; log:\n{text}"
    );
    {
        let g = acker.seen.lock().expect("acker");
        assert!(
            !g.readings.values().any(|r| r.values.p_w == Some(9999.0)),
            "a retained message was taken as a fresh reading"
        );
        let pow = g
            .readings
            .values()
            .rev()
            .find(|r| r.meter == "pow" && r.values.p_w.is_some())
            .cloned()
            .expect("a pow reading");
        assert_eq!(pow.values.e_imp_wh, Some(1500.0));
    }
    let refused = wait_for_async(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("refused since the last report"))
    })
    .await;
    assert!(refused, "the refusals were not logged; log:\n{text}");
}

/// Poll `cond` every 700 ms until it holds or `within` has passed.
async fn wait_for_async(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}
