//! The central hub through a real broker: genuine batches are stored and acknowledged; forged,
//! replayed, altered, malformed, oversized, unknown-site and far-future batches published with
//! `mosquitto_pub` (a client we did not write) are refused, counted, and the hub keeps serving.

mod central_support;
mod common;

use std::path::Path;

use central_support::*;
use common::*;
use socer::central::{self, config};
use socer::wire::{self, Ack, Batch, Envelope, Topics};

struct Hub {
    _rt: tokio::runtime::Runtime,
    running: central::Running,
}

/// The hub with its embedded broker listening on `port` (and the hub's own account).
fn start_hub(dir: &Path, port: u16) -> Hub {
    let broker =
        format!("listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\"");
    let path = dir.join("central.toml");
    std::fs::write(&path, config_text(dir, &broker)).unwrap();
    let cfg = config::load(&path).unwrap();
    let (rt, running) = start_central(cfg);
    Hub { _rt: rt, running }
}

fn acked(hub: &Hub, site_id: &str) -> u64 {
    site(&json_get(hub.running.web_addr, "/api/v1/sites"), site_id)["acked_seq"]
        .as_u64()
        .unwrap_or(0)
}

fn metrics(hub: &Hub) -> String {
    http_get(hub.running.web_addr, "/metrics", None).1
}

fn rejected(hub: &Hub, site: &str, reason: &str) -> f64 {
    metric(
        &metrics(hub),
        &format!("socer_rejected_total{{site=\"{site}\",reason=\"{reason}\"}}"),
    )
}

/// The retained ack as `mosquitto_sub` sees it, verified with the site's key.
fn retained_ack(port: u16, user: &str, pw: &str) -> u64 {
    let topic = Topics::new("socer").ack("domus-1");
    let bytes = mosquitto_sub_one(port, user, pw, &topic);
    let env = wire::open_unverified(&bytes).unwrap();
    let ack: Ack = wire::open(&key(KEY_DOMUS), "domus-1", &topic, &env).unwrap();
    ack.seq
}

#[test]
fn embedded_broker_stores_genuine_batches_and_counts_every_kind_of_bad_one() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_hub(dir.path(), port);
    let topic = Topics::new("socer").readings("domus-1");
    let pubd =
        |payload: &[u8]| mosquitto_pub(port, "domus-1", PW_DOMUS, &topic, payload, dir.path());

    // Genuine: stored and acknowledged (the hub subscribes right after connecting: retry briefly).
    let genuine = sealed("domus-1", KEY_DOMUS, 1..=3);
    assert!(wait_until(10, || {
        pubd(&genuine);
        wait_until(1, || acked(&hub, "domus-1") == 3)
    }));
    assert_eq!(
        hub.running.hub.reader().reading_count("domus-1").unwrap(),
        3
    );
    assert_eq!(retained_ack(port, "domus-1", PW_DOMUS), 3);

    // Replayed: the same seqs are stored once, the dedup counter says so.
    let dedup_before = metric(&metrics(&hub), "socer_dedup_hits_total");
    pubd(&genuine);
    assert!(wait_until(5, || metric(
        &metrics(&hub),
        "socer_dedup_hits_total"
    ) >= dedup_before + 3.0));
    assert_eq!(
        hub.running.hub.reader().reading_count("domus-1").unwrap(),
        3
    );

    // Forged: sealed with another key.
    let forged = {
        let b: Batch = {
            let env = wire::open_unverified(&sealed("domus-1", KEY_DOMUS, 4..=4)).unwrap();
            wire::open(&key(KEY_DOMUS), "domus-1", &topic, &env).unwrap()
        };
        wire::seal(&key(KEY_IPERAL), "domus-1", &topic, &b)
    };
    pubd(&forged);
    assert!(wait_until(5, || rejected(&hub, "domus-1", "bad_mac") == 1.0));

    // Altered: a genuine envelope whose ciphertext was changed in transit.
    let mut env: Envelope = serde_json::from_slice(&sealed("domus-1", KEY_DOMUS, 5..=5)).unwrap();
    let flipped = if env.ct.starts_with('A') { "B" } else { "A" };
    env.ct.replace_range(0..1, flipped);
    pubd(&serde_json::to_vec(&env).unwrap());
    assert!(wait_until(5, || rejected(&hub, "domus-1", "bad_mac") == 2.0));

    // Malformed and oversized.
    pubd(b"{\"v\":1,\"site\":\"domus-1\"");
    assert!(wait_until(5, || rejected(&hub, "domus-1", "malformed") == 1.0));
    pubd(&vec![b'x'; wire::MAX_ENVELOPE_BYTES + 10_000]);
    assert!(wait_until(5, || rejected(&hub, "domus-1", "oversized") == 1.0));

    // A version we do not speak.
    pubd(br#"{"v":1,"site":"domus-1","nonce":"","ct":""}"#);
    assert!(wait_until(5, || rejected(&hub, "domus-1", "version") == 1.0));

    // Far future: a genuine seal of a batch sent tomorrow.
    let future = {
        let mut b: Batch = {
            let env = wire::open_unverified(&sealed("domus-1", KEY_DOMUS, 6..=6)).unwrap();
            wire::open(&key(KEY_DOMUS), "domus-1", &topic, &env).unwrap()
        };
        b.sent += chrono::Duration::days(1);
        wire::seal(&key(KEY_DOMUS), "domus-1", &topic, &b)
    };
    pubd(&future);
    assert!(wait_until(5, || rejected(&hub, "domus-1", "far_future") == 1.0));

    // Unknown site (the embedded broker has no per-topic ACL: the MAC gate catches it).
    let intruder = Topics::new("socer").readings("intruder");
    mosquitto_pub(
        port,
        "domus-1",
        PW_DOMUS,
        &intruder,
        &sealed("intruder", KEY_DOMUS, 1..=1),
        dir.path(),
    );
    assert!(wait_until(5, || rejected(
        &hub,
        "(unknown)",
        "unknown_site"
    ) == 1.0));

    // Nothing refused was stored; the hub still serves and still ingests.
    assert_eq!(
        hub.running.hub.reader().reading_count("domus-1").unwrap(),
        3
    );
    let (status, _) = http_get(hub.running.web_addr, "/api/v1/health", None);
    assert_eq!(status, 200);
    pubd(&sealed("domus-1", KEY_DOMUS, 4..=5));
    assert!(wait_until(5, || acked(&hub, "domus-1") == 5));
    // The ack is queued before the API shows it: the broker may hold the old one for a moment.
    assert!(wait_until(5, || retained_ack(port, "domus-1", PW_DOMUS) == 5));
    let sites = json_get(hub.running.web_addr, "/api/v1/sites");
    assert_eq!(site(&sites, "domus-1")["rejected"]["bad_mac"], 2);
    assert_eq!(site(&sites, "domus-1")["state"], "online");
    assert_eq!(metric(&metrics(&hub), "socer_readings_stored_total"), 5.0);
}

