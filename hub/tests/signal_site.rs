//! The building's side of the signal through a Mosquitto the test starts: the agent's listener
//! keeps the retained signal and its alerts when the hub signed them (and refuses the unsigned), and Home Assistant discovery is announced (read back
//! with `mosquitto_sub`), kept fresh, and announced again when Home Assistant says `online`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, mosquitto_pub_cmd, mosquitto_sub, require_mosquitto, runtime, wait_until};
use socer::site::config::{parse_mqtt_url, Role};
use socer::site::web::MeterInfo;
use socer::site::{ha, signal};
use socer::wire::{self, Alert, Level, Signal, Topics};
use socer_drivers::reading::{Quality, Reading, Values};

fn start_mosquitto(dir: &Path, port: u16) -> common::Reaped {
    common::start_mosquitto(dir, port, "allow_anonymous true\nuser root\n")
}

fn sub(port: u16, topic: &str, count: u32, secs: u32) -> Child {
    mosquitto_sub(port, None, topic, count, secs)
}

fn lines(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn hub_key() -> wire::HubSigningKey {
    wire::signing_key_from_hex(&"42".repeat(32)).unwrap()
}

/// `json` parsed as `T` and signed by the hub for `topic`.
fn signed<T: serde::Serialize + serde::de::DeserializeOwned>(topic: &str, json: &str) -> String {
    let v: T = serde_json::from_str(json).unwrap();
    String::from_utf8(wire::sign(&hub_key(), topic, &v)).unwrap()
}

fn publish(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut c = mosquitto_pub_cmd("127.0.0.1", port, None);
    c.args(["-t", topic, "-m", payload]);
    if retain {
        c.arg("-r");
    }
    assert!(c.status().unwrap().success());
}

#[test]
fn home_assistant_discovery_is_retained_fresh_and_announced_again_when_ha_comes_online() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _m = start_mosquitto(dir.path(), port);
    let rt = runtime();
    let topics = ha::HaTopics::new("homeassistant", "socer", "stps");
    let link = ha::HaLink {
        broker: parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        client_id: "socer-site-stps.socer.ha.stps.a1b2c3d4e5f6".into(),
        ca_pem: None,
        username: None,
        password: None,
        discovery: ha::discovery(&topics, "STPS depot", &[]),
        topics: topics.clone(),
        state_every: Duration::from_millis(300),
        state: {
            let t = topics.state();
            Arc::new(move || {
                let s = serde_json::json!({"building_load_w": 1234.0, "community_surplus": "ON"});
                vec![(t.clone(), s.to_string())]
            })
        },
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _enter = rt.enter();
    let _task = ha::spawn(link, stop_rx);

    let surplus = topics.config("binary_sensor", "community_surplus");
    assert!(wait_until(10, || {
        let c = sub(port, &surplus, 1, 1);
        c.wait_with_output().is_ok_and(|o| o.status.success())
    }));
    let got = lines(sub(port, &surplus, 1, 5));
    let cfg: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(cfg["state_topic"], "socer/socer/stps/ha/state");
    assert_eq!(cfg["payload_on"], "ON");
    assert_eq!(cfg["device"]["name"], "STPS depot");
    let avail = lines(sub(port, &topics.availability(), 1, 5));
    assert_eq!(avail, vec!["online".to_string()]);

    let state = lines(sub(port, &topics.state(), 1, 5));
    let s: serde_json::Value = serde_json::from_str(&state[0]).unwrap();
    assert_eq!(s["building_load_w"], 1234.0);

    // Home Assistant restarts: its birth message brings every config again (after the retained one).
    let again = sub(port, &surplus, 2, 5);
    std::thread::sleep(Duration::from_millis(500));
    publish(port, "homeassistant/status", "online", false);
    assert_eq!(lines(again).len(), 2);
}

fn pv(name: &str) -> MeterInfo {
    MeterInfo {
        name: name.into(),
        model: "huawei-sun2000".into(),
        role: Role::Production,
        pod: None,
        bus: "lan".into(),
        unit: 2,
        endpoint: "tcp 127.0.0.1:502".into(),
        interval_s: 5.0,
        counter_interval_s: 60.0,
    }
}

fn pv_reading(meter: &str, s: i64, exp_wh: Option<f64>) -> Reading {
    Reading {
        meter: meter.into(),
        ts: chrono::DateTime::UNIX_EPOCH
            + chrono::Duration::days(20_000)
            + chrono::Duration::seconds(s),
        mono_ms: 0,
        values: Values {
            p_w: Some(-3000.0),
            e_exp_wh: exp_wh,
            ..Values::default()
        },
        quality: Quality::Good,
        missing: vec![],
        energy_integrated: false,
    }
}

#[test]
fn home_assistant_role_total_never_decreases_while_one_meter_misses_its_counter() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _m = start_mosquitto(dir.path(), port);
    let rt = runtime();
    let topics = ha::HaTopics::new("homeassistant", "socer", "domus-2");
    let meters = vec![pv("pv1"), pv("pv2")];
    let book = Arc::new(ha::CounterBook::default());
    // The virtual time of the readings fed so far.
    let now = Arc::new(Mutex::new(pv_reading("x", 0, None).ts));
    let link = ha::HaLink {
        broker: parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        client_id: "socer-site-stps.socer.ha.stps.a1b2c3d4e5f6".into(),
        ca_pem: None,
        username: None,
        password: None,
        discovery: ha::discovery(&topics, "Condominio Via Trento 4", &meters),
        topics: topics.clone(),
        state_every: Duration::from_millis(100),
        state: {
            let (t, m, b, n) = (topics.clone(), meters.clone(), book.clone(), now.clone());
            Arc::new(move || {
                let at = *n.lock().unwrap();
                ha::messages(&t, &m, &BTreeMap::new(), None, &b, at)
            })
        },
    };
    // An independent client sees the discovery config and every energy value published.
    let cfg_topic = topics.config("sensor", "production");
    let mut energy_cmd = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"])
        .args([
            "-t",
            "socer/socer/domus-2/ha/energy/#",
            "-C",
            "400",
            "-W",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _enter = rt.enter();
    let _task = ha::spawn(link, stop_rx);
    let got = lines(sub(port, &cfg_topic, 1, 5));
    let cfg: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(cfg["state_class"], "total_increasing");
    assert_eq!(cfg["device_class"], "energy");
    assert_eq!(cfg["unit_of_measurement"], "kWh");
    assert_eq!(cfg["default_entity_id"], "sensor.socer_domus_2_production");
    assert!(cfg.get("object_id").is_none());
    assert_eq!(cfg["origin"]["name"], "socer");
    assert_eq!(cfg["state_topic"], topics.energy("production_kwh"));
    let one = lines(sub(
        port,
        &topics.config("sensor", "meter_pv2_export"),
        1,
        5,
    ));
    let one: serde_json::Value = serde_json::from_str(&one[0]).unwrap();
    assert_eq!(one["state_topic"], topics.energy("meter_pv2_export_kwh"));

    // pv2's counter: read, then missing from its fast readings, silent for 5 minutes, a glitch
    // to 0 (a reboot), then back on course.
    let steps: [(i64, Option<f64>, Option<f64>); 7] = [
        (0, Some(62_993_000.0), Some(62_994_000.0)),
        (5, Some(62_993_010.0), None),
        (10, Some(62_993_020.0), None),
        (300, Some(62_993_500.0), None),
        (305, Some(62_993_510.0), Some(0.0)),
        (310, Some(62_993_520.0), Some(62_994_400.0)),
        (315, Some(62_993_530.0), None),
    ];
    for (s, a, b) in steps {
        book.observe(Role::Production, &pv_reading("pv1", s, a));
        book.observe(Role::Production, &pv_reading("pv2", s, b));
        *now.lock().unwrap() = pv_reading("x", s, None).ts;
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = energy_cmd.kill();
    let out = energy_cmd.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut totals = Vec::new();
    let mut pv2 = Vec::new();
    for line in text.lines() {
        let Some((topic, v)) = line.split_once(' ') else {
            continue;
        };
        let v: f64 = v.parse().unwrap_or(f64::NAN);
        if topic.ends_with("/production_kwh") {
            totals.push(v);
        } else if topic.ends_with("/meter_pv2_export_kwh") {
            pv2.push(v);
        }
    }
    eprintln!("production_kwh as published: {totals:?}");
    assert!(totals.len() >= 4, "{text}");
    assert!(
        totals.windows(2).all(|w| w[1] >= w[0]),
        "decreased: {totals:?}"
    );
    assert!(
        totals.iter().all(|&v| v >= 125_987.0),
        "a partial sum went out: {totals:?}"
    );
    assert!(totals.contains(&125_987.0) && totals.contains(&125_987.02));
    assert!(totals.contains(&125_987.92), "{totals:?}");
    assert!(
        !totals.contains(&125_987.51),
        "no total while pv2 was silent: {totals:?}"
    );
    assert!(pv2.windows(2).all(|w| w[1] >= w[0]), "{pv2:?}");
    assert!(!pv2.contains(&0.0), "the glitch went out: {pv2:?}");
}

#[test]
fn the_site_keeps_the_signed_retained_signal_and_its_alerts_and_refuses_unsigned_ones() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _m = start_mosquitto(dir.path(), port);
    let rt = runtime();
    let t = Topics::new("socer");
    let signal_json = r#"{"ts":"2026-06-10T10:00:00Z","community":{"zone":"socer","level":"green","openadr_level":0,"surplus_kw":25.0,"production_kw":30.0,"consumption_kw":5.0,"since":"2026-06-10T09:45:00Z"},"substations":[],"forecast":[]}"#;
    // Unsigned (as v1 sent it): refused; the hub's signed one follows and is kept.
    publish(port, &t.signal(), signal_json, true);

    let shared = signal::SharedSignal::default();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = signal::ListenConfig {
        broker: parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        ca_pem: None,
        username: None,
        password: None,
        community: "socer".into(),
        site: "stps".into(),
        key: b"stps-key".to_vec(),
        hub_public_key: Some(hub_key().verifying_key()),
    };
    let _enter = rt.enter();
    let _task = signal::spawn(cfg, shared.clone(), stop_rx);
    assert!(wait_until(10, || shared.lock().unwrap().broadcasts_refused == 1));
    assert!(shared.lock().unwrap().signal.is_none());
    publish(
        port,
        &t.signal(),
        &signed::<Signal>(&t.signal(), signal_json),
        true,
    );
    assert!(wait_until(10, || shared.lock().unwrap().signal.is_some()));
    let s: Signal = shared.lock().unwrap().signal.clone().unwrap();
    assert_eq!(
        (s.community.level, s.community.surplus_kw),
        (Level::Green, 25.0)
    );

    let alert = r#"{"id":"socer-20260610T1000-open","kind":"open","site":"stps","ts":"2026-06-10T10:00:00Z","window_start":"2026-06-10T10:00:00Z","window_end":"2026-06-10T13:00:00Z","expected_surplus_kwh":75.0,"loads":[{"name":"bus charging","power_kw":50.0,"hours":1.5}],"text_it":"Finestra verde aperta ora","text_en":"Green window open now"}"#;
    publish(port, &t.site_alerts("stps"), alert, false);
    publish(
        port,
        &t.site_alerts("stps"),
        &signed::<Alert>(&t.site_alerts("iperal"), alert),
        false,
    );
    publish(
        port,
        &t.site_alerts("iperal"),
        &signed::<Alert>(&t.site_alerts("iperal"), alert),
        false,
    );
    publish(
        port,
        &t.site_alerts("stps"),
        &signed::<Alert>(&t.site_alerts("stps"), alert),
        false,
    );
    assert!(wait_until(10, || !shared.lock().unwrap().alerts.is_empty()));
    std::thread::sleep(Duration::from_millis(300));
    let r = shared.lock().unwrap().clone();
    assert_eq!(r.alerts.len(), 1, "only this site's signed alerts");
    // The unsigned signal, the unsigned alert and the one signed for another site's topic.
    assert_eq!(r.broadcasts_refused, 3);
    assert_eq!(r.alerts[0].loads[0].hours, 1.5);
}
