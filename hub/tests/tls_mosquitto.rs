//! The central hub reaching an external Mosquitto over `mqtts://` (a TLS-only listener with a
//! throwaway CA): batches published over TLS are stored and acknowledged; a hub that does not
//! trust the broker's CA never connects and logs why; a plain client cannot use the TLS port.

mod central_support;
mod common;
mod tls_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use central_support::*;
use common::*;
use socer::central::{self, broker, config};
use socer::wire::Topics;

/// Mosquitto with the generated files, its TLS lines filled in as the generated config's
/// comments say (the hub's url is mqtts://, so its listener is for TLS only).
fn start_mosquitto(
    dir: &Path,
    port: u16,
    cfg: &config::CentralConfig,
    pki: &tls_support::Pki,
) -> Reaped {
    let files = dir.join("mosquitto");
    broker::write_mosquitto_files(cfg, &files).unwrap();
    let generated = std::fs::read_to_string(files.join("socer.conf")).unwrap();
    assert!(generated.contains("#certfile "), "{generated}");
    let conf: String = generated
        .lines()
        .map(|l| {
            if l.starts_with("#certfile ") {
                format!(
                    "cafile {}\ncertfile {}\n",
                    pki.ca.display(),
                    pki.cert.display()
                )
            } else if l.starts_with("#keyfile ") {
                format!("keyfile {}\n", pki.key.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(files.join("socer.conf"), conf).unwrap();
    // Mosquitto drops to its own user: its key goes to its group, as an operator would do.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::os::unix::fs::chown(&pki.key, None, common::mosquitto_gid());
    let _ = std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o640));
    common::start_generated_mosquitto(dir, &files, port)
}

fn broker_table(port: u16, ca: &Path) -> String {
    format!(
        "url = \"mqtts://localhost:{port}\"\nusername = \"central\"\npassword = \"pw-central\"\nca_file = \"{}\"",
        ca.display()
    )
}

/// `mosquitto_pub` over TLS trusting `ca` (or plain TCP when `None`); true if it succeeded.
fn tls_pub(port: u16, ca: Option<&Path>, topic: &str, payload: &[u8], dir: &Path) -> bool {
    let file = dir.join("payload");
    std::fs::write(&file, payload).unwrap();
    let mut cmd = mosquitto_pub_cmd("localhost", port, Some(("domus-1", PW_DOMUS)));
    cmd.args(["-t", topic, "-f"]).arg(&file);
    if let Some(ca) = ca {
        cmd.arg("--cafile").arg(ca);
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn hub_over_mqtts_to_mosquitto_stores_and_acknowledges_batches() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make(dir.path());
    let port = free_port();
    let path = dir.path().join("central.toml");
    std::fs::write(&path, config_text(dir.path(), &broker_table(port, &pki.ca))).unwrap();
    let cfg = config::load(&path).unwrap();
    let _mosquitto = start_mosquitto(dir.path(), port, &cfg, &pki);

    let (rt, running) = start_central(cfg);
    let web = running.web_addr;
    assert!(
        wait_until(10, || http_get(web, "/api/v1/health", None)
            .1
            .contains("\"broker_connected\":true")),
        "the hub never connected over TLS: {}",
        std::fs::read_to_string(mosquitto_log(dir.path(), port)).unwrap_or_default()
    );

    let t = Topics::new("socer");
    let batch = sealed("domus-1", KEY_DOMUS, 1..=4);
    // Plain MQTT cannot use the TLS listener.
    assert!(!tls_pub(
        port,
        None,
        &t.readings("domus-1"),
        &batch,
        dir.path()
    ));
    let acked = || {
        site(&json_get(web, "/api/v1/sites"), "domus-1")["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(acked(), 0);
    assert!(wait_until(10, || {
        assert!(tls_pub(
            port,
            Some(&pki.ca),
            &t.readings("domus-1"),
            &batch,
            dir.path()
        ));
        wait_until(1, || acked() == 4)
    }));
    drop(running);
    rt.shutdown_timeout(Duration::from_secs(2));
}

#[test]
fn hub_that_does_not_trust_the_brokers_ca_stays_disconnected_and_logs_why() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make(dir.path());
    let port = free_port();
    let path = dir.path().join("central.toml");
    std::fs::write(
        &path,
        config_text(dir.path(), &broker_table(port, &pki.rogue_ca)),
    )
    .unwrap();
    let cfg = config::load(&path).unwrap();
    let _mosquitto = start_mosquitto(dir.path(), port, &cfg, &pki);

    let log = dir.path().join("central.log");
    let _hub = Reaped(
        Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["central", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said_why = wait_until(10, || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("broker connection") && l.contains("UnknownIssuer"))
    });
    assert!(
        said_why,
        "central log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_ca_file_that_holds_no_certificate_stops_the_hub_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make(dir.path());
    let path = dir.path().join("central.toml");
    // The broker's key is no CA certificate; nothing needs to listen for this to be found out.
    std::fs::write(
        &path,
        config_text(dir.path(), &broker_table(free_port(), &pki.key)),
    )
    .unwrap();
    let cfg = config::load(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            central::start(cfg, l).await
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("ca_file: no PEM certificate"), "{err:?}");
}
