//! The building's side of the signal through a Mosquitto the test starts: the agent's listener
//! keeps the retained signal and its alerts when the hub signed them (and refuses the unsigned), and Home Assistant discovery is announced (read back
//! with `mosquitto_sub`), kept fresh, and announced again when Home Assistant says `online`.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, mosquitto_pub_cmd, mosquitto_sub, require_mosquitto, runtime, wait_until};
use socer::site::config::parse_mqtt_url;
use socer::site::{ha, signal};
use socer::wire::{self, Alert, Level, Signal, Topics};

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
        ca_pem: None,
        username: None,
        password: None,
        discovery: ha::discovery(&topics, "STPS depot", &[]),
        topics: topics.clone(),
        state_every: Duration::from_millis(300),
        state: Arc::new(
            || serde_json::json!({"building_load_w": 1234.0, "community_surplus": "ON"}),
        ),
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
    publish(port, &t.signal(), &signed::<Signal>(&t.signal(), signal_json), true);
    assert!(wait_until(10, || shared.lock().unwrap().signal.is_some()));
    let s: Signal = shared.lock().unwrap().signal.clone().unwrap();
    assert_eq!(
        (s.community.level, s.community.surplus_kw),
        (Level::Green, 25.0)
    );

    let alert = r#"{"id":"socer-20260610T1000-open","kind":"open","site":"stps","ts":"2026-06-10T10:00:00Z","window_start":"2026-06-10T10:00:00Z","window_end":"2026-06-10T13:00:00Z","expected_surplus_kwh":75.0,"loads":[{"name":"bus charging","power_kw":50.0,"hours":1.5}],"text_it":"Finestra verde aperta ora","text_en":"Green window open now"}"#;
    publish(port, &t.site_alerts("stps"), alert, false);
    publish(port, &t.site_alerts("stps"), &signed::<Alert>(&t.site_alerts("iperal"), alert), false);
    publish(port, &t.site_alerts("iperal"), &signed::<Alert>(&t.site_alerts("iperal"), alert), false);
    publish(port, &t.site_alerts("stps"), &signed::<Alert>(&t.site_alerts("stps"), alert), false);
    assert!(wait_until(10, || !shared.lock().unwrap().alerts.is_empty()));
    std::thread::sleep(Duration::from_millis(300));
    let r = shared.lock().unwrap().clone();
    assert_eq!(r.alerts.len(), 1, "only this site's signed alerts");
    // The unsigned signal, the unsigned alert and the one signed for another site's topic.
    assert_eq!(r.broadcasts_refused, 3);
    assert_eq!(r.alerts[0].loads[0].hours, 1.5);
}
