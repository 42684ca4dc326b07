//! The central hub with an external Mosquitto (started by the test on a free port) using the
//! password and ACL files `socer central --mosquitto-files` writes: the same client code path as
//! the embedded broker, and sites confined to their own topics by the broker.

mod central_support;
mod common;

use std::path::Path;

use central_support::*;
use common::*;
use socer::central::{broker, config};
use socer::wire::Topics;

fn mosquitto_with_generated_files(dir: &Path, port: u16, cfg: &config::CentralConfig) -> Reaped {
    let files = dir.join("mosquitto");
    broker::write_mosquitto_files(cfg, &files).unwrap();
    let generated = std::fs::read_to_string(files.join("socer.conf")).unwrap();
    // Running as root, Mosquitto would drop to its own user and lose access to the temp dir.
    start_mosquitto(dir, port, &format!("user root\n{generated}"))
}

#[test]
fn external_mosquitto_with_generated_passwords_and_acl_carries_batches_and_acks() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("central.toml");
    let broker = format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
    );
    std::fs::write(&path, config_text(dir.path(), &broker)).unwrap();
    let cfg = config::load(&path).unwrap();
    let _mosquitto = mosquitto_with_generated_files(dir.path(), port, &cfg);

    let (_rt, running) = start_central(cfg);
    let web = running.web_addr;
    let acked = |id: &str| {
        site(&json_get(web, "/api/v1/sites"), id)["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    };
    let t = Topics::new("socer");

    // The generated password file authenticates the site (a wrong password is refused).
    let bad = mosquitto_pub_cmd("127.0.0.1", port, Some(("domus-1", "wrong")))
        .arg("-t")
        .arg(t.readings("domus-1"))
        .args(["-m", "x"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a wrong password must be refused");

    let genuine = sealed("domus-1", KEY_DOMUS, 1..=4);
    assert!(wait_until(10, || {
        mosquitto_pub(
            port,
            "domus-1",
            PW_DOMUS,
            &t.readings("domus-1"),
            &genuine,
            dir.path(),
        );
        wait_until(1, || acked("domus-1") == 4)
    }));
    // The site may read its own retained ack…
    let ack = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &t.ack("domus-1"));
    assert!(
        String::from_utf8_lossy(&ack).contains("\\\"seq\\\":4"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    // …and its own retained monthly summary, sealed with its key.
    let summary = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &t.summary("domus-1"));
    let env = socer::wire::open_unverified(&summary).unwrap();
    let s: socer::wire::SiteSummary =
        socer::wire::open(&key(KEY_DOMUS), "domus-1", &t.summary("domus-1"), &env).unwrap();
    assert_eq!(s.pods, vec!["P-DOMUS".to_string()]);

    // …but the ACL keeps it off another site's topic: Mosquitto drops the message silently, so
    // the hub neither stores it nor even sees it to count it.
    mosquitto_pub(
        port,
        "domus-1",
        PW_DOMUS,
        &t.readings("iperal"),
        &sealed("iperal", KEY_IPERAL, 1..=1),
        dir.path(),
    );
    // A forged batch on its own topic does reach the hub, and is refused there.
    mosquitto_pub(
        port,
        "domus-1",
        PW_DOMUS,
        &t.readings("domus-1"),
        &sealed("domus-1", KEY_IPERAL, 5..=5),
        dir.path(),
    );
    let bad_mac = "socer_rejected_total{site=\"domus-1\",reason=\"bad_mac\"}";
    assert!(wait_until(5, || metric(
        &http_get(web, "/metrics", None).1,
        bad_mac
    ) == 1.0));
    assert_eq!(running.hub.reader().reading_count("iperal").unwrap(), 0);
    assert_eq!(acked("iperal"), 0);
    assert_eq!(running.hub.reader().reading_count("domus-1").unwrap(), 4);
}
