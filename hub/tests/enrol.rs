//! Enrolment end to end, with the real binaries: `socer central add-site` on a running hub (the
//! embedded broker, and an external Mosquitto started with the generated files), the bundle it
//! writes checked by `socer check` and run by `socer site` with its readings acknowledged by the
//! hub; `remove-site` making the hub refuse the site; `rotate-key` with the site moving from the
//! old key to the new one without a reading lost or doubled; hostile ids and names refused.

mod central_support;
mod common;
mod site_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use site_common::{outbox_rows, Agent};

/// Longest wait for anything here (a loaded 2-core machine builds and runs several suites).
const WITHIN: Duration = Duration::from_secs(60);

fn socer(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run socer")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The hub's config for the tests: the shared test community, its web API on `web_port`.
fn write_central(dir: &Path, broker: &str, web_port: u16) -> PathBuf {
    let t = central_support::config_text(dir, broker).replace(
        "[web]\nlisten = \"127.0.0.1:0\"",
        &format!("[web]\nlisten = \"127.0.0.1:{web_port}\""),
    );
    assert!(t.contains(&format!(":{web_port}\"")), "web listen not set");
    let p = dir.join("central.toml");
    std::fs::write(&p, t).unwrap();
    p
}

/// `socer central --config FILE` as a process, logging to `hub.log`.
struct Hub {
    _child: Reaped,
    web: SocketAddr,
    log: PathBuf,
}

impl Hub {
    fn start(dir: &Path, config: &Path, web_port: u16) -> Hub {
        let log = dir.join("hub.log");
        let child = Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["central", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start socer central");
        let hub = Hub {
            _child: Reaped(child),
            web: ([127, 0, 0, 1], web_port).into(),
            log,
        };
        assert!(
            wait_port(web_port, WITHIN),
            "hub web never opened:\n{}",
            hub.log()
        );
        hub
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sites(&self) -> serde_json::Value {
        let (status, body) = central_support::http_get(self.web, "/api/v1/sites", None);
        if status != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The site's entry in `/api/v1/sites`, if the hub lists it.
    fn site(&self, id: &str) -> Option<serde_json::Value> {
        self.sites()["sites"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    }

    fn acked(&self, id: &str) -> u64 {
        self.site(id)
            .and_then(|s| s["acked_seq"].as_u64())
            .unwrap_or(0)
    }
}

/// Enrol `id` with `socer central add-site`; returns the bundle folder and the command's output.
fn add_site(dir: &Path, config: &Path, id: &str, extra: &[&str]) -> (PathBuf, String) {
    let out = dir.join(format!("bundle-{id}"));
    let mut args = vec![
        "central",
        "add-site",
        id,
        "--name",
        "Condominio \"Nove\", via Nazario Sauro 9",
        "--substation",
        "S1",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = socer(&args, dir);
    assert!(o.status.success(), "add-site failed: {}", text(&o));
    (out, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// What the technician does on the Pi: the bundle's meters replaced by a simulated bus (no
/// RS-485 here), storage and web put where the test wants them; returns the config's path and
/// the outbox folder.
fn fit_bundle(bundle: &Path, web_port: u16) -> (PathBuf, PathBuf) {
    let path = bundle.join("site.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    doc["site"]["clock"] = toml_edit::value("trust");
    let storage = bundle.join("data");
    doc["storage"]["path"] = toml_edit::value(storage.to_str().unwrap());
    doc["web"]["listen"] = toml_edit::value(format!("127.0.0.1:{web_port}"));
    doc["mqtt"]["batch_readings"] = toml_edit::value(50);
    let sim: toml_edit::DocumentMut = "[[bus]]\nname = \"sim\"\nsimulated = true\n\n\
        [[meter]]\nname = \"grid\"\nbus = \"sim\"\nunit = 1\nmodel = \"eastron-sdm630\"\nrole = \"grid\"\ninterval = \"200ms\"\n\n\
        [[meter]]\nname = \"pv\"\nbus = \"sim\"\nunit = 2\nmodel = \"eastron-sdm630\"\nrole = \"production\"\ninterval = \"200ms\"\n"
        .parse()
        .unwrap();
    doc["bus"] = sim["bus"].clone();
    doc["meter"] = sim["meter"].clone();
    std::fs::write(&path, doc.to_string()).unwrap();
    (path, storage)
}

/// The agent's outbox figure `what` (`acked`, `last_seq`) from its health API; 0 while down.
fn outbox(agent: &Agent, what: &str) -> u64 {
    agent
        .health()
        .and_then(|h| h["outbox"][what].as_u64())
        .unwrap_or(0)
}

fn check_ok(file: &Path, dir: &Path) {
    let o = socer(&["check", file.to_str().unwrap()], dir);
    assert!(
        o.status.success(),
        "socer check {}: {}",
        file.display(),
        text(&o)
    );
}

/// The bundle as written: the commented example filled in, the key and password files 0600.
fn assert_bundle(bundle: &Path, id: &str, broker_url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(bundle.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&format!("{id}.key")), 0o600);
    assert_eq!(mode(&format!("{id}.password")), 0o600);
    let site = std::fs::read_to_string(bundle.join("site.toml")).unwrap();
    assert!(site.contains("# The community broker"), "comments kept");
    let v: toml::Table = site.parse().unwrap();
    assert_eq!(v["site"]["id"].as_str(), Some(id));
    assert_eq!(v["site"]["community"].as_str(), Some("socer"));
    assert_eq!(v["mqtt"]["url"].as_str(), Some(broker_url));
    assert_eq!(v["mqtt"]["username"].as_str(), Some(id));
    assert!(
        v["mqtt"].get("password").is_none(),
        "password in its own file"
    );
    let key = std::fs::read_to_string(bundle.join(format!("{id}.key"))).unwrap();
    assert_eq!(key.trim().len(), 64, "a 32-byte key in hex");
}

/// The site's hub-side file as the hub reads it.
fn hub_entry(dir: &Path, id: &str) -> toml::Table {
    let t = std::fs::read_to_string(dir.join("sites.d").join(format!("{id}.toml"))).unwrap();
    let v: toml::Table = t.parse().unwrap();
    v["site"].as_array().unwrap()[0].as_table().unwrap().clone()
}

/// (rows, distinct seqs, lowest, highest) of a site's readings in the hub's store.
fn stored(db: &Path, site: &str) -> (u64, u64, u64, u64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*), count(DISTINCT r.seq), coalesce(min(r.seq), 0), coalesce(max(r.seq), 0)
         FROM reading r JOIN site s ON s.id = r.site_id WHERE s.name = ?1",
        [site],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        },
    )
    .unwrap()
}

fn embedded(port: u16) -> String {
    format!("listen = \"127.0.0.1:{port}\"\nusername = \"central\"\npassword = \"pw-central\"")
}

#[test]
fn a_site_enrolled_on_a_running_hub_with_the_embedded_broker_is_acked_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (broker_port, web_port) = (free_port(), free_port());
    let config = write_central(d, &embedded(broker_port), web_port);
    let hub = Hub::start(d, &config, web_port);
    assert!(hub.site("domus-9").is_none());

    let (bundle, said) = add_site(d, &config, "domus-9", &[]);
    assert!(said.contains("without a restart"), "{said}");
    assert_bundle(
        &bundle,
        "domus-9",
        &format!("mqtt://127.0.0.1:{broker_port}"),
    );
    check_ok(&bundle.join("site.toml"), d);
    check_ok(&config, d);
    let entry = hub_entry(d, "domus-9");
    assert_eq!(entry["substation"].as_str(), Some("S1"));
    let key = std::fs::read_to_string(bundle.join("domus-9.key")).unwrap();
    assert_eq!(
        entry["key"].as_str(),
        Some(key.trim()),
        "the same key on both sides"
    );

    // Picked up without a restart: listed, and its agent, started from the bundle, acked.
    assert!(
        wait_for(WITHIN, || hub.site("domus-9").is_some()),
        "the hub never listed the new site:\n{}",
        hub.log()
    );
    let agent_web = free_port();
    let (site_toml, _storage) = fit_bundle(&bundle, agent_web);
    check_ok(&site_toml, d);
    let agent_log = d.join("agent.log");
    let mut agent = Agent::start(&site_toml, agent_web, &agent_log);
    assert!(
        wait_for(WITHIN, || hub.acked("domus-9") >= 20
            && outbox(&agent, "acked") >= 20),
        "readings of the enrolled site not acked: hub {} site {}\nhub:\n{}\nagent:\n{}",
        hub.acked("domus-9"),
        outbox(&agent, "acked"),
        hub.log(),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    assert!(hub.log().contains("site domus-9 added"), "{}", hub.log());

    // Removed: the hub stops listing it and refuses its messages; the store keeps them.
    let o = socer(
        &[
            "central",
            "remove-site",
            "domus-9",
            "--config",
            config.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is kept"),
        "{}",
        text(&o)
    );
    assert!(!d.join("sites.d/domus-9.toml").exists());
    assert!(
        wait_for(WITHIN, || hub.site("domus-9").is_none()),
        "the hub still lists the removed site:\n{}",
        hub.log()
    );
    // Still connected (the embedded broker does not drop a live session), its batches are now
    // refused as from an unknown site.
    assert!(
        wait_for(WITHIN, || {
            hub.sites()["rejected_unknown_sites"]["unknown_site"]
                .as_u64()
                .unwrap_or(0)
                > 0
        }),
        "no batch of the removed site refused: {}",
        hub.sites()
    );
    // And it cannot log in again.
    agent.kill9();
    let mut agent = Agent::start(&site_toml, agent_web, &agent_log);
    assert!(
        wait_for(WITHIN, || hub
            .log()
            .lines()
            .any(|l| l.contains("login refused") && l.contains("domus-9"))),
        "the removed site's login was not refused:\n{}",
        hub.log()
    );
    agent.kill9();
    let db = d.join("central.db");
    let (rows, ..) = stored(&db, "domus-9");
    assert!(rows >= 20, "the removed site's readings are kept: {rows}");
}

#[test]
fn a_site_enrolled_with_an_external_mosquitto_is_acked() {
    require_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (broker_port, web_port) = (free_port(), free_port());
    let config = write_central(
        d,
        &format!(
            "url = \"mqtt://127.0.0.1:{broker_port}\"\nusername = \"central\"\npassword = \"pw-central\""
        ),
        web_port,
    );
    // The operator's first set of files, where add-site refreshes them (`mosquitto/` beside the
    // config), and Mosquitto started with them.
    let files = d.join("mosquitto");
    let o = socer(
        &[
            "central",
            "--config",
            config.to_str().unwrap(),
            "--mosquitto-files",
            files.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mosquitto = start_generated_mosquitto(d, &files, broker_port);
    let hub = Hub::start(d, &config, web_port);
    assert!(
        wait_for(WITHIN, || hub.log().contains("hub connected to the broker")),
        "{}",
        hub.log()
    );

    let (bundle, said) = add_site(d, &config, "domus-9", &[]);
    assert!(said.contains("Mosquitto files refreshed"), "{said}");
    let passwd = std::fs::read_to_string(files.join("passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("domus-9:$7$")),
        "{passwd}"
    );
    let acl = std::fs::read_to_string(files.join("acl")).unwrap();
    assert!(acl.contains("user domus-9\n"), "{acl}");
    // Mosquitto reads its password file and ACL again on SIGHUP.
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(mosquitto.0.id() as i32, libc::SIGHUP) };

    assert_bundle(
        &bundle,
        "domus-9",
        &format!("mqtt://127.0.0.1:{broker_port}"),
    );
    check_ok(&bundle.join("site.toml"), d);
    let agent_web = free_port();
    let (site_toml, _storage) = fit_bundle(&bundle, agent_web);
    let agent_log = d.join("agent.log");
    let agent = Agent::start(&site_toml, agent_web, &agent_log);
    assert!(
        wait_for(WITHIN, || hub.acked("domus-9") >= 20 && outbox(&agent, "acked") >= 20),
        "readings of the enrolled site not acked through Mosquitto: hub {} site {}\nhub:\n{}\nagent:\n{}\nmosquitto:\n{}",
        hub.acked("domus-9"),
        outbox(&agent, "acked"),
        hub.log(),
        std::fs::read_to_string(&agent_log).unwrap_or_default(),
        std::fs::read_to_string(mosquitto_log(d, broker_port)).unwrap_or_default()
    );
}

#[test]
fn a_key_rotation_loses_and_doubles_no_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (broker_port, web_port) = (free_port(), free_port());
    let config = write_central(d, &embedded(broker_port), web_port);
    let hub = Hub::start(d, &config, web_port);
    let (bundle, _) = add_site(d, &config, "domus-9", &[]);
    assert!(
        wait_for(WITHIN, || hub.site("domus-9").is_some()),
        "the hub never listed the new site:\n{}",
        hub.log()
    );
    let agent_web = free_port();
    let (site_toml, storage) = fit_bundle(&bundle, agent_web);
    let agent_log = d.join("agent.log");
    let mut agent = Agent::start(&site_toml, agent_web, &agent_log);
    assert!(
        wait_for(WITHIN, || outbox(&agent, "acked") >= 10),
        "not acked before the rotation:\n{}\n{}",
        hub.log(),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    let old_key = hub_entry(d, "domus-9")["key"].as_str().unwrap().to_string();

    // The hub rotates; the site still runs its old key and is still acknowledged.
    let new_dir = d.join("new-key");
    let o = socer(
        &[
            "central",
            "rotate-key",
            "domus-9",
            "--config",
            config.to_str().unwrap(),
            "--out",
            new_dir.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let entry = hub_entry(d, "domus-9");
    assert_eq!(entry["previous_key"].as_str(), Some(old_key.as_str()));
    let new_key = std::fs::read_to_string(new_dir.join("domus-9.key")).unwrap();
    assert_eq!(entry["key"].as_str(), Some(new_key.trim()));
    assert_ne!(new_key.trim(), old_key);
    check_ok(&config, d);
    assert!(
        wait_for(WITHIN, || hub.log().contains("key rotation started")),
        "{}",
        hub.log()
    );
    let at_rotation = outbox(&agent, "acked");
    assert!(
        wait_for(WITHIN, || outbox(&agent, "acked") >= at_rotation + 10),
        "the site on its old key is no longer acked during the rotation:\n{}",
        hub.log()
    );
    // A second rotation before the first is finished is refused.
    let again = socer(
        &[
            "central",
            "rotate-key",
            "domus-9",
            "--config",
            config.to_str().unwrap(),
            "--out",
            d.join("x").to_str().unwrap(),
        ],
        d,
    );
    assert!(!again.status.success(), "{}", text(&again));

    // The site dies with readings unacknowledged, gets its new key, starts again.
    let seen_last = outbox(&agent, "last_seq");
    agent.kill9();
    let (held, _) = outbox_rows(&storage);
    let last_before = held.last().copied().unwrap_or(0).max(seen_last);
    std::fs::copy(new_dir.join("domus-9.key"), bundle.join("domus-9.key")).unwrap();
    let agent = Agent::start(&site_toml, agent_web, &agent_log);
    assert!(
        wait_for(WITHIN, || outbox(&agent, "acked") >= last_before + 10),
        "readings not acked under the new key (held up to {last_before}):\nhub:\n{}\nagent:\n{}",
        hub.log(),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    assert!(
        hub.log().contains("site domus-9 now uses its new key"),
        "{}",
        hub.log()
    );

    // Nothing lost, nothing doubled: the hub holds every seq from 1 to its ack exactly once.
    let contiguous = hub.acked("domus-9");
    let (rows, distinct, lowest, highest) = stored(&d.join("central.db"), "domus-9");
    assert_eq!(lowest, 1);
    assert_eq!(rows, distinct, "a seq stored twice");
    assert!(highest >= last_before + 10 && contiguous >= last_before + 10);
    // Every stored seq up to the highest, with no gap: (rows of seq ≤ contiguous) = contiguous.
    let c = rusqlite::Connection::open(d.join("central.db")).unwrap();
    let upto: i64 = c
        .query_row(
            "SELECT count(*) FROM reading r JOIN site s ON s.id = r.site_id WHERE s.name = 'domus-9' AND r.seq <= ?1",
            [contiguous as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(upto as u64, contiguous, "a gap below the ack");

    // Finishing the rotation drops the old key.
    let o = socer(
        &[
            "central",
            "rotate-key",
            "domus-9",
            "--finish",
            "--config",
            config.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(hub_entry(d, "domus-9").get("previous_key").is_none());
    check_ok(&config, d);
}

#[test]
fn hostile_ids_names_and_substations_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_central(d, &embedded(free_port()), free_port());
    let c = config.to_str().unwrap();
    let long = "a".repeat(65);
    let refused = |args: &[&str], why: &str| {
        let out = d.join("bundle");
        let mut all = vec!["central", "add-site"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", c, "--out", out.to_str().unwrap()]);
        let o = socer(&all, d);
        assert!(!o.status.success(), "accepted {args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "{args:?}: expected {why:?} in {}",
            text(&o)
        );
        assert!(!out.exists(), "{args:?}: a bundle was written");
        let files = std::fs::read_dir(d.join("sites.d"))
            .map(|e| e.count())
            .unwrap_or(0);
        assert_eq!(files, 0, "{args:?}: a site file was written");
    };
    for id in [
        "", "Domus", "a/b", "a+b", "a#", "a.b", "a b", "../etc", "x\"y", "x\ny", "città", &long,
    ] {
        refused(&[id, "--name", "ok", "--substation", "S1"], "site id");
    }
    refused(
        &["central", "--name", "ok", "--substation", "S1"],
        "hub's own broker account",
    );
    refused(
        &["central-pub", "--name", "ok", "--substation", "S1"],
        "hub's own broker account",
    );
    refused(
        &["domus-1", "--name", "ok", "--substation", "S1"],
        "already enrolled",
    );
    for name in [
        "",
        "two\nlines",
        "x\"\n[[site]]\nid = \"evil",
        "nul\u{1}",
        "rtl\u{202e}",
    ] {
        refused(&["domus-9", "--name", name, "--substation", "S1"], "--name");
    }
    refused(
        &["domus-9", "--name", "ok", "--substation", "S9"],
        "not a [[substation]]",
    );
    refused(
        &["domus-9", "--name", "ok", "--substation", "S1\"\nx"],
        "not a [[substation]]",
    );

    // A duplicate across the main file and sites.d, or a file named after another site, is a
    // config error naming both files.
    add_site(d, &config, "domus-9", &[]);
    let sites_d = d.join("sites.d");
    let copy = std::fs::read_to_string(sites_d.join("domus-9.toml"))
        .unwrap()
        .replace("id = \"domus-9\"", "id = \"domus-1\"");
    std::fs::write(sites_d.join("domus-1.toml"), &copy).unwrap();
    let o = socer(&["check", c], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("domus-1.toml") && err.contains("central.toml:"),
        "{err}"
    );
    std::fs::remove_file(sites_d.join("domus-1.toml")).unwrap();
    std::fs::write(
        sites_d.join("other.toml"),
        copy.replace("domus-1", "domus-8"),
    )
    .unwrap();
    let o = socer(&["check", c], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("other.toml"), "{}", text(&o));
    std::fs::remove_file(sites_d.join("other.toml")).unwrap();
    check_ok(&config, d);

    // remove-site and rotate-key touch only sites.d entries.
    for cmd in ["remove-site", "rotate-key"] {
        let o = socer(&["central", cmd, "domus-1", "--config", c], d);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not a sites.d file"),
            "{}",
            text(&o)
        );
    }
}
