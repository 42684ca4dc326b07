//! MQTT over TLS to the central hub's embedded broker: the real `socer site` binary publishes over
//! `mqtts://` and its readings are acknowledged end to end; a site that does not trust the
//! broker's CA, a plain-TCP client and a silent connection get nowhere on the TLS port.

mod central_support;
mod common;
mod site_common;
mod tls_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use central_support::{json_get, site};
use common::{free_port, start_central, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Transport};
use site_common::{Agent, SiteSpec, COMMUNITY, KEY, SITE};
use socer::central;

const PW_SITE: &str = "pw-site-t1";

/// A one-site community whose embedded broker listens plain on `plain` and with TLS on `tls`.
fn central_toml(dir: &Path, plain: u16, tls: u16, pki: &tls_support::Pki) -> PathBuf {
    let text = format!(
        r#"[central]
community = "{COMMUNITY}"
name = "TLS test"
latitude = 46.17
longitude = 9.87

[broker]
listen = "127.0.0.1:{plain}"
tls_listen = "127.0.0.1:{tls}"
tls_cert = "{cert}"
tls_key = "{key}"

[web]
listen = "127.0.0.1:0"

[storage]
path = "central.db"

[[substation]]
id = "S1"
name = "Nord"

[[site]]
id = "{SITE}"
key = "{KEY}"
password = "{PW_SITE}"
members = ["m"]

[[member]]
id = "m"
kind = "household"
pod = "P1"
substation = "S1"
site = "{SITE}"

[[meter]]
site = "{SITE}"
name = "m1"
pod = "P1"
role = "grid"
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let path = dir.join("central.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The test site's config, switched to `mqtts://localhost:PORT` trusting `ca`.
fn site_toml(dir: &Path, tls_port: u16, ca: &Path) -> (PathBuf, u16) {
    let mut spec = SiteSpec::new(dir, tls_port);
    spec.meters = 1;
    let path = spec.write(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let plain_url = format!("url = \"mqtt://127.0.0.1:{tls_port}\"");
    assert!(text.contains(&plain_url), "{text}");
    let text = text.replace(
        &plain_url,
        &format!(
            "url = \"mqtts://localhost:{tls_port}\"\nca_file = \"{}\"\nusername = \"{SITE}\"\npassword = \"{PW_SITE}\"",
            ca.display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    (path, spec.web_port)
}

struct Hub {
    rt: tokio::runtime::Runtime,
    running: central::Running,
}

fn start_hub(config: &Path) -> Hub {
    let cfg = central::config::load(config).unwrap();
    let (rt, running) = start_central(cfg);
    Hub { rt, running }
}

impl Hub {
    fn acked(&self) -> u64 {
        site(&json_get(self.running.web_addr, "/api/v1/sites"), SITE)["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Connect as the site and wait (at most 5 s) for the broker's CONNACK; `Err` carries the first
/// connection error.
fn connack(
    rt: &tokio::runtime::Runtime,
    port: u16,
    transport: Option<Transport>,
) -> Result<(), String> {
    let mut o = MqttOptions::new(format!("{SITE}.probe-{}", rand_id()), "localhost", port);
    o.set_credentials(SITE, PW_SITE);
    if let Some(t) = transport {
        o.set_transport(t);
    }
    rt.block_on(async move {
        let (_client, mut events) = AsyncClient::new(o, 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no CONNACK within 5 s".into()),
            }
        }
    })
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn site_agent_over_mqtts_to_the_embedded_broker_is_acknowledged_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make(dir.path());
    let (plain, tls) = (free_port(), free_port());
    let hub = start_hub(&central_toml(dir.path(), plain, tls, &pki));

    let site_dir = dir.path().join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let (site_cfg, web_port) = site_toml(&site_dir, tls, &pki.ca);
    let log = dir.path().join("site.log");
    let agent = Agent::start(&site_cfg, web_port, &log);
    agent.wait_web();

    let first = wait_until(20, || hub.acked() >= 3);
    let site_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        first,
        "the hub acknowledged nothing over TLS; site log:\n{site_log}"
    );
    assert!(site_log.contains("connected to the broker"), "{site_log}");
    // The acks flow back to the site over the same TLS connection: its outbox moves on.
    assert!(
        wait_until(10, || agent.get("/metrics").is_some_and(
            |m| central_support::metric(&m, &format!("socer_uplink_connected{{site=\"{SITE}\"}}"))
                == 1.0
        )),
        "the site does not report its uplink connected"
    );
    let later = hub.acked();
    assert!(
        wait_until(10, || hub.acked() > later),
        "acks stopped at {later}"
    );
    drop(agent);
    drop(hub.running);
    hub.rt.shutdown_timeout(Duration::from_secs(2));
}

#[test]
fn tls_port_refuses_untrusting_plain_and_silent_clients_without_blocking_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::make(dir.path());
    let (plain, tls) = (free_port(), free_port());
    let hub = start_hub(&central_toml(dir.path(), plain, tls, &pki));
    let trusting = || {
        let pem = std::fs::read(&pki.ca).unwrap();
        socer::tls::client_config(Some(&pem)).unwrap();
        Some(socer::tls::client_transport(Some(&pem)))
    };

    // A connection that opens TCP and says nothing must not hold up anyone else's handshake.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", tls)).unwrap();
    assert_eq!(connack(&hub.rt, tls, trusting()), Ok(()));

    // A client trusting another CA refuses the broker's certificate.
    let rogue = std::fs::read(&pki.rogue_ca).unwrap();
    let e = connack(
        &hub.rt,
        tls,
        Some(socer::tls::client_transport(Some(&rogue))),
    )
    .unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );

    // Plain MQTT on the TLS port gets no CONNACK.
    assert!(connack(&hub.rt, tls, None).is_err());
    // (The plain listener itself still serves the hub and local clients.)
    assert_eq!(connack(&hub.rt, plain, None), Ok(()));

    // The real site agent with the wrong CA: never connected, a clear line in its log, no acks.
    let site_dir = dir.path().join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let (site_cfg, web_port) = site_toml(&site_dir, tls, &pki.rogue_ca);
    let log = dir.path().join("site.log");
    let agent = Agent::start(&site_cfg, web_port, &log);
    agent.wait_web();
    let said_why = wait_until(10, || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains("cannot connect to the broker") && l.contains("UnknownIssuer")
        })
    });
    let site_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said_why, "site log:\n{site_log}");
    assert!(!site_log.contains("connected to the broker"), "{site_log}");
    assert_eq!(hub.acked(), 0);
    drop(agent);
    drop(hub.running);
    hub.rt.shutdown_timeout(Duration::from_secs(2));
}
