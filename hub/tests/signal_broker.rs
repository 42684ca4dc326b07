//! The load-shift signal through a real broker: the hub's embedded rumqttd keeps it retained, and
//! `mosquitto_sub` (a client we did not write) reads it back, with the alert of the window that
//! opens and the targeted one of the site with a flexible load; `GET /api/v1/signal` agrees.

mod central_support;
mod common;

use std::path::Path;

use central_support::*;
use common::*;
use socer::central::{self, config};
use socer::wire::{self, Alert, AlertKind, Batch, Level, Signal, Topics};

fn start_hub(dir: &Path, broker: &str, extra: &str) -> (tokio::runtime::Runtime, central::Running) {
    let path = dir.join("central.toml");
    std::fs::write(&path, format!("{}\n{extra}", config_text(dir, broker))).unwrap();
    let cfg = config::load(&path).unwrap();
    start_central(cfg)
}

/// A sealed batch of one grid reading at `p_w` (negative: exporting), now.
fn grid_batch(site: &str, key_hex: &str, p_w: f64) -> Vec<u8> {
    let now = chrono::Utc::now();
    let batch = Batch {
        site: site.into(),
        sent: now,
        readings: vec![reading(1, "grid", now, p_w, 1000.0, 2000.0)],
        dropped_through: None,
        unacked_from: None,
    };
    wire::seal(
        &key(key_hex),
        site,
        &Topics::new("socer").readings(site),
        &batch,
    )
}

/// `mosquitto_sub` for one message on `topic`, started now, waiting up to `secs`.
fn sub_in_background(port: u16, topic: &str, secs: u32) -> std::process::Child {
    mosquitto_sub(port, Some(("domus-1", PW_DOMUS)), topic, 1, secs)
}

/// The alert `child` received on `topic`, verified with the hub's public key.
fn alert_of(child: std::process::Child, hub: &wire::HubPublicKey, topic: &str) -> Alert {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "no alert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wire::verify(hub, topic, out.stdout.trim_ascii_end()).unwrap()
}

#[test]
fn surplus_turns_the_retained_signal_green_and_opens_a_window_for_the_flexible_site() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_rt, hub) = start_hub(
        dir.path(),
        &format!("listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""),
        "[signal]\nmin_dwell_minutes = 1\n\n[[flex]]\nsite = \"iperal\"\nname = \"refrigeration\"\npower_kw = 20.0\nshift_hours = 2.0\n",
    );
    let topics = Topics::new("socer");
    // Listen for the alerts before the surplus appears (alerts are not retained).
    let community_alert = sub_in_background(port, &topics.alerts(), 20);
    let site_alert = sub_in_background(port, &topics.site_alerts("iperal"), 20);
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Iperal exports 30 kW, the condominium draws 5 kW: 25 kW of surplus.
    let readings = topics.readings("iperal");
    let domus = topics.readings("domus-1");
    let sent = wait_until(15, || {
        mosquitto_pub(
            port,
            "iperal",
            "pw-iperal",
            &readings,
            &grid_batch("iperal", KEY_IPERAL, -30_000.0),
            dir.path(),
        );
        mosquitto_pub(
            port,
            "domus-1",
            PW_DOMUS,
            &domus,
            &grid_batch("domus-1", KEY_DOMUS, 5_000.0),
            dir.path(),
        );
        hub.hub
            .signal
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.community.level == Level::Green)
    });
    assert!(sent, "the hub never turned green");

    let bytes = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &topics.signal());
    // Signed by the hub: it verifies with the hub's public key, and with no other.
    let public = hub.hub.public_key();
    let s: Signal = wire::verify(&public, &topics.signal(), &bytes).unwrap();
    let stranger = wire::generate_signing_key().verifying_key();
    assert!(wire::verify::<Signal>(&stranger, &topics.signal(), &bytes).is_err());
    assert_eq!(s.community.zone, "socer");
    assert_eq!(s.community.level, Level::Green);
    assert_eq!(s.community.openadr_level, 0);
    assert_eq!(s.community.surplus_kw, 25.0);
    assert_eq!(s.community.consumption_kw, 5.0);
    let s1 = s.substations.iter().find(|z| z.zone == "S1").unwrap();
    assert_eq!((s1.level, s1.surplus_kw), (Level::Green, 25.0));
    // No history yet: 24 hourly slots.
    assert_eq!(s.forecast.len(), 24);
    assert!(s
        .forecast
        .windows(2)
        .all(|w| w[1].start - w[0].start == chrono::Duration::hours(1)));

    let api = json_get(hub.web_addr, "/api/v1/signal");
    assert_eq!(api["community"]["level"], "green");
    assert_eq!(api["community"]["openadr_level"], 0);

    let a = alert_of(community_alert, &public, &topics.alerts());
    assert_eq!(a.kind, AlertKind::Open);
    assert_eq!(a.site, None);
    assert!(a.text_it.contains("Finestra verde aperta"), "{}", a.text_it);
    assert!(
        a.expected_surplus_kwh >= 25.0 * 0.5,
        "{}",
        a.expected_surplus_kwh
    );
    let t = alert_of(site_alert, &public, &topics.site_alerts("iperal"));
    assert_eq!(
        (t.kind, t.site.as_deref()),
        (AlertKind::Open, Some("iperal"))
    );
    assert_eq!(t.loads[0].name, "refrigeration");
    assert!(t.loads[0].hours >= 0.5, "{:?}", t.loads);
}

#[test]
fn signal_api_says_unavailable_before_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_rt, hub) = start_hub(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
        ),
        "",
    );
    let (status, body) = http_get(hub.web_addr, "/api/v1/signal", None);
    assert_eq!(status, 503, "{body}");
}

#[test]
fn the_central_check_refuses_a_flex_load_of_an_unknown_site_and_crossed_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_text(dir.path(), "listen = \"127.0.0.1:1883\"");
    let path = dir.path().join("central.toml");
    let good = format!("{base}\n[[flex]]\nsite = \"iperal\"\nname = \"frigo\"\npower_kw = 20.0\nshift_hours = 2.0\n");
    assert!(config::check(&path, &good).is_empty());
    let cfg = config::load(&{
        std::fs::write(&path, &good).unwrap();
        path.clone()
    })
    .unwrap();
    assert_eq!(cfg.flex.len(), 1);
    assert_eq!(cfg.signal.min_dwell_minutes, 15);

    let unknown = good.replace(
        "site = \"iperal\"\nname = \"frigo\"",
        "site = \"nowhere\"\nname = \"frigo\"",
    );
    let d = config::check(&path, &unknown);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message.contains("unknown site \"nowhere\""),
        "{}",
        d[0].message
    );
    let crossed = format!("{base}\n[signal]\ngreen_enter = 0.05\ngreen_exit = 0.2\n");
    assert_eq!(config::check(&path, &crossed).len(), 1);
    let typo = format!("{base}\n[signal]\ngreen_entry = 0.05\n");
    assert_eq!(config::check(&path, &typo).len(), 1);
}
