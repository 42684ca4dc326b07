//! Both daemons' `/metrics` as Prometheus reads them: a site agent polling a simulated Modbus TCP
//! meter, uplinked to a hub (embedded broker) that acknowledges its readings; each exposition is
//! linted by `promtool check metrics` and parsed here (HELP and TYPE on every family, counters
//! `_total`, build info, the TCP read latency non-zero in seconds).

mod central_support;
mod common;
mod site_common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use central_support::{http_get, json_get, site};
use common::{free_port, start_central, wait_port, wait_until, Reaped};
use site_common::{Agent, SiteSpec, COMMUNITY, KEY, SITE};

const PW_SITE: &str = "pw-site-t1";

fn central_toml(dir: &Path, broker: u16) -> std::path::PathBuf {
    let text = format!(
        r#"[central]
community = "{COMMUNITY}"
name = "metrics test"
latitude = 46.17
longitude = 9.87

[broker]
listen = "127.0.0.1:{broker}"

[web]
listen = "127.0.0.1:0"

[storage]
path = "{db}"

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
        db = dir.join("central.db").display()
    );
    let path = dir.join("central.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The test site with one meter on a Modbus TCP bus at `meter`, logging in to the embedded broker.
fn site_toml(dir: &Path, broker: u16, meter: u16) -> (std::path::PathBuf, u16) {
    let mut spec = SiteSpec::new(dir, broker);
    spec.meters = 1;
    spec.interval = "200ms";
    let path = spec.write(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let plain_url = format!("url = \"mqtt://127.0.0.1:{broker}\"");
    let sim_bus = "simulated = true\ndead_units = []\ntimeout_ms = 200\n";
    assert!(
        text.contains(&plain_url) && text.contains(sim_bus),
        "{text}"
    );
    let text = text
        .replace(
            &plain_url,
            &format!("{plain_url}\nusername = \"{SITE}\"\npassword = \"{PW_SITE}\""),
        )
        .replace(
            sim_bus,
            &format!("tcp = \"127.0.0.1:{meter}\"\ntimeout_ms = 1000\n"),
        );
    std::fs::write(&path, text).unwrap();
    (path, spec.web_port)
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed (and this is not CI,
/// where its absence fails the test), else its verdict and output.
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let on_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !on_ci,
                "promtool is not installed (CI=true): run tools/install-test-deps"
            );
            eprintln!(
                "\n*** SKIPPED the promtool lint: promtool is not installed \
                 (apt-get install prometheus, or tools/install-test-deps) ***\n"
            );
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success() && said.trim().is_empty(), said))
}

/// One family of an exposition: its HELP, TYPE and samples (`name{labels}` → value).
#[derive(Default, Debug)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<(String, f64)>,
}

/// Parse Prometheus text 0.0.4 into families, failing on any line that is not a comment, a blank
/// or `series value`, and on a sample outside the family announced before it.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            current = name.to_string();
            fams.entry(current.clone()).or_default().help = Some(help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert_eq!(name, current, "TYPE after the HELP of another family");
            fams.entry(current.clone()).or_default().kind = Some(kind.to_string());
        } else if line.starts_with('#') {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let name = series.split('{').next().unwrap_or(series);
            let kind = fams
                .get(&current)
                .and_then(|f| f.kind.clone())
                .unwrap_or_default();
            let own = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(current.as_str()))
            } else {
                name == current
            };
            assert!(own, "{name} outside its family ({current})");
            fams.entry(current.clone())
                .or_default()
                .samples
                .push((series.to_string(), value));
        }
    }
    fams
}

/// The conventions on every family: HELP, TYPE, counters `_total`, no counter named `_sum`, no
/// unit other than seconds and bytes in a name; and build info for `daemon`.
fn assert_conventions(fams: &BTreeMap<String, Family>, daemon: &str, text: &str) {
    for (name, f) in fams {
        assert!(
            f.help.as_ref().is_some_and(|h| !h.is_empty()),
            "{name}: no HELP"
        );
        let kind = f
            .kind
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no TYPE"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} not _total");
        }
        assert!(!name.ends_with("_sum") || kind == "histogram", "{name}");
        for unit in ["_ms", "_us", "_millis", "_kb", "_mb", "_percent"] {
            assert!(!name.contains(unit), "{name}: not a base unit");
        }
    }
    let info = &fams["socer_build_info"];
    assert_eq!(info.kind.as_deref(), Some("gauge"));
    assert_eq!(info.samples.len(), 1, "{text}");
    let (series, value) = &info.samples[0];
    assert_eq!(*value, 1.0);
    assert!(
        series.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && series.contains(&format!("daemon=\"{daemon}\"")),
        "{series}"
    );
}

fn value(f: &Family, series: &str) -> f64 {
    f.samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} in {:?}", f.samples))
}

