//! The central hub with an external Mosquitto started with exactly the files
//! `socer central --mosquitto-files` writes (listener, password file 0640, ACL per user, client
//! ids bound to usernames, absolute paths): batches acknowledged end to end, and one site's
//! account kept off every other account's topics and sessions by the broker itself.

mod central_support;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use central_support::*;
use common::*;
use socer::central::{broker, config};
use socer::wire::{self, Ack, Topics};

/// `mosquitto_sub -v` as `user` (client id `id`) on `filter` for `secs` seconds: what it printed.
fn listen_as(port: u16, user: &str, password: &str, id: &str, filter: &str, secs: u32) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", user, "-P", password, "-i", id, "-v"])
        .args(["-t", filter, "-W", &secs.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn generated_mosquitto_files_work_as_written_and_confine_each_account() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("central.toml");
    let broker = format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
    );
    std::fs::write(&path, config_text(dir.path(), &broker)).unwrap();
    let cfg = config::load(&path).unwrap();

    // Written into a relative folder: the config still names absolute paths.
    let files = dir.path().join("mosquitto");
    let written = broker::write_mosquitto_files(&cfg, &files).unwrap();
    assert_eq!(written.len(), 3);
    let conf = std::fs::read_to_string(files.join("socer.conf")).unwrap();
    let canonical = std::fs::canonicalize(&files).unwrap();
    for line in [
        format!("listener {port}"),
        format!("password_file {}", canonical.join("passwd").display()),
        format!("acl_file {}", canonical.join("acl").display()),
        "use_username_as_clientid true".to_string(),
        "allow_anonymous false".to_string(),
        format!("max_packet_size {}", wire::MAX_ENVELOPE_BYTES * 2),
    ] {
        assert!(conf.lines().any(|l| l == line), "no `{line}` in:\n{conf}");
    }
    assert!(!conf.contains("message_size_limit"), "{conf}");
    let mode = |f: &str| {
        std::fs::metadata(files.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("passwd"), 0o640);
    let acl = std::fs::read_to_string(files.join("acl")).unwrap();
    assert!(acl.contains("user central-pub\n"), "{acl}");
    assert!(!acl.contains("pattern"), "per-user lines only:\n{acl}");

    let _mosquitto = start_generated_mosquitto(dir.path(), &files, port);
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

    // Readings acknowledged end to end: the hub's sealed ack, read back by the site.
    assert!(wait_until(10, || {
        mosquitto_pub(
            port,
            "domus-1",
            PW_DOMUS,
            &t.readings("domus-1"),
            &sealed("domus-1", KEY_DOMUS, 1..=4),
            dir.path(),
        );
        wait_until(1, || acked("domus-1") == 4)
    }));
    let ack = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &t.ack("domus-1"));
    let ack: Ack = wire::open_bytes(&key(KEY_DOMUS), "domus-1", &t.ack("domus-1"), &ack).unwrap();
    assert_eq!(ack.seq, 4);
    let summary = mosquitto_sub_one(port, "domus-1", PW_DOMUS, &t.summary("domus-1"));
    let s: wire::SiteSummary =
        wire::open_bytes(&key(KEY_DOMUS), "domus-1", &t.summary("domus-1"), &summary).unwrap();
    assert_eq!(s.pods, vec!["P-DOMUS".to_string()]);
    assert!(wait_until(10, || {
        mosquitto_pub(
            port,
            "iperal",
            "pw-iperal",
            &t.readings("iperal"),
            &sealed("iperal", KEY_IPERAL, 1..=2),
            dir.path(),
        );
        wait_until(1, || acked("iperal") == 2)
    }));

    // One site's account cannot read another's topics: subscribed to everything, domus-1 gets
    // its own ack and summary and nothing of iperal's (retained ack and summary included).
    let seen = listen_as(port, "domus-1", PW_DOMUS, "domus-1", "#", 3);
    assert!(seen.contains(&t.ack("domus-1")), "{seen}");
    assert!(!seen.contains("/site/iperal/"), "{seen}");

    // Nor publish on the hub's topics or another site's: the broker drops it, so the retained
    // signal and iperal's ack, summary and status iperal sees are untouched. (Read as iperal: a
    // probe logged in as the hub would, rightly, take the hub's session.)
    for topic in [
        t.signal(),
        t.ack("iperal"),
        t.summary("iperal"),
        t.status("iperal"),
    ] {
        let out = mosquitto_pub_cmd("127.0.0.1", port, Some(("domus-1", PW_DOMUS)))
            .args(["-t", &topic, "-m", "forged", "-r"])
            .output()
            .unwrap();
        let _ = out; // Mosquitto acknowledges a denied publish and drops it.
    }
    let as_iperal = listen_as(port, "iperal", "pw-iperal", "iperal", "socer/v2/socer/#", 3);
    assert!(as_iperal.contains(&t.ack("iperal")), "{as_iperal}");
    assert!(!as_iperal.contains("forged"), "{as_iperal}");
    let iperal_ack = mosquitto_sub_one(port, "iperal", "pw-iperal", &t.ack("iperal"));
    let a: Ack =
        wire::open_bytes(&key(KEY_IPERAL), "iperal", &t.ack("iperal"), &iperal_ack).unwrap();
    assert_eq!(a.seq, 2);

    // Nor take the hub's session: with the hub's client id the site is still only itself (the
    // client id is the username), and the hub stays connected and keeps acknowledging.
    let stolen = listen_as(port, "domus-1", PW_DOMUS, "central", "#", 2);
    let _ = stolen;
    let stolen = listen_as(port, "domus-1", PW_DOMUS, "central-pub", "#", 2);
    let _ = stolen;
    assert!(running
        .hub
        .broker_connected
        .load(std::sync::atomic::Ordering::Relaxed));
    mosquitto_pub(
        port,
        "domus-1",
        PW_DOMUS,
        &t.readings("domus-1"),
        &sealed("domus-1", KEY_DOMUS, 5..=5),
        dir.path(),
    );
    assert!(wait_until(10, || acked("domus-1") == 5));
    // No session of the hub's ids was ever held by another account: every connection Mosquitto
    // logged as `central` or `central-pub` logged in as that very user. (The hub itself may
    // reconnect on a loaded machine and replace its own session; that is not a takeover.)
    let log = std::fs::read_to_string(mosquitto_log(dir.path(), port)).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("New client connected from"))
    {
        for hub_id in ["central", "central-pub"] {
            if line.contains(&format!(" as {hub_id} (")) {
                assert!(
                    line.contains(&format!("u'{hub_id}')")),
                    "the hub's session was taken by another account: {line}\n{log}"
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
}