#[test]
fn a_gap_holds_the_ack_until_the_missing_batch_arrives() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_hub(dir.path(), port);
    let topic = Topics::new("socer").readings("domus-1");
    let pubd =
        |payload: &[u8]| mosquitto_pub(port, "domus-1", PW_DOMUS, &topic, payload, dir.path());
    assert!(wait_until(10, || {
        pubd(&sealed("domus-1", KEY_DOMUS, 1..=2));
        wait_until(1, || acked(&hub, "domus-1") == 2)
    }));
    // 5..6 arrive before 3..4: stored, but the contiguous ack stays at 2.
    pubd(&sealed("domus-1", KEY_DOMUS, 5..=6));
    assert!(wait_until(5, || hub
        .running
        .hub
        .reader()
        .reading_count("domus-1")
        .unwrap()
        == 4));
    assert_eq!(acked(&hub, "domus-1"), 2);
    pubd(&sealed("domus-1", KEY_DOMUS, 3..=4));
    assert!(wait_until(5, || acked(&hub, "domus-1") == 6));
    assert!(wait_until(5, || retained_ack(port, "domus-1", PW_DOMUS) == 6));
}

#[test]
fn sealed_status_and_last_will_set_the_site_state_newest_first_unsealed_refused() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_hub(dir.path(), port);
    let web = hub.running.web_addr;
    let topic = Topics::new("socer").status("iperal");
    let state = || site(&json_get(web, "/api/v1/sites"), "iperal")["state"].clone();
    let online: wire::Status = serde_json::from_str(
        r#"{"state":"online","version":"0.1.0","backlog":42,"clock_synced":true,"epoch":7,"n":1,
        "meters":[{"name":"grid","model":"eastron-sdm630","role":"grid","pod":"P-IPERAL","health":"ok"}]}"#,
    )
    .unwrap();
    let sealed_online = wire::seal(&key(KEY_IPERAL), "iperal", &topic, &online);
    assert!(wait_until(10, || {
        mosquitto_pub(
            port,
            "iperal",
            "pw-iperal",
            &topic,
            &sealed_online,
            dir.path(),
        );
        wait_until(1, || state() == "online")
    }));
    let sites = json_get(web, "/api/v1/sites");
    let s = site(&sites, "iperal");
    assert_eq!(
        (s["backlog"].as_u64(), s["clock_synced"].as_bool()),
        (Some(42), Some(true))
    );
    assert_eq!(s["meters"][0]["pod"], "P-IPERAL");

    // Unsealed (as v1 sent it) or sealed with another site's key: refused and counted.
    let offline = wire::Status {
        epoch: 7,
        ..wire::Status::offline()
    };
    mosquitto_pub(
        port,
        "iperal",
        "pw-iperal",
        &topic,
        br#"{"state":"offline"}"#,
        dir.path(),
    );
    let forged = wire::seal(&key(KEY_DOMUS), "iperal", &topic, &offline);
    mosquitto_pub(port, "iperal", "pw-iperal", &topic, &forged, dir.path());
    assert!(wait_until(5, || rejected(&hub, "iperal", "malformed")
        == 1.0
        && rejected(&hub, "iperal", "bad_mac") == 1.0));
    assert_eq!(state(), "online");

    // The genuine will of epoch 7 ends it; a replay of that epoch's online status changes nothing.
    let will = wire::seal(&key(KEY_IPERAL), "iperal", &topic, &offline);
    mosquitto_pub(port, "iperal", "pw-iperal", &topic, &will, dir.path());
    assert!(wait_until(5, || state() == "offline"));
    mosquitto_pub(
        port,
        "iperal",
        "pw-iperal",
        &topic,
        &sealed_online,
        dir.path(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(state(), "offline");

    // A new epoch is online again; the old will replayed then does not mark it offline.
    let next = wire::Status {
        epoch: 8,
        ..online.clone()
    };
    let sealed_next = wire::seal(&key(KEY_IPERAL), "iperal", &topic, &next);
    mosquitto_pub(
        port,
        "iperal",
        "pw-iperal",
        &topic,
        &sealed_next,
        dir.path(),
    );
    assert!(wait_until(5, || state() == "online"));
    mosquitto_pub(port, "iperal", "pw-iperal", &topic, &will, dir.path());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(state(), "online");
}