#[test]
fn both_daemons_metrics_pass_promtool_and_carry_the_tcp_read_latency_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port();
    let cfg = socer::central::config::load(&central_toml(dir.path(), broker)).unwrap();
    let (_rt, hub) = start_central(cfg);

    let meter = free_port();
    let _sim = Reaped(
        Command::new(env!("CARGO_BIN_EXE_socer"))
            .args([
                "simulate",
                "--model",
                "eastron-sdm630",
                "--unit",
                "1",
                "--tcp",
            ])
            .arg(format!("127.0.0.1:{meter}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socer simulate"),
    );
    assert!(
        wait_port(meter, Duration::from_secs(20)),
        "simulated meter never listened"
    );

    let site_dir = dir.path().join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let (site_cfg, web_port) = site_toml(&site_dir, broker, meter);
    let log = dir.path().join("site.log");
    let agent = Agent::start(&site_cfg, web_port, &log);
    agent.wait_web();

    let acked = || {
        site(&json_get(hub.web_addr, "/api/v1/sites"), SITE)["acked_seq"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_until(60, || acked() >= 5),
        "the hub acknowledged nothing; site log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let site_text = agent.get("/metrics").expect("site /metrics");
    let (status, hub_text) = http_get(hub.web_addr, "/metrics", None);
    assert_eq!(status, 200);

    // promtool first: it is the judge the issue names.
    for (daemon, text) in [("site", &site_text), ("central", &hub_text)] {
        if let Some((clean, said)) = promtool(text) {
            assert!(
                clean,
                "promtool check metrics on the {daemon}:\n{said}\n{text}"
            );
        }
    }

    let s = parse(&site_text);
    assert_conventions(&s, "site", &site_text);
    let m1 = format!("{{site=\"{SITE}\",meter=\"m1\"}}");
    let hist = &s["socer_meter_read_latency_seconds"];
    assert_eq!(hist.kind.as_deref(), Some("histogram"));
    let count = value(hist, &format!("socer_meter_read_latency_seconds_count{m1}"));
    let sum = value(hist, &format!("socer_meter_read_latency_seconds_sum{m1}"));
    assert!(count >= 5.0, "{count} polls observed");
    assert!(
        sum > 0.0 && sum / count < 1.0,
        "a TCP poll takes more than nothing and less than its timeout: {sum} s over {count}"
    );
    let inf = value(
        hist,
        &format!(
            "socer_meter_read_latency_seconds_bucket{{site=\"{SITE}\",meter=\"m1\",le=\"+Inf\"}}"
        ),
    );
    assert_eq!(inf, count);
    let last = value(
        &s["socer_meter_read_last_latency_seconds"],
        &format!("socer_meter_read_last_latency_seconds{m1}"),
    );
    assert!(last > 0.0 && last < 1.0, "last poll {last} s");
    let ok = value(
        &s["socer_meter_reads_total"],
        &format!("socer_meter_reads_total{{site=\"{SITE}\",meter=\"m1\",result=\"ok\"}}"),
    );
    assert!(ok >= 5.0, "{site_text}");
    // The bus's line: at least one request per good poll, none timed out, wire and busy time
    // counted (on TCP the wire time is a nominal round trip, not a bound on the busy time).
    let bus = format!("{{site=\"{SITE}\",bus=\"sim\"}}");
    let requests = value(
        &s["socer_bus_requests_total"],
        &format!("socer_bus_requests_total{bus}"),
    );
    assert!(
        requests >= ok,
        "{requests} requests for {ok} good polls\n{site_text}"
    );
    assert_eq!(
        value(
            &s["socer_bus_timeouts_total"],
            &format!("socer_bus_timeouts_total{bus}")
        ),
        0.0
    );
    let wire = value(
        &s["socer_bus_wire_seconds_total"],
        &format!("socer_bus_wire_seconds_total{bus}"),
    );
    let busy = value(
        &s["socer_bus_busy_seconds_total"],
        &format!("socer_bus_busy_seconds_total{bus}"),
    );
    assert!(wire > 0.0 && busy > 0.0, "wire {wire} s, busy {busy} s");
    assert_eq!(
        value(
            &s["socer_uplink_connected"],
            &format!("socer_uplink_connected{{site=\"{SITE}\"}}")
        ),
        1.0
    );
    assert!(s.contains_key("socer_http_connections_accepted_total"));

    let h = parse(&hub_text);
    assert_conventions(&h, "central", &hub_text);
    assert!(
        value(
            &h["socer_readings_stored_total"],
            "socer_readings_stored_total"
        ) >= 5.0
    );
    let commits = &h["socer_store_commit_seconds"];
    assert_eq!(commits.kind.as_deref(), Some("histogram"));
    assert!(value(commits, "socer_store_commit_seconds_count") >= 1.0);
    assert!(value(commits, "socer_store_commit_seconds_sum") > 0.0);
    assert_eq!(
        value(
            &h["socer_site_online"],
            &format!("socer_site_online{{site=\"{SITE}\"}}")
        ),
        1.0
    );
    assert!(h.contains_key("socer_http_connections_open"));
}
