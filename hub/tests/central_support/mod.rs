//! Shared helpers of the central hub's integration tests: a config on free ports, sealed batches
//! and a bare HTTP GET; the generic plumbing (ports, waits, Mosquitto) is in `common`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use socer::central::store::Incoming;
use socer::wire::{self, Batch, Topics, WireReading};
use socer_drivers::reading::{Quality, Values};

pub const KEY_DOMUS: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub const KEY_IPERAL: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
pub const PW_DOMUS: &str = "pw-domus-1";
pub const TOKEN: &str = "report-token-123";

pub fn key(hex_key: &str) -> Vec<u8> {
    hex::decode(hex_key).unwrap()
}

/// Grid readings of `site` every 15 minutes from `from`, `quarters` quarter-hours long, numbered
/// from `first_seq`; the counter starts at `start_wh` and rises `wh_per_h`, on the export
/// register when `export`, else on the import one.
pub fn grid_readings(
    site: &str,
    first_seq: u64,
    start_wh: f64,
    from: DateTime<Utc>,
    quarters: u32,
    export: bool,
    wh_per_h: f64,
) -> Incoming {
    let readings = (0..=quarters)
        .map(|i| {
            let e = start_wh + wh_per_h * f64::from(i) / 4.0;
            let (imp, exp) = if export { (0.0, e) } else { (e, 0.0) };
            let ts = from + chrono::Duration::minutes(15 * i64::from(i));
            reading(first_seq + u64::from(i), "grid", ts, 0.0, imp, exp)
        })
        .collect();
    Incoming {
        site: site.into(),
        readings,
        received: Instant::now(),
        dropped_through: None,
        unacked_from: None,
    }
}

/// A two-site, two-substation community. `broker` is the `[broker]` table body.
pub fn config_text(dir: &Path, broker: &str) -> String {
    format!(
        r#"[central]
community = "socer"
name = "So.CER test"
latitude = 46.17
longitude = 9.87

[broker]
{broker}

[web]
listen = "127.0.0.1:0"
report_token = "{TOKEN}"

[storage]
path = "{db}"

[prices]
zonal_eur_mwh = 100.0

[[substation]]
id = "S1"
name = "Nord"

[[substation]]
id = "S2"
name = "Sud"

[[site]]
id = "domus-1"
key = "{KEY_DOMUS}"
password = "{PW_DOMUS}"
members = ["domus"]

[[site]]
id = "iperal"
key = "{KEY_IPERAL}"
password = "pw-iperal"
members = ["iperal"]

[[member]]
id = "domus"
kind = "household"
pod = "P-DOMUS"
substation = "S1"
site = "domus-1"

[[member]]
id = "iperal"
kind = "business"
pod = "P-IPERAL"
substation = "S1"
site = "iperal"

[[plant]]
id = "pv-iperal"
pod = "P-IPERAL"
peak_kw = 100.0
commissioned = "2025-01-01"

[[meter]]
site = "domus-1"
name = "grid"
pod = "P-DOMUS"
role = "grid"

[[meter]]
site = "iperal"
name = "grid"
pod = "P-IPERAL"
role = "grid"
"#,
        db = dir.join("central.db").display()
    )
}

pub fn reading(
    seq: u64,
    meter: &str,
    ts: DateTime<Utc>,
    p_w: f64,
    imp: f64,
    exp: f64,
) -> WireReading {
    WireReading {
        seq,
        meter: meter.into(),
        ts,
        values: Values {
            p_w: Some(p_w),
            e_imp_wh: Some(imp),
            e_exp_wh: Some(exp),
            ..Values::default()
        },
        quality: Quality::Good,
        missing: vec![],
        retimed: false,
        energy_integrated: false,
    }
}

/// A sealed batch of `seqs` for `site` (one grid reading each, a second apart, ending now).
pub fn sealed(site: &str, key_hex: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let now = Utc::now();
    let n = seqs.clone().count() as i64;
    let readings = seqs
        .enumerate()
        .map(|(i, s)| {
            let ts = now - chrono::Duration::seconds(n - i as i64);
            reading(s, "grid", ts, 500.0, 1000.0 + s as f64, 0.0)
        })
        .collect();
    let batch = Batch {
        site: site.into(),
        sent: now,
        readings,
        dropped_through: None,
        unacked_from: None,
    };
    let topics = Topics::new("socer");
    wire::seal(&key(key_hex), site, &topics.readings(site), &batch)
}

/// GET a path; returns (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    // The demo's parser: status, and the body with chunked transfer encoding undone.
    socer::demo::http::parse(&raw).unwrap_or((0, String::new()))
}

pub fn json_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of one Prometheus sample line (`name{labels}`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn site<'a>(sites: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}
