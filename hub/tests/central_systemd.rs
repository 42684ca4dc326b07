//! The hub under a (stand-in) service manager: `Type=notify` readiness, watchdog pings while the
//! store answers, STOPPING on SIGTERM, over a real `NOTIFY_SOCKET`; and its secrets handed over as
//! systemd credentials (`credential:NAME` read from `$CREDENTIALS_DIRECTORY`), for the hub and
//! for a site.

mod central_support;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use central_support::config_text;
use common::*;

/// A hub config on free ports whose broker password and signing key are credentials.
fn write_config(dir: &Path, mqtt_port: u16, web_port: u16) -> std::path::PathBuf {
    let text = config_text(
        dir,
        &format!("listen = \"127.0.0.1:{mqtt_port}\"\npassword = \"credential:broker-password\""),
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{web_port}\""),
    );
    let text = format!("{text}\n[keys]\nsigning_key_file = \"credential:hub-signing.key\"\n");
    let path = dir.join("central.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A credentials folder as systemd makes it: one 0400 file per credential.
fn credentials(dir: &Path, with_key: bool) -> std::path::PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("broker-password"), "hub-pw-123\n").unwrap();
    if with_key {
        let made = Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["keygen", "--out"])
            .arg(creds.join("hub-signing.key"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
    }
    for f in std::fs::read_dir(&creds).unwrap() {
        let p = f.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    creds
}

fn check(cfg: &Path, creds: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(cfg)
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_hub_reads_its_secrets_from_credentials_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), free_port(), free_port());
    let creds = credentials(dir.path(), true);
    let (ok, out) = check(&cfg, &creds);
    assert!(ok, "{out}");

    // The signing key credential was not installed: refused, naming it and where it goes.
    let empty = dir.path().join("none");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, out) = check(&cfg, &empty);
    assert!(!ok, "{out}");
    assert!(out.contains("hub-signing.key"), "{out}");
    assert!(out.contains("broker-password"), "{out}");
    assert!(
        out.contains("/etc/socer/credentials/broker-password"),
        "{out}"
    );

    // The packaged unit's fallback for a missing file (a lone newline): refused as empty.
    std::fs::write(empty.join("broker-password"), "\n").unwrap();
    let (ok, out) = check(&cfg, &empty);
    assert!(
        !ok && out.contains("credential broker-password is empty"),
        "{out}"
    );
}

#[test]
fn the_hub_reports_ready_pings_the_watchdog_and_says_it_is_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mqtt_port, web_port) = (free_port(), free_port());
    let cfg = write_config(dir.path(), mqtt_port, web_port);
    let creds = credentials(dir.path(), true);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["central", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hub");
    let child_guard_pid = child.id();
    let mut seen: Vec<String> = Vec::new();
    // Generous on a loaded machine: the hub opens its store and broker first.
    let until = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 512];
    while Instant::now() < until && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3 {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the hub exited early: {status:?}; seen {seen:?}");
        }
    }
    let ready_at = seen.iter().position(|m| m.contains("READY=1"));
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let first_ping = seen.iter().position(|m| m.contains("WATCHDOG=1"));
    // The broker password is the credential's content (its newline removed): the hub's account
    // logs in with it, and not with anything else.
    require_mosquitto();
    let topic = "socer/v2/socer/balance";
    let with = |pw: &str| {
        mosquitto_sub(mqtt_port, Some(("central", pw)), topic, 1, 20)
            .wait_with_output()
            .unwrap()
    };
    let good = with("hub-pw-123");
    let bad = with("hub-pw-123\n");
    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    unsafe { libc::kill(child_guard_pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    let mut stopping = false;
    while t.elapsed() < Duration::from_secs(20) && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    let status = child.wait().expect("wait");
    assert!(ready_at.is_some(), "no READY=1: {seen:?}");
    assert!(
        pings >= 3,
        "watchdog pinged {pings} times with a 2 s period: {seen:?}"
    );
    assert!(
        first_ping > ready_at,
        "a watchdog ping before READY=1: {seen:?}"
    );
    assert!(
        good.status.success() && !good.stdout.is_empty(),
        "the hub's account with the credential's password saw no balance: {good:?}"
    );
    assert!(
        !bad.status.success(),
        "a wrong password was let in: {bad:?}"
    );
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn a_site_reads_its_key_and_broker_password_from_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let web_port = free_port();
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[site]
id = "cred-site"
community = "socer"
name = "credentials"
clock = "trust"

[mqtt]
url = "mqtt://127.0.0.1:{}"
username = "cred-site"
password = "credential:mqtt-password"
key_file = "credential:site.key"

[storage]
path = "{}"
budget = "10MB"

[web]
listen = "127.0.0.1:{web_port}"

[[bus]]
name = "sim"
simulated = true

[[meter]]
name = "grid"
bus = "sim"
unit = 1
model = "eastron-sdm630"
role = "grid"
interval = "1s"
"#,
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();

    // No key credential: the agent refuses to start and names the file it looked for.
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["site", "--config"])
        .arg(&cfg)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{}", creds.join("site.key").display())),
        "{text}"
    );

    // With both: the agent starts and serves its page.
    std::fs::write(
        creds.join("site.key"),
        "5f0c3a9e1d2b4c6a8e7f90123456789abcdef0123456789abcdef0123456789a\n",
    )
    .unwrap();
    std::fs::write(creds.join("mqtt-password"), "site-pw\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["site", "--config"])
        .arg(&cfg)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reaped = Reaped(child);
    assert!(
        wait_port(web_port, Duration::from_secs(60)),
        "the agent with its credentials did not serve its page within 60 s"
    );
}
