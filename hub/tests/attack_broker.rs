//! Attacks through the brokers, with one site's credentials (domus-1) and Mosquitto's own
//! command-line clients as the attacker, against the hub and a real site agent (iperal): once
//! through the hub's embedded rumqttd (no topic ACL: the envelope must hold) and once through a
//! Mosquitto started with the files `socer central --mosquitto-files` writes.
//!
//! Each attack must fail: no plaintext of another site on `#`, no forged or unsigned signal or
//! alert shown, no forged status believed, no session of the hub taken, no retained message of
//! the hub or of the site lost to a deletion.

mod central_support;
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use central_support::*;
use common::*;
use socer::central::{self, broker, config};
use socer::wire::{
    self, Ack, Alert, AlertKind, Level, Signal, SiteSummary, Status, Topics, ZoneSignal,
};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Embedded,
    Mosquitto,
}

struct World {
    dir: tempfile::TempDir,
    port: u16,
    agent_web: u16,
    _agent: Reaped,
    running: central::Running,
    _rt: tokio::runtime::Runtime,
    _mosquitto: Option<Reaped>,
}

const ATTACKER: (&str, &str) = ("domus-1", PW_DOMUS);

fn start(kind: Kind) -> World {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public = socer::cli::keygen::write_new(&dir.path().join("hub.key")).unwrap();
    let broker_text = match kind {
        Kind::Embedded => format!(
            "listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
        ),
        Kind::Mosquitto => format!(
            "url = \"mqtt://127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\""
        ),
    };
    let path = dir.path().join("central.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[keys]\nsigning_key_file = \"hub.key\"\n",
            config_text(dir.path(), &broker_text)
        ),
    )
    .unwrap();
    let cfg = config::load(&path).unwrap();
    let mosquitto = (kind == Kind::Mosquitto).then(|| {
        let files = dir.path().join("mosquitto");
        broker::write_mosquitto_files(&cfg, &files).unwrap();
        start_generated_mosquitto(dir.path(), &files, port)
    });
    let (rt, running) = start_central(cfg);

    // The real agent of iperal, trusting the hub's public key.
    let site_dir = dir.path().join("iperal");
    std::fs::create_dir_all(&site_dir).unwrap();
    std::fs::write(site_dir.join("site.key"), KEY_IPERAL).unwrap();
    let agent_web = free_port();
    let site_toml = format!(
        "[site]\nid = \"iperal\"\ncommunity = \"socer\"\nname = \"Iperal\"\nclock = \"trust\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nusername = \"iperal\"\npassword = \"pw-iperal\"\n\
         key_file = \"site.key\"\nhub_public_key = \"{}\"\nbatch_readings = 20\n\n\
         [storage]\npath = \"{}\"\nbudget = \"100MB\"\n\n[web]\nlisten = \"127.0.0.1:{agent_web}\"\n\n\
         [[bus]]\nname = \"sim\"\nsimulated = true\ntimeout_ms = 200\n\n\
         [[meter]]\nname = \"grid\"\nbus = \"sim\"\nunit = 1\nmodel = \"eastron-sdm630\"\nrole = \"grid\"\n\
         pod = \"P-IPERAL\"\ninterval = \"500ms\"\n",
        wire::public_key_hex(&public),
        site_dir.join("data").display()
    );
    std::fs::write(site_dir.join("site.toml"), site_toml).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let agent = Reaped(
        Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["site", "--config"])
            .arg(site_dir.join("site.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let w = World {
        dir,
        port,
        agent_web,
        _agent: agent,
        running,
        _rt: rt,
        _mosquitto: mosquitto,
    };
    assert!(
        wait_until(60, || w.acked("iperal") > 0),
        "the agent's readings were never acknowledged:\n{}",
        w.agent_log()
    );
    w
}

