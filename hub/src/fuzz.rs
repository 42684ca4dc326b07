//! Fuzz targets: what a hostile peer or a broken file can hand the hub's daemons and commands,
//! as functions of bytes.
//!
//! Each target feeds arbitrary bytes to one entry point that meets untrusted input (an MQTT
//! message, a config, a price file, a scenario) and checks the invariants that must hold whatever
//! the input. `tests/fuzz_targets.rs` runs them briefly in CI; `fuzz/` runs them
//! coverage-guided for long (`tools/fuzz`, figures in BENCHMARKS.md). A panic is a bug.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::central::tariff;
use crate::check;
use crate::demo::scenario::Scenario;
use crate::http::query;
use crate::wire::{self, Ack, Batch, SiteSummary, Status, Topics};

const KEY: &[u8] = b"fuzz-site-key-0123456789abcdef";

/// An MQTT payload on every site topic: refused or opened, never a panic; what opens re-seals to
/// something that opens to the same value.
pub fn wire_message(data: &[u8]) {
    let t = Topics::new("socer");
    let Ok(env) = wire::open_unverified(data) else {
        return;
    };
    let site = env.site.clone();
    let _ = wire::open::<Status>(KEY, &site, &t.status(&site), &env);
    let _ = wire::open::<Ack>(KEY, &site, &t.ack(&site), &env);
    let _ = wire::open::<SiteSummary>(KEY, &site, &t.summary(&site), &env);
    if let Ok(batch) = wire::open::<Batch>(KEY, &site, &t.readings(&site), &env) {
        let again = wire::seal(KEY, &site, &t.readings(&site), &batch);
        let reopened = wire::open_unverified(&again)
            .and_then(|e| wire::open::<Batch>(KEY, &site, &t.readings(&site), &e));
        assert!(reopened.is_ok(), "a re-sealed batch must open");
    }
}

/// Any JSON sealed with the right key: the payload decoders alone meet the structure.
pub fn wire_body(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let t = Topics::new("socer");
    for (topic, kind) in [
        (t.readings("s"), 0),
        (t.ack("s"), 1),
        (t.status("s"), 2),
        (t.summary("s"), 3),
    ] {
        let sealed = wire::seal(KEY, "s", &topic, &value);
        let Ok(env) = wire::open_unverified(&sealed) else {
            continue;
        };
        match kind {
            0 => drop(wire::open::<Batch>(KEY, "s", &topic, &env)),
            1 => drop(wire::open::<Ack>(KEY, "s", &topic, &env)),
            2 => drop(wire::open::<Status>(KEY, "s", &topic, &env)),
            _ => drop(wire::open::<SiteSummary>(KEY, "s", &topic, &env)),
        }
    }
}

/// A file given to `socer check` (config, profile, scenario or price file, told apart by its
/// contents and name): every input gives `ok` or `FILE:LINE:COL: message` lines.
pub fn config_file(data: &[u8]) {
    for name in ["/etc/socer/fuzz.toml", "/etc/socer/fuzz.csv"] {
        let path = Path::new(name);
        let found = check::check_bytes(path, data);
        let out = check::render(path, &found);
        for line in out.lines() {
            let rest = line.strip_prefix(name).unwrap_or_else(|| panic!("{line}"));
            let mut parts = rest.splitn(4, ':');
            assert_eq!(parts.next(), Some(""), "{line}");
            let l = parts.next().and_then(|n| n.parse::<usize>().ok());
            let c = parts.next().and_then(|n| n.parse::<usize>().ok());
            assert!(
                l.is_some_and(|l| l >= 1) && c.is_some_and(|c| c >= 1),
                "{line}"
            );
        }
    }
}

/// A query string of the hub's energy, incentive and report endpoints and of the site's history:
/// refused with a named parameter, or a window within every stated limit.
pub fn http_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let now = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap_or_default();
    let rules = [
        crate::central::web::energy_rule(3600),
        crate::central::web::energy_rule(900),
        crate::site::web::history_rule(),
    ];
    if let Ok(params) = query::Params::parse(&raw) {
        for rule in &rules {
            if let Ok(w) = query::parse_window(&params, rule, &chrono_tz::Europe::Rome, now) {
                assert!(w.from < w.to);
                assert!((w.to - w.from).num_seconds() <= rule.max_span_s);
                assert!(w.points >= 1 && w.points <= rule.max_points, "{w:?}");
                if let query::Step::Seconds(s) = w.step {
                    assert!(s >= rule.step.min_s && s <= rule.step.max_s);
                }
            }
        }
    }
    let _ = crate::central::web::incentive_query(&raw);
    let _ = crate::central::web::report_file(&raw);
}

const SITE_EXAMPLE: &str = include_str!("../../config/site.example.toml");
const CENTRAL_EXAMPLE: &str = include_str!("../../config/central.example.toml");

/// The example configs with one `key = value` line's value replaced by the fuzz bytes: the first
/// byte picks the site or the central example, the second the line. Every key meets huge,
/// negative, fractional, mistyped and garbage values ([`config_value_at`] sweeps all of them).
pub fn config_values(data: &[u8]) {
    let [pick, line, rest @ ..] = data else {
        return;
    };
    let value = String::from_utf8_lossy(rest);
    let example = if pick & 1 == 0 {
        SITE_EXAMPLE
    } else {
        CENTRAL_EXAMPLE
    };
    let lines = assignment_lines(example);
    if let Some(&target) = lines.get(usize::from(*line) % lines.len().max(1)) {
        config_value_at(example, target, &value);
    }
    let _ = crate::site::config::parse_duration(&value);
    let _ = crate::site::config::parse_size(&value);
    let _ = crate::site::config::parse_mqtt_url(&value);
}

/// The line numbers (0-based) of the `key = value` lines of an example config.
pub fn assignment_lines(example: &str) -> Vec<usize> {
    example
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" = "))
        .map(|(i, _)| i)
        .collect()
}

/// Check `example` with the value of line `target` replaced by `value`.
pub fn config_value_at(example: &str, target: usize, value: &str) {
    let value = value.replace(['\n', '\r'], " ");
    let mut text = String::with_capacity(example.len() + value.len());
    for (i, l) in example.lines().enumerate() {
        match (i == target, l.split_once(" = ")) {
            (true, Some((key, _))) => {
                text.push_str(key);
                text.push_str(" = ");
                text.push_str(&value);
            }
            _ => text.push_str(l),
        }
        text.push('\n');
    }
    config_file(text.as_bytes());
}

/// The example configs (site, central), for sweeps.
pub const EXAMPLES: [&str; 2] = [SITE_EXAMPLE, CENTRAL_EXAMPLE];

/// A zonal price file.
pub fn price_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(prices) = tariff::parse_price_csv(&text) {
        let t = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap_or_default();
        let _ = format!("{prices:?}{t}");
    }
}

/// A demo scenario file.
pub fn scenario_file(data: &[u8]) {
    let _ = Scenario::parse(&String::from_utf8_lossy(data));
}

/// A device's message on the building's broker (`site::mqtt_devices::parse`): the first byte
/// picks the format and the topic, the rest is the payload.
pub fn device_payload(data: &[u8]) {
    use crate::site::mqtt_devices::{parse, Format};
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let (format, topic) = match pick % 6 {
        0 => (Format::ShellyGen2, "d/events/rpc"),
        1 => (Format::ShellyGen2, "d/status/em:0"),
        2 => (Format::ShellyGen2, "d/status/emdata:0"),
        3 => (Format::ShellyGen2, "d/status/em1:0"),
        4 => (Format::ShellyGen2, "d/status/em1data:0"),
        _ => (Format::Tasmota, "tele/d/SENSOR"),
    };
    if let Ok(Some(mut v)) = parse(format, "d", topic, payload) {
        let _ = crate::site::mqtt_devices::screen(&mut v);
    }
}

/// A fuzz target: its name and the function that takes the fuzzer's bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name (for the harness and the tests).
pub const TARGETS: &[Target] = &[
    ("wire_message", wire_message),
    ("wire_body", wire_body),
    ("config_file", config_file),
    ("http_query", http_query),
    ("config_values", config_values),
    ("price_file", price_file),
    ("scenario_file", scenario_file),
    ("device_payload", device_payload),
];