impl World {
    fn acked(&self, site_id: &str) -> u64 {
        site(&json_get(self.running.web_addr, "/api/v1/sites"), site_id)["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    }

    fn state(&self, site_id: &str) -> String {
        site(&json_get(self.running.web_addr, "/api/v1/sites"), site_id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn agent_get(&self, path: &str) -> String {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.agent_web));
        http_get(addr, path, None).1
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Publish as the attacker (QoS 1, retained when `retain`); an empty payload deletes.
    fn attack(&self, topic: &str, payload: &[u8], retain: bool) {
        let file = self.dir.path().join("attack-payload");
        std::fs::write(&file, payload).unwrap();
        let mut cmd = mosquitto_pub_cmd("127.0.0.1", self.port, Some(ATTACKER));
        cmd.args(["-t", topic]);
        if payload.is_empty() {
            cmd.arg("-n");
        } else {
            cmd.arg("-f").arg(&file);
        }
        if retain {
            cmd.arg("-r");
        }
        // Mosquitto acknowledges a publish its ACL denies (and drops it): the outcome is what
        // the others see, not the exit code.
        let _ = cmd.output().unwrap();
    }

    /// `mosquitto_sub -v` as the attacker with client id `id` on `filter` for `secs` seconds:
    /// (exited successfully or by timeout, what it printed).
    fn listen(&self, id: &str, filter: &str, secs: u32) -> (bool, String) {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", ATTACKER.0, "-P", ATTACKER.1, "-i", id, "-v"])
            .args(["-t", filter, "-W", &secs.to_string()])
            .output()
            .unwrap();
        // 27: the -W timeout, after a successful connection.
        let connected = out.status.success() || out.status.code() == Some(27);
        (connected, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The retained message on `topic` as iperal reads it, if any within 3 s. Embedded broker
    /// only: under Mosquitto the client id is the username, and a reader logged in as iperal
    /// would take the agent's session.
    fn retained_as_iperal(&self, topic: &str) -> Option<Vec<u8>> {
        let out = mosquitto_sub(self.port, Some(("iperal", "pw-iperal")), topic, 1, 3)
            .wait_with_output()
            .ok()?;
        let mut v = out.stdout;
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        (out.status.success() && !v.is_empty()).then_some(v)
    }
}

fn forged_signal() -> Signal {
    let t = chrono::Utc::now();
    Signal {
        ts: t + chrono::Duration::hours(1),
        community: ZoneSignal {
            zone: "FORGED-ZONE".into(),
            level: Level::Green,
            openadr_level: 0,
            surplus_kw: 12345.6,
            production_kw: 12345.6,
            consumption_kw: 0.0,
            since: t,
        },
        substations: vec![],
        forecast: vec![],
    }
}

fn forged_alert(site_id: Option<&str>) -> Alert {
    let t = chrono::Utc::now();
    Alert {
        id: "FORGED-ALERT".into(),
        kind: AlertKind::Open,
        site: site_id.map(str::to_string),
        ts: t,
        window_start: t,
        window_end: t + chrono::Duration::hours(2),
        expected_surplus_kwh: 12345.6,
        loads: vec![],
        text_it: "FORGED".into(),
        text_en: "FORGED".into(),
    }
}

fn attacks(kind: Kind) {
    let w = start(kind);
    let t = Topics::new("socer");

    // The genuine path works: the hub's signed signal is shown by the agent, its sealed summary
    // of iperal is retained.
    assert!(
        wait_until(60, || w
            .agent_get("/api/v1/signal")
            .contains("\"zone\":\"socer\"")),
        "the hub's signed signal never reached the page: {}\n{}",
        w.agent_get("/api/v1/signal"),
        w.agent_log()
    );
    assert!(
        wait_until(30, || w
            .agent_get("/api/v1/now")
            .contains("\"community_share\":{")),
        "no summary on the page: {}",
        w.agent_get("/api/v1/now")
    );

    // 1. Subscribed to `#` with domus-1's credentials: no plaintext of iperal's.
    let (connected, seen) = w.listen("domus-1.spy", "#", 6);
    assert!(connected, "the attacker could not even connect");
    for clear in [
        "P-IPERAL",
        "eastron",
        "e_imp_wh",
        "\"seq\"",
        "backlog",
        "shared_as_consumer_kwh",
        "\"online\"",
    ] {
        assert!(!seen.contains(clear), "{clear:?} seen in clear:\n{seen}");
    }
    if kind == Kind::Embedded {
        // Without an ACL the messages do arrive, but only as ciphertext.
        assert!(seen.contains(&t.status("iperal")), "{seen}");
        assert!(
            seen.contains(&t.readings("iperal")) || seen.contains(&t.ack("iperal")),
            "{seen}"
        );
    } else {
        assert!(!seen.contains("/site/iperal/"), "{seen}");
    }

    // 2. Unsigned, and signed-by-the-attacker, retained signal and alerts: never shown.
    let own_key = wire::generate_signing_key();
    let plain_signal = serde_json::to_vec(&forged_signal()).unwrap();
    w.attack(&t.signal(), &plain_signal, true);
    w.attack(
        &t.signal(),
        &wire::sign(&own_key, &t.signal(), &forged_signal()),
        true,
    );
    for (topic, target) in [
        (t.alerts(), None),
        (t.site_alerts("iperal"), Some("iperal")),
    ] {
        let a = forged_alert(target);
        w.attack(&topic, &serde_json::to_vec(&a).unwrap(), true);
        w.attack(&topic, &wire::sign(&own_key, &topic, &a), false);
    }
    std::thread::sleep(Duration::from_secs(3));
    for path in ["/api/v1/signal", "/api/v1/now"] {
        let body = w.agent_get(path);
        assert!(!body.is_empty(), "{path} did not answer");
        for forged in ["FORGED", "12345.6"] {
            assert!(!body.contains(forged), "{path} shows {forged}: {body}");
        }
    }
    assert!(w.agent_get("/api/v1/signal").contains("\"zone\":\"socer\""));
    if kind == Kind::Embedded {
        let refused = metric(
            &w.agent_get("/metrics"),
            "socer_broadcasts_refused_total{site=\"iperal\"}",
        );
        assert!(refused >= 4.0, "refusals counted: {refused}");
    }

    // 3. A forged offline status (unsealed, or sealed with the attacker's own key) does not mark
    // iperal offline; a deleted status is put back by the agent.
    assert_eq!(w.state("iperal"), "online");
    w.attack(&t.status("iperal"), br#"{"state":"offline"}"#, true);
    let offline = Status {
        epoch: u64::MAX,
        ..Status::offline()
    };
    w.attack(
        &t.status("iperal"),
        &wire::seal(&key(KEY_DOMUS), "iperal", &t.status("iperal"), &offline),
        true,
    );
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(w.state("iperal"), "online");
    }
    w.attack(&t.status("iperal"), b"", true);
    if kind == Kind::Embedded {
        assert!(wait_until(10, || w
            .retained_as_iperal(&t.status("iperal"))
            .and_then(|b| wire::open_bytes::<Status>(
                &key(KEY_IPERAL),
                "iperal",
                &t.status("iperal"),
                &b
            )
            .ok())
            .is_some_and(|s| s.state == "online")));
    }
    assert_eq!(w.state("iperal"), "online");

    // 4. The hub's client ids cannot be taken: refused on the embedded broker, the attacker's
    // own id under Mosquitto; the hub stays connected and keeps acknowledging.
    let before = w.acked("iperal");
    for id in [
        "central",
        "central.pub",
        "central-pub",
        "socer-central-socer",
    ] {
        let (connected, _) = w.listen(id, "#", 1);
        if kind == Kind::Embedded && id.starts_with("central") {
            assert!(
                !connected,
                "the embedded broker let domus-1 connect as {id}"
            );
        }
        assert!(w.running.hub.broker_connected.load(Ordering::Relaxed));
    }
    assert!(wait_until(30, || w.acked("iperal") > before));

    // 5. Retained ack and summary of iperal deleted or replaced: the hub puts its own back
    // (under Mosquitto the ACL drops the attempt; the page keeps its share either way).
    let genuine_summary =
        (kind == Kind::Embedded).then(|| w.retained_as_iperal(&t.summary("iperal")).unwrap());
    let open = |b: &[u8]| {
        wire::open_bytes::<SiteSummary>(&key(KEY_IPERAL), "iperal", &t.summary("iperal"), b).ok()
    };
    for junk in [&b""[..], b"junk"] {
        w.attack(&t.summary("iperal"), junk, true);
        w.attack(&t.ack("iperal"), junk, true);
        if let Some(genuine) = &genuine_summary {
            assert!(wait_until(10, || w
                .retained_as_iperal(&t.summary("iperal"))
                .and_then(|b| open(&b))
                .is_some_and(
                    |s| open(genuine).is_some_and(|g| g.pods == s.pods)
                )));
            assert!(wait_until(10, || w
                .retained_as_iperal(&t.ack("iperal"))
                .and_then(|b| wire::open_bytes::<Ack>(
                    &key(KEY_IPERAL),
                    "iperal",
                    &t.ack("iperal"),
                    &b
                )
                .ok())
                .is_some()));
        }
    }
    if kind == Kind::Embedded {
        assert!(
            w.running
                .hub
                .metrics
                .retained_restored
                .load(Ordering::Relaxed)
                >= 2
        );
    }
    assert!(w.agent_get("/api/v1/now").contains("\"community_share\":{"));
    // Nothing of the site's was lost on the way: the hub keeps acknowledging its readings.
    let before = w.acked("iperal");
    assert!(wait_until(30, || w.acked("iperal") > before));
}

#[test]
fn one_site_s_credentials_break_nothing_through_the_embedded_broker() {
    attacks(Kind::Embedded);
}

#[test]
fn one_site_s_credentials_break_nothing_through_the_generated_mosquitto() {
    attacks(Kind::Mosquitto);
}
